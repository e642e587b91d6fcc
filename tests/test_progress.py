"""Progress display: bar at verbose=1, a line per epoch at 2, silence at 0, rare device reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import xpnet as xn
from xpnet.train import progress
from xpnet.train.progress import ProgressBar


def _fit(verbose, epochs=3):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    return xn.mlp([2, 1], seed=0).fit(X, X[:, 0], epochs=epochs, batch_size=8, verbose=verbose)


def test_verbose_0_is_silent(capsys):
    _fit(0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_2_prints_one_line_per_epoch_with_the_loss(capsys):
    history = _fit(2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3 ") and lines[2].startswith("epoch 3/3 ")
    assert f"loss={history.history['loss'][2]:.4g}" in lines[2]


def test_verbose_1_draws_a_tqdm_bar_per_epoch(capsys):
    pytest.importorskip("tqdm", reason="the progress extra (tqdm) is not installed")
    _fit(1, epochs=2)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "5/5" in err  # 40 samples in batches of 8


def test_without_tqdm_verbose_1_falls_back_to_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_tqdm", lambda: None)
    _fit(1, epochs=2)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


class _CountingScalar:
    """Stands in for a 0-d device array; counts the reads that would synchronise."""

    reads = 0

    def __float__(self):
        _CountingScalar.reads += 1
        return 1.0


class _FakeBar:
    def __init__(self, **kwargs):
        self.postfix = None

    def update(self, n):
        pass

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        pass


@pytest.mark.parametrize("name, device, expected_reads", [
    ("cupy", None, 5),      # asynchronous: read every `every` = 10 of 50 batches
    ("jax", None, 5),       # JAX dispatches asynchronously on the CPU too
    ("numpy", None, 50),    # synchronous CPU: a read costs nothing extra
    ("torch", SimpleNamespace(type="cpu"), 50),
])
def test_running_loss_is_read_only_every_n_batches_on_asynchronous_backends(
        name, device, expected_reads):
    row = xn.backend.table._TABLE[name]  # the table's own columns, without the library
    backend = SimpleNamespace(cheap_reads=not (row.is_gpu(None, device) or row.async_dispatch))
    bar = ProgressBar(verbose=1, every=10)
    bar._tqdm = _FakeBar
    bar.set_model(SimpleNamespace(backend=backend))
    bar.on_train_begin({"epochs": 1, "batches": 50, "samples": 500})
    bar.on_epoch_begin(0, {})
    _CountingScalar.reads = 0
    for b in range(50):
        bar.on_batch_end(b, {"size": 10, "seen": 10 * (b + 1), "loss_sum": _CountingScalar()})
    assert _CountingScalar.reads == expected_reads


def test_progress_bar_validates_its_arguments():
    with pytest.raises(ValueError, match="verbose"):
        ProgressBar(verbose=0)
    with pytest.raises(ValueError, match="every"):
        ProgressBar(every=0)
