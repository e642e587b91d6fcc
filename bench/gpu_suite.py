"""One command for a GPU box: the GPU tests, the whole suite on cupy and torch-cuda, and
every benchmark with TF32 off and on, in under 8 minutes, into one JSON and one Markdown.

    bench/gpu_suite.sh                  # or: python3 bench/gpu_suite.py
    bench/gpu_suite.sh --dry-run        # lists what it would run; checks that it all exists

It installs nothing from a network. What the device image lacks (array-api-compat, which
xpnet needs; array-api-strict, a test backend) travels as wheels in ``--wheels`` (default
``.whl`` in the checkout, as the device notes carry them) and is installed from there
alone into a private folder put on ``PYTHONPATH``; xpnet itself runs from the checkout.

Each step has a time budget (``timeout_s``); they sum to under 8 minutes, and a step
starts only while the whole run has time left for it, so a slow step costs its own rows,
never the report. A benchmark that does not exist yet is a
``skipped`` line saying so, not a failure. Benchmarks write into a scratch folder; their
JSON payloads and Markdown tables are copied into the suite's two files, written under
``--out`` (default ``$OUT`` where set, else ``bench/results/``) as ``gpu_suite.json`` and
``gpu_suite.md``, with the device, driver, CUDA and library versions and the date.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 8 * 60  # the whole run, one H100/H200
SLACK_S = 20  # start-up, facts and writing the report


@dataclass
class Task:
    """One step: a command run from the checkout's root, within ``timeout_s``."""

    name: str
    argv: list[str]
    timeout_s: int
    kind: str  # "tests" or "bench"
    needs: list[str] = field(default_factory=list)  # paths (or path::test) that must exist
    optional: str | None = None  # a path whose absence makes this a skip, not an error
    env: dict = field(default_factory=dict)
    results: str | None = None  # the benchmark's results name (its JSON and .md)


def _pytest(*args: str, workers: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    if importlib.util.find_spec("pytest_timeout") is not None:  # one hung test, not the run
        argv.append("--timeout=120")
    if workers and importlib.util.find_spec("xdist") is not None:
        argv += ["-n", "8"]
    return argv + list(args)


def _bench(script: str, *args: str) -> list[str]:
    return [sys.executable, f"bench/{script}", "--reps", "5", *args]


GPU_TESTS = ["tests/test_graphs.py::test_cuda_graph_replay_equals_eager_on_torch_cuda",
             "tests/test_fast.py", "tests/test_parity.py", "tests/test_sklearn.py"]


def tasks(scratch: str) -> list[Task]:
    """Every step in order. ``scratch`` is where the benchmarks write their files."""
    out = ["--out", scratch]
    return [
        Task("pytest -m gpu", _pytest("-m", "gpu", "tests/", workers=False), 75, "tests",
             needs=GPU_TESTS),
        Task("whole suite, cupy and torch-cuda", _pytest("tests/"), 150, "tests",
             needs=["tests/conftest.py"], env={"XPNET_TEST_TORCH_DEVICE": "cuda"}),
        Task("train_step, TF32 off (CUDA-graph rows included)",
             _bench("train_step.py", "--backends", "torch:cuda,cupy", *out), 55, "bench",
             needs=["bench/train_step.py"], results="train_step"),
        Task("train_step, TF32 on", _bench("train_step.py", "--backends", "torch:cuda,cupy",
                                           "--tf32", *out), 55, "bench",
             needs=["bench/train_step.py"], results="train_step_tf32"),
        Task("fit_epoch (fit with and without CUDA graphs)",
             _bench("fit_epoch.py", "--backends", "numpy,torch:cuda,cupy", "--threads", "8",
                    *out), 45, "bench",
             needs=["bench/fit_epoch.py"], results="fit_epoch"),
        # the CPU capped so that its side of the crossover stays within the budget
        Task("scaling", _bench("scaling.py", "--backends", "numpy,torch:cuda,cupy", "--threads",
                               "8", "--cpu-max-width", "1024", "--cpu-max-batch", "1024",
                               "--no-plot", *out), 45, "bench", needs=["bench/scaling.py"],
             results="scaling"),
        Task("mixed bfloat16 (train_step --precision, beside torch autocast)",
             _bench("train_step.py", "--backends", "torch:cuda,cupy", "--shapes",
                    "large", "--precision", "mixed-bfloat16", *out), 15, "bench",
             needs=["bench/train_step.py"], results="train_step_mixed_bfloat16"),
        Task("mixed float16 (train_step --precision, beside torch autocast)",
             _bench("train_step.py", "--backends", "torch:cuda,cupy", "--shapes",
                    "large", "--precision", "mixed-float16", *out), 15, "bench",
             needs=["bench/train_step.py"], results="train_step_mixed_float16"),
    ]


# ------------------------------------------------------------------ checks


def missing(task: Task) -> list[str]:
    """What ``task`` names that does not exist: files, or tests inside a file."""
    found = []
    for item in task.needs:
        path, _, test = item.partition("::")
        if not (ROOT / path).exists():
            found.append(path)
        elif test and test not in _test_names(ROOT / path):
            found.append(item)
    return found


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def skip_reason(task: Task) -> str | None:
    if task.optional and not (ROOT / task.optional).exists():
        return f"{task.optional} does not exist yet (that feature has not landed)"
    return None


def budget_s(all_tasks: list[Task]) -> int:
    return sum(t.timeout_s for t in all_tasks) + SLACK_S


# ------------------------------------------------------------------ running


def carried_wheels(wheels: Path) -> tuple[dict, list[str]]:
    """Install the carried wheels (from that folder alone, never a network) into a private
    folder; the environment that puts it on the path, and what was installed."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")])),
           # JAX would otherwise take 75 % of the GPU in each test worker
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        return env, []
    target = Path(tempfile.mkdtemp(prefix="xpnet-site-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--target", str(target),
                    *map(str, found)], check=True, timeout=60)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    return env, [w.name for w in found]


def run_task(task: Task, env: dict, timeout_s: float) -> dict:
    started = time.monotonic()
    try:
        done = subprocess.run(task.argv, cwd=ROOT, env={**os.environ, **env, **task.env},
                              capture_output=True, text=True, timeout=timeout_s)
        status = "passed" if done.returncode == 0 else "failed"
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        status, code = "timeout", None
        output = _text(exc.stdout) + _text(exc.stderr)
    lines = output.strip().splitlines()
    return {"name": task.name, "command": " ".join(task.argv[1:]), "status": status,
            "returncode": code, "seconds": round(time.monotonic() - started, 1),
            "timeout_s": timeout_s, "summary": lines[-1] if lines else "",
            "tail": lines[-40:]}


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def attach_results(record: dict, task: Task, scratch: Path) -> None:
    """The benchmark's own JSON and Markdown, copied into the suite's report."""
    if task.results is None:
        return
    json_path, md_path = scratch / f"{task.results}.json", scratch / f"{task.results}.md"
    if json_path.exists():
        record["results"] = json.loads(json_path.read_text())
    if md_path.exists():
        record["markdown"] = md_path.read_text()


def facts(installed: list[str], env: dict) -> dict:
    """Device, driver, CUDA and library versions and the date, each read where it can be
    (a library that cannot be imported says why)."""
    probe = r"""
import json, platform
from importlib import metadata
out = {"python": platform.python_version()}
for name in ("numpy", "array-api-compat", "array-api-strict", "scipy", "scikit-learn", "jax",
             "jaxlib", "pytest-xdist"):  # versions without importing (jax takes seconds)
    try:
        out[name.replace("-", "_")] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name.replace("-", "_")] = "not installed"
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = p.name
        out["device_memory_gib"] = round(p.total_memory / 2**30, 1)
        out["compute_capability"] = f"{p.major}.{p.minor}"
except Exception as exc:
    out["torch"] = f"not importable: {exc}"
try:
    import cupy
    out["cupy"] = cupy.__version__
    out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    out["cuda_driver_api"] = cupy.cuda.runtime.driverGetVersion()
except Exception as exc:
    out["cupy"] = f"not importable: {exc}"
print(json.dumps(out))
"""
    found = {"date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "carried_wheels": installed}
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env})
        found.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # the report is written whatever fails here
        found["probe_error"] = str(exc)
    found["nvidia_smi"] = _nvidia_smi()
    try:
        found["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                             capture_output=True, text=True,
                                             timeout=10).stdout.strip()
    except Exception:
        found["git_commit"] = "unknown"
    return found


def _nvidia_smi() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                           "clocks.max.sm", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return (done.stdout or done.stderr).strip()


def to_markdown(report: dict) -> str:
    f = report["facts"]
    lines = ["# GPU suite", "",
             f"{f.get('date_utc')}, commit {f.get('git_commit', '')[:12]}: "
             f"{f.get('device', 'no CUDA device seen by torch')} "
             f"(nvidia-smi: {f.get('nvidia_smi')}); torch {f.get('torch')} "
             f"(CUDA {f.get('torch_cuda')}), cupy {f.get('cupy')} (runtime "
             f"{f.get('cuda_runtime')}), jax {f.get('jax')}, numpy {f.get('numpy')}, "
             f"array-api-compat {f.get('array_api_compat')}; "
             f"{report['seconds']:.0f} s in all.", "",
             "| step | status | seconds | summary |", "|---|---|---|---|"]
    for r in report["steps"]:
        summary = str(r.get("summary", "")).replace("|", "/")
        lines.append(f"| {r['name']} | {r['status']} | {r.get('seconds', '')} | {summary} |")
    for r in report["steps"]:
        if r["status"] in ("failed", "timeout"):
            lines += ["", f"## {r['name']}: {r['status']}", "", "```", *r["tail"], "```"]
    for r in report["steps"]:
        if r.get("markdown"):
            lines += ["", f"## {r['name']}", "", r["markdown"].strip()]
    return "\n".join(lines) + "\n"


def dry_run(all_tasks: list[Task]) -> int:
    problems = []
    for t in all_tasks:
        skip, gone = skip_reason(t), missing(t)
        state = "would skip: " + skip if skip else "MISSING " + ", ".join(gone) if gone else "ok"
        print(f"[{t.timeout_s:4d} s] {t.name}: {' '.join(t.argv[1:])}  -> {state}")
        problems += gone
    total = budget_s(all_tasks)
    print(f"budget: {total} s of {LIMIT_S} s (steps' time limits plus {SLACK_S} s)")
    if total > LIMIT_S:
        problems.append(f"the budget {total} s is over {LIMIT_S} s")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="list the steps and check that everything they name exists")
    parser.add_argument("--out", type=Path, default=None,
                        help="where gpu_suite.json and .md go (default $OUT, else "
                             "bench/results)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="carried wheels to install offline first (default .whl)")
    parser.add_argument("--only", default=None,
                        help="comma-separated words: run the steps whose name has one")
    args = parser.parse_args(argv)
    scratch = Path("SCRATCH") if args.dry_run else Path(tempfile.mkdtemp(prefix="xpnet-"))
    all_tasks = tasks(str(scratch))
    if args.only:
        words = args.only.split(",")
        all_tasks = [t for t in all_tasks if any(w in t.name for w in words)]
    if args.dry_run:
        return dry_run(all_tasks)
    return run(all_tasks, args.out or default_out(), args.wheels, scratch)


def run(all_tasks: list[Task], out: Path, wheels: Path, scratch: Path) -> int:
    started = time.monotonic()
    env, installed = carried_wheels(wheels)
    report = {"facts": facts(installed, env), "steps": [], "limit_s": LIMIT_S}
    for task in all_tasks:
        left = LIMIT_S - SLACK_S - (time.monotonic() - started)
        gone = missing(task)
        skip = skip_reason(task) or (f"missing: {', '.join(gone)}" if gone else None)
        if skip is None and left < 10:
            skip = f"no time left in the {LIMIT_S} s budget"
        if skip is not None:
            print(f"-- {task.name}: skipped ({skip})", flush=True)
            report["steps"].append({"name": task.name, "status": "skipped", "summary": skip})
            continue
        print(f"-- {task.name} (up to {min(task.timeout_s, left):.0f} s)", flush=True)
        record = run_task(task, env, min(task.timeout_s, left))
        attach_results(record, task, scratch)
        print(f"   {record['status']} in {record['seconds']} s: {record['summary']}",
              flush=True)
        report["steps"].append(record)
    report["seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_suite.md").write_text(to_markdown(report))
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} "
          f"({report['seconds']:.0f} s)")
    return 0 if all(r["status"] in ("passed", "skipped") for r in report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
