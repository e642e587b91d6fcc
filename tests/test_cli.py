"""The command line, run as users run it: ``python -m xpnet ...`` in a subprocess.

A few argument errors are also checked in-process through ``cli.main`` (the same code
path, without paying an interpreter start per case).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from xpnet import cli
from xpnet.data import datasets


def run(*args, cwd=None, timeout=120):
    env = dict(os.environ, XPNET_BACKEND="numpy", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "xpnet", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error:" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_info_lists_numpy_with_its_version_and_the_blas():
    result = run("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "backends usable here:" in out
    assert re.search(rf"^\s+numpy\s+{re.escape(np.__version__)}\s+cpu", out, re.M), out
    assert "BLAS:" in out
    # cupy is either usable (with a device line) or listed with the reason it is not
    assert "cupy" in out


def test_train_prints_every_epoch_saves_plots_and_predict_reads_the_model(tmp_path):
    result = run("train", "--epochs", "3", "--layers", "16", "--save", "model.npz",
                 *(["--plot", "curves.png"] if _has_matplotlib() else []), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"^epoch (\d)/3 +loss ([\d.]+) +accuracy ([\d.]+) +val_loss", result.stdout,
                        re.M)
    assert [e[0] for e in epochs] == ["1", "2", "3"], result.stdout
    assert all(0.0 <= float(e[2]) <= 1.0 for e in epochs)
    assert "done: 3 epochs" in result.stdout
    assert (tmp_path / "model.npz").is_file()
    if _has_matplotlib():
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    X, y = datasets.spirals(n_samples=40, seed=5)
    np.savez(tmp_path / "points.npz", X=X, y=y)
    result = run("predict", "--model", "model.npz", "--data", "points.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    labels = [int(v) for v in result.stdout.split()]
    assert len(labels) == 40 and set(labels) <= {0, 1}
    assert re.search(r"accuracy [\d.]+ on 40 samples", result.stderr)

    result = run("predict", "--model", "model.npz", "--data", "points.npz", "--out", "p.npy",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), labels)


def test_default_train_learns_the_spirals():
    """The README's main job: the defaults must reach a good accuracy (a few seconds)."""
    result = run("train")
    assert result.returncode == 0, result.stderr
    final = re.search(r"^done: .* val_accuracy ([\d.]+)", result.stdout, re.M)
    assert final and float(final.group(1)) >= 0.95, result.stdout[-500:]


def test_regression_from_a_csv_and_predict_values(tmp_path):
    X, y = datasets.linear(m=[1.5, -0.5], b=0.25, n=64, seed=0)
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.column_stack([X, y]))
    (tmp_path / "line.csv").write_text("a,b,y\n" + rows + "\n")
    result = run("train", "--data", "line.csv", "--layers", "none", "--epochs", "60",
                 "--lr", "0.05", "--save", "line.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "regression" in result.stdout and "accuracy" not in result.stdout
    np.savetxt(tmp_path / "features.csv", X[:4], delimiter=",")
    result = run("predict", "--model", "line.npz", "--data", "features.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    values = np.array([float(v) for v in result.stdout.split()])
    np.testing.assert_allclose(values, y[:4], atol=0.05)


@pytest.mark.parametrize("args, needle", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--backend", "nosuch"], "--backend"),
    (["predict", "--model", "missing.npz", "--data", "spirals"], "missing.npz"),
])
def test_bad_flags_exit_2_with_one_line_and_no_traceback(args, needle, tmp_path):
    assert_one_line_error(run(*args, cwd=tmp_path), needle)


@pytest.mark.parametrize("args, needle", [
    ([], "COMMAND"),
    (["fly"], "invalid choice"),
    (["train", "--epochs", "ten"], "whole number"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--layers", "64,x"], "--layers"),
    (["train", "--layers", "64,0"], "at least 1"),
    (["train", "--validation-split", "1"], "--validation-split"),
    (["train", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--data", "mnist"], "unknown data set 'mnist'"),
    (["train", "--data", "absent.csv"], "does not exist"),
    (["train", "--save", "model.pt"], ".npz"),
    (["train", "--data", "linear", "--loss", "cross_entropy"], "integer class labels"),
    (["train", "--data", "xor_table", "--validation-split", "0.1"], "validation"),
    (["train", "--backend", "torch", "--device", "tpu"], "torch"),
    (["predict", "--data", "spirals"], "--model"),
])
def test_bad_values_in_process(args, needle, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and needle in err[0], err


def test_predict_with_the_wrong_number_of_features(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "1", "--layers", "4", "--validation-split", "0",
                     "--save", str(tmp_path / "m.npz")]) == 0
    np.savez(tmp_path / "wide.npz", X=np.zeros((3, 5), dtype=np.float32))
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(tmp_path / "m.npz"),
                     "--data", str(tmp_path / "wide.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5 features" in err[0], err


def test_plot_without_matplotlib_fails_before_training(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert cli.main(["train", "--plot", "curves.png"]) == 2
    captured = capsys.readouterr()
    assert "epoch" not in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "xpnet[plot]" in err[0], err


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
