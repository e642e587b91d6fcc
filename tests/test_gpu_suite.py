"""The one-command GPU suite (``bench/gpu_suite.sh``) on a machine without a GPU: its dry
run lists every step and finds every script and test it names, its budget fits 8 minutes,
and its report is written even when steps fail, time out or are skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_suite", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_the_dry_run_lists_every_step_and_finds_what_they_name():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--dry-run"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert len(steps) == len(_suite().tasks("SCRATCH"))
    assert not any("MISSING" in line for line in steps)
    for expected in ("-m gpu", "whole suite",
                     "bench/train_step.py", "--tf32", "bench/fit_epoch.py",
                     "bench/scaling.py", "mixed bfloat16", "mixed float16"):
        assert any(expected in line for line in steps), expected
    budget = next(line for line in lines if line.startswith("budget:"))
    used, limit = [int(word) for word in budget.split() if word.isdigit()][:2]
    assert used <= limit == 480


def test_the_steps_cover_what_a_gpu_run_needs():
    suite = _suite()
    tasks = suite.tasks("SCRATCH")
    whole = next(t for t in tasks if "whole suite" in t.name)
    assert whole.env == {"XPNET_TEST_TORCH_DEVICE": "cuda"}
    gpu = next(t for t in tasks if t.name == "pytest -m gpu")
    assert "-m" in gpu.argv and "gpu" in gpu.argv
    assert any("test_cuda_graph_replay_equals_eager_on_torch_cuda" in n for n in gpu.needs)
    benches = [" ".join(t.argv) for t in tasks if t.kind == "bench"]
    for script in ("train_step.py", "fit_epoch.py", "scaling.py"):
        assert any(script in b and "--tf32" not in b for b in benches), script
    for precision in ("mixed-bfloat16", "mixed-float16"):
        assert any(f"--precision {precision}" in b for b in benches), precision
    assert any("train_step.py" in b and "--tf32" in b for b in benches)
    assert suite.budget_s(tasks) <= suite.LIMIT_S


def test_a_missing_script_or_test_fails_the_dry_run(capsys):
    suite = _suite()
    tasks = [suite.Task("gone", ["python", "bench/no_such.py"], 10, "bench",
                        needs=["bench/no_such.py"]),
             suite.Task("gone test", ["python"], 10, "tests",
                        needs=["tests/test_graphs.py::test_that_does_not_exist"])]
    assert suite.missing(tasks[0]) == ["bench/no_such.py"]
    assert suite.missing(tasks[1]) == ["tests/test_graphs.py::test_that_does_not_exist"]
    assert suite.dry_run(tasks) == 1
    assert "MISSING bench/no_such.py" in capsys.readouterr().out


def test_an_optional_benchmark_that_does_not_exist_is_a_skip_not_a_failure(capsys):
    suite = _suite()
    task = suite.Task("later", ["python", "bench/not_yet.py"], 10, "bench",
                      optional="bench/not_yet.py")
    assert suite.dry_run([task]) == 0
    assert "would skip: bench/not_yet.py does not exist yet" in capsys.readouterr().out


def test_the_report_is_written_whatever_each_step_does(tmp_path):
    suite = _suite()
    py = sys.executable
    tasks = [suite.Task("ok", [py, "-c", "print('fine')"], 20, "tests"),
             suite.Task("bad", [py, "-c", "import sys; print('broken'); sys.exit(3)"], 20,
                        "tests"),
             suite.Task("slow", [py, "-c", "import time; time.sleep(30)"], 1, "bench"),
             suite.Task("later", [py, "bench/not_yet.py"], 10, "bench",
                        optional="bench/not_yet.py")]
    code = suite.run(tasks, tmp_path, tmp_path / "no-wheels", tmp_path)
    assert code == 1
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status == {"ok": "passed", "bad": "failed", "slow": "timeout", "later": "skipped"}
    assert report["steps"][1]["returncode"] == 3 and "broken" in report["steps"][1]["summary"]
    for key in ("date_utc", "python", "numpy", "torch", "cupy", "nvidia_smi", "git_commit"):
        assert key in report["facts"], key
    md = (tmp_path / "gpu_suite.md").read_text()
    assert md.startswith("# GPU suite") and "| bad | failed |" in md and "broken" in md


def test_the_fixtures_run_torch_on_the_device_the_suite_names(monkeypatch):
    """XPNET_TEST_TORCH_DEVICE=cuda moves the fixtures' torch cases to the GPU (the suite's
    whole-suite step depends on it): here, with no GPU, they skip saying so."""
    torch = pytest.importorskip("torch")
    import conftest

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the torch cases would run on it")
    monkeypatch.setattr(conftest, "TORCH_DEVICE", "cuda")
    with pytest.raises(pytest.skip.Exception, match="torch sees no CUDA device"):
        conftest._backend_or_skip("torch")
    assert conftest._backend_or_skip("torch", "cpu").device.type == "cpu"
