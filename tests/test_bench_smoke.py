"""The benchmark scripts still run: each ``--quick`` mode writes valid JSON with its keys.

No time is ever asserted (timings belong to bench/results, not to tests).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run(script: str, tmp_path: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(BENCH / script), "--quick", "--out", str(tmp_path), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=BENCH.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    name = script.replace(".py", "_quick")
    assert (tmp_path / f"{name}.md").read_text().startswith("#")
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["quick"] is True
    for key in ("date_utc", "numpy", "numpy_blas", "cpu_count", "thread_limits"):
        assert key in data["machine"], key
    return data


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def test_train_step_quick(tmp_path):
    data = _run("train_step.py", tmp_path, "--backends", "numpy,torch")
    assert data["benchmark"] == "train_step"
    assert set(data["shapes"]) == {"tiny", "medium", "large-reduced"}
    for shape in data["shapes"].values():
        names = {row["variant"] for row in shape["rows"]}
        expected = {"xpnet-numpy", "gemm-numpy", "numpy-hand"}
        if HAS_TORCH:
            expected |= {"xpnet-torch-cpu", "gemm-torch-cpu", "torch-eager-cpu"}
        assert expected <= names
        for row in shape["rows"]:
            assert row["reps"] >= 5 and _is_number(row["median_s"])
            assert _is_number(row["vs_gemm"]) and _is_number(row["vs_hand"])
            if HAS_TORCH:
                assert _is_number(row["vs_torch"])


def test_fit_epoch_quick(tmp_path):
    pytest.importorskip("sklearn")
    data = _run("fit_epoch.py", tmp_path, "--backends", "numpy,torch")
    names = {row["variant"] for row in data["epoch"]["rows"]}
    assert "xpnet-numpy" in names
    if HAS_TORCH:
        assert {"xpnet-torch-cpu", "torch-loop-cpu"} <= names
    summary = data["digits"]["summary"]
    assert set(summary) == {"xpnet-numpy", "sklearn-MLPClassifier"}
    for entry in summary.values():
        assert _is_number(entry["median_s"]) and entry["median_epochs"] >= 1


def test_scaling_quick(tmp_path):
    data = _run("scaling.py", tmp_path, "--backends", "numpy")
    axes = {row["axis"] for row in data["rows"]}
    assert axes == {"width", "batch"}
    assert all(row["variant"] == "xpnet-numpy" for row in data["rows"])
    assert data["gpu_beats_cpu_from"] == {"width": None, "batch": None}  # numpy only: no GPU
    if importlib.util.find_spec("matplotlib") is not None:
        assert data["plot"] and (tmp_path / data["plot"]).stat().st_size > 0


def test_fit_digits_quick(tmp_path):
    pytest.importorskip("sklearn")
    data = _run("fit_digits.py", tmp_path)
    names = {row["variant"] for row in data["rows"]}
    for opt in ("adam", "sgd"):
        assert {f"xpnet-fit-{opt}", f"xpnet-MLPClassifier-{opt}",
                f"sklearn-MLPClassifier-{opt}"} <= names
    for row in data["rows"]:
        assert _is_number(row["vs_sklearn"]) and 0.0 <= row["accuracy"] <= 1.0


def test_optimizer_update_quick(tmp_path):
    data = _run("optimizer_update.py", tmp_path, "--backends", "numpy")
    for shape in data["shapes"].values():
        paths = {(row["optimizer"], row["path"]) for row in shape["rows"]}
        assert {("adam", "flat"), ("adam", "per-parameter"), ("sgd", "flat")} <= paths
        assert {(name, "flat") for name in ("adamw", "rmsprop", "adagrad")} <= paths
        assert all(_is_number(row["vs_sgd_flat"]) for row in shape["rows"])


def test_train_step_compares_with_a_baseline_copy(tmp_path):
    """--baseline imports an earlier xpnet beside this one (here: this one, copied)."""
    import shutil

    shutil.copytree(BENCH.parent / "xpnet", tmp_path / "base" / "xpnet_before")
    (tmp_path / "base" / "xpnet_before" / "__init__.py").write_text(
        "from .model import Sequential, mlp\nfrom .nn.optim import SGD\n")
    # the baseline API of the time: Sequential.train_step(X, T, loss_fn, optimizer)
    module = tmp_path / "base" / "xpnet_before" / "model.py"
    module.write_text(module.read_text() + (
        "\n\ndef _train_step(self, X, T, loss_fn, optimizer):\n"
        "    from .train.step import Step\n"
        "    return Step(self, loss_fn, optimizer)(X, T)\n\n\n"
        "Sequential.train_step = _train_step\n"))
    (tmp_path / "base" / "xpnet_before" / "losses.py").write_text(
        "from .nn.losses import cross_entropy  # noqa: F401\n")
    data = _run("train_step.py", tmp_path, "--backends", "numpy", "--shapes", "tiny",
                "--baseline", str(tmp_path / "base"))
    rows = {row["variant"]: row for row in data["shapes"]["tiny"]["rows"]}
    assert "before-numpy" in rows and _is_number(rows["xpnet-numpy"]["vs_before"])


def test_fit_overhead_quick(tmp_path):
    data = _run("fit_overhead.py", tmp_path, "--no-threads")
    assert data["benchmark"] == "fit_overhead"
    (results,) = data["timing"].values()
    assert set(results) == {"tiny-quick", "medium-quick"}
    for shape in results.values():
        assert {"fit-sgd", "fit-adam", "step-sgd", "numpy-loop", "gemm"} <= set(shape["per_batch"])
        whats = {r["what"] for r in shape["ratios"]}
        assert "fit overhead over the bare step" in whats and "fit vs GEMM bound" in whats
        for r in shape["ratios"]:
            assert _is_number(r["median"]) and r["min"] <= r["median"] <= r["max"]
    for shares in (b["shares"] for b in data["breakdown"].values()):
        assert all(0.0 <= v <= 1.0 for v in shares.values()), shares
        assert shares["step (without the guard)"] > 0
    assert data["memory"] and all(r["lower_bound_bytes"] > 0 for r in data["memory"])
def _mpi_skip_reason() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'xpnet[mpi]')"
    beside = Path(sys.executable).parent / "mpiexec"
    if not beside.exists() and shutil.which("mpiexec") is None:
        return "no mpiexec on PATH or beside the interpreter (pip install mpich)"
    return None


def _check_distributed(data, libraries):
    rows = {(row["variant"], row["ranks"]): row for row in data["rows"]}
    assert set(rows) == {(lib, k) for lib in libraries for k in (1, 2)}
    for row in rows.values():
        assert _is_number(row["median_s"]) and _is_number(row["samples_per_s"])
        assert _is_number(row["efficiency"]) and _is_number(row["comm_s"])
    assert rows[("xpnet", 1)]["comm_s"] == 0.0  # one process sends nothing
    assert rows[("xpnet", 2)]["comm_s"] > 0.0  # the hook's all-reduce was timed


@pytest.mark.skipif(_mpi_skip_reason() is not None, reason=str(_mpi_skip_reason()))
def test_distributed_quick(tmp_path):
    data = _run("distributed.py", tmp_path, "--libraries", "xpnet")
    assert data["benchmark"] == "distributed" and data["ranks"] == [1, 2]
    _check_distributed(data, ["xpnet"])
    (overlap,) = data["overlap"]
    for key in ("blocking_s", "overlap_s", "overlap_vs_blocking", "overlap_wait_s"):
        assert _is_number(overlap[key]), key


@pytest.mark.slow  # torch.distributed.run starts in seconds, each time
@pytest.mark.skipif(_mpi_skip_reason() is not None, reason=str(_mpi_skip_reason()))
def test_distributed_quick_against_ddp(tmp_path):
    pytest.importorskip("torch")
    data = _run("distributed.py", tmp_path, "--no-overlap")
    _check_distributed(data, ["xpnet", "torch-ddp"])
    assert "tiny_2_ranks_at_least_ddp" in data["goals"]
