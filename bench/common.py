"""Shared helpers for the benchmark scripts: interleaved timing, machine facts, output.

Every script times its variants interleaved (A B C A B C ...) in one process, so a noisy
neighbour slows all of them alike, synchronises the device before every clock read, and
reports medians and ratios. Results go to ``bench/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout without install
    sys.path.insert(0, str(ROOT))


@dataclass
class Variant:
    """One thing to time: ``step()`` runs one unit of work, ``sync()`` waits for the device."""

    name: str
    step: Callable[[], Any]
    sync: Callable[[], None] = lambda: None
    group: str = "cpu"  # variants are compared with peers of the same group (device)
    kind: str = "xpnet"  # xpnet | peer | hand | gemm | before (an earlier xpnet)
    info: dict = field(default_factory=dict)


_LIMITS: list = []  # keeps the threadpoolctl limiter alive for the whole run


def limit_threads(n: int = 1) -> dict:
    """The same thread count for every library: torch, the BLAS under NumPy and XLA.

    Default 1 on this shared 2-core box: two torch OpenMP threads stall (ARRAY_API_NOTES
    trap 13), and OpenBLAS or XLA threads spinning after one variant slow the next one.
    Must run before jax is imported. Returns what was set, for the results file.
    """
    if n == 1:  # XLA has no thread-count flag on the CPU, only this switch
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        _LIMITS.append(threadpool_limits(limits=n))
    except ImportError:
        pass
    return {"threads": n, "XLA_FLAGS": os.environ.get("XLA_FLAGS")}


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _calibrate(variant: Variant, target_s: float) -> int:
    """Inner repetitions so one timed sample of ``variant`` lasts about ``target_s``."""
    variant.sync()
    t0 = time.perf_counter()
    variant.step()
    variant.sync()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(10_000, int(target_s / one)))


def time_interleaved(variants: list[Variant], reps: int = 7, warmup: int = 3,
                     target_s: float = 0.02) -> dict[str, dict]:
    """Median seconds per step of each variant, sampled A B C A B C ... ``reps`` times.

    Each variant first runs ``warmup`` steps (compilation, allocator, caches), then is
    calibrated to ``target_s`` per sample so clock resolution never matters. The device is
    synchronised before each clock read.
    """
    for v in variants:
        for _ in range(warmup):
            v.step()
        v.sync()
    inner = {v.name: _calibrate(v, target_s) for v in variants}
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(reps):
        for v in variants:
            n = inner[v.name]
            v.sync()
            t0 = time.perf_counter()
            for _ in range(n):
                v.step()
            v.sync()
            samples[v.name].append((time.perf_counter() - t0) / n)
    return {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                   "reps": len(s), "inner": inner[name], "samples_s": s}
            for name, s in samples.items()}


def ratios(variants: list[Variant], timing: dict[str, dict]) -> dict[str, dict]:
    """Each variant against its group's GEMM bound, PyTorch eager and hand-written step.

    ``vs_*`` is the median of the per-round ratios (sample i of the variant over sample i of
    the reference, taken moments apart), which a noisy neighbour disturbs far less than
    the ratio of two medians; that one is kept as ``vs_*_of_medians``.
    """
    out = {}
    for v in variants:
        row = {}
        for kind, key in (("gemm", "vs_gemm"), ("peer", "vs_torch"), ("hand", "vs_hand"),
                          ("before", "vs_before"), ("peer-mixed", "vs_torch_autocast")):
            if kind == "peer-mixed" and "mixed" not in v.name:
                continue
            ref = _reference(variants, v, kind)
            if ref is None:
                continue
            mine, theirs = timing[v.name]["samples_s"], timing[ref.name]["samples_s"]
            row[key] = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
            row[key + "_of_medians"] = timing[v.name]["median_s"] / timing[ref.name]["median_s"]
        out[v.name] = row
    return out


def _reference(variants, v, kind):
    """The variant of ``kind`` in ``v``'s group; for GEMM bounds, the one of v's library."""
    peers = [w for w in variants if w.group == v.group and w.kind == kind]
    if kind == "before" and v.kind != "xpnet":
        return None
    if kind in ("gemm", "before"):
        lib = v.info.get("lib")
        same = [w for w in peers if w.info.get("lib") == lib]
        peers = same or peers
    return peers[0] if peers else None


def machine_facts() -> dict:
    """Device, library versions, BLAS, thread counts and date: what a number needs beside it."""
    facts: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "env_threads": {k: os.environ.get(k) for k in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    facts.update(_torch_facts())
    facts.update(_other_versions())
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _numpy_blas() -> dict:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        info = {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:  # older numpy: show_config only prints
        buf = io.StringIO()
        with redirect_stdout(buf):
            np.show_config()
        info = {"config": buf.getvalue()[:400]}
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version")}
                               for p in threadpool_info()]
    except ImportError:
        pass
    return info


def _torch_facts() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    facts = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": _torch_blas(torch),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        facts["cuda_device"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
        facts["torch_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return facts


def _torch_blas(torch) -> str:
    cfg = torch.__config__.show()
    keep = [ln.strip() for ln in cfg.splitlines()
            if any(w in ln for w in ("BLAS", "MKL", "LAPACK", "OpenMP", "oneDNN", "CUDA"))]
    return "; ".join(keep)[:600]


def _other_versions() -> dict:
    out = {}
    for mod in ("xpnet", "array_api_compat", "jax", "cupy", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    if out.get("cupy"):
        out["cupy_tf32"] = os.environ.get("CUPY_TF32")
    return out


def fmt_time(s: float) -> str:
    """Seconds as a short human string (us / ms / s)."""
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r) -> str:
    return "" if r is None else f"{r:.2f}x"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def facts_markdown(facts: dict) -> str:
    """The machine facts as a short bullet list under a table."""
    keys = ("date_utc", "processor", "cpu_count", "load_average", "numpy", "numpy_blas", "torch",
            "torch_threads", "torch_blas", "jax", "cupy", "cuda_device", "xpnet")
    return "\n".join(f"- {k}: {facts.get(k)}" for k in keys if facts.get(k) is not None)


def write_results(name: str, payload: dict, markdown: str, out_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` (default bench/results)."""
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown + "\n")
    return path


def add_common_args(parser) -> None:
    """--quick, --out, --reps, shared by every script."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repetitions: seconds, for the smoke test")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the JSON and markdown (default bench/results)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for torch, NumPy's BLAS and XLA alike (default 1: this "
                             "box is a shared 2-core machine)")
