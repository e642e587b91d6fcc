"""No hidden device syncs: ``fit`` reads the device only at its divergence checks and once
per epoch on a backend whose reads are expensive.

Every host read of a device value (``float()``, ``int()``, ``bool()``, ``.item()``, a NumPy
or DLPack copy) waits for the device's queued work, so a read per step makes GPU training
synchronous. array-api-strict stands in for such a backend here: its row is flagged as
queuing work (``cheap_reads`` is then False, as on CUDA and JAX) and every host read of its
arrays is counted while ``fit`` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest

import xpnet as xn
from xpnet.train.callbacks import Callback

xs = pytest.importorskip("array_api_strict")
Array = xs._array_object.Array
READS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__",
         "__dlpack__", "__buffer__", "__iter__", "item", "tolist")


def _expensive_reads_backend(device: str = "CPU_DEVICE") -> xn.Backend:
    """array-api-strict on ``device`` with its table row flagged as queuing work."""
    plain = xn.backend.get("array_api_strict", device)
    row = dataclasses.replace(plain.row, async_dispatch=True)
    return xn.Backend(plain.name, plain.xp, plain.device, plain.dtype, plain.dtype_name,
                      plain.lib, row)


@contextlib.contextmanager
def counting_reads(monkeypatch):
    """Counts the host reads of array-api-strict arrays made inside the block (a read that
    calls another read method counts once)."""
    counter = {"reads": 0, "depth": 0}

    def counted(method):
        def read(self, *args, **kwargs):
            if counter["depth"] == 0:
                counter["reads"] += 1
            counter["depth"] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                counter["depth"] -= 1
        return read

    with monkeypatch.context() as patch:
        for name in READS:
            if hasattr(Array, name):
                patch.setattr(Array, name, counted(getattr(Array, name)))
        yield counter


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


class ReadsEveryBatch(Callback):
    """A careless callback: reads the running loss after every batch."""

    def on_batch_end(self, batch, logs):
        self.last = float(logs["loss_sum"])


def _fit_reads(monkeypatch, epochs, batches, check_every, callbacks=(), validation=False,
               device="CPU_DEVICE"):
    backend = _expensive_reads_backend(device)
    assert not backend.cheap_reads
    X, y = _data(n=batches * 10)
    model = xn.mlp([5, 16, 2], seed=0, backend=backend)
    val = _data(n=50, seed=1) if validation else None
    with counting_reads(monkeypatch) as counter:
        history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2),
                            epochs=epochs, batch_size=10, verbose=1, check_every=check_every,
                            callbacks=list(callbacks), validation_data=val)
    assert len(history.history["loss"]) == epochs
    assert np.isfinite(history.history["loss"]).all()
    return counter["reads"]


CONSTANT = 2  # reads a fit may make whatever its length


@pytest.mark.parametrize("epochs, batches, check_every", [(1, 100, 50), (4, 25, 10),
                                                           (10, 10, 25), (2, 50, 100)])
def test_fit_reads_only_at_checks_and_epoch_ends(monkeypatch, epochs, batches, check_every):
    steps = epochs * batches
    reads = _fit_reads(monkeypatch, epochs, batches, check_every)
    assert reads <= steps // check_every + epochs + CONSTANT, reads


def test_validation_adds_one_read_per_epoch(monkeypatch):
    epochs, batches, check_every = 4, 25, 10
    reads = _fit_reads(monkeypatch, epochs, batches, check_every, validation=True)
    assert reads <= epochs * batches // check_every + 2 * epochs + CONSTANT, reads


def test_the_count_catches_a_read_per_step(monkeypatch):
    """The negative control: a callback reading every batch pushes the count past the bound,
    so the bound above is not one that any fit would meet."""
    epochs, batches, check_every = 1, 100, 50
    reads = _fit_reads(monkeypatch, epochs, batches, check_every,
                       callbacks=[ReadsEveryBatch()])
    assert reads >= epochs * batches
    assert reads > epochs * batches // check_every + epochs + CONSTANT


def test_the_counter_sees_every_kind_of_read(monkeypatch):
    backend = _expensive_reads_backend()
    x = backend.asarray(np.ones(3, np.float32))
    with counting_reads(monkeypatch) as counter:
        float(x[0])
        bool(x[1] > 0)
        int(backend.xp.astype(x[2], backend.xp.int64))
        backend.to_numpy(x)
    assert counter["reads"] == 4


def test_on_a_fake_device_too(monkeypatch):
    reads = _fit_reads(monkeypatch, 2, 50, 25, validation=True, device="device1")
    assert reads <= 100 // 25 + 2 * 2 + CONSTANT, reads


def test_reading_together_changes_no_number():
    """The losses and metrics read in one host copy equal those read one by one."""
    X, y = _data(n=200)
    val = _data(n=50, seed=1)
    histories = []
    for backend in (xn.backend.get("array_api_strict"), _expensive_reads_backend()):
        model = xn.mlp([5, 16, 2], seed=0, backend=backend)
        history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=3,
                            batch_size=10, check_every=7, validation_data=val)
        histories.append(history.history)
    assert histories[0].keys() == histories[1].keys()
    for key in histories[0]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-6, err_msg=key)


def test_batch_logs_carry_the_running_loss_read_at_each_check():
    class Seen(Callback):
        def __init__(self):
            self.losses = []

        def on_batch_end(self, batch, logs):
            self.losses.append(logs["loss"])

    X, y = _data(n=100)
    seen = Seen()
    model = xn.mlp([5, 16, 2], seed=0, backend=_expensive_reads_backend())
    model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=10, check_every=4,
              callbacks=[seen])
    known = [b for b, loss in enumerate(seen.losses) if loss is not None]
    assert known == [3, 7]  # the checks after steps 4 and 8 (the 1st epoch's only ones)
    assert all(np.isfinite(seen.losses[b]) for b in known)


def test_the_shared_read_still_stops_a_diverging_fit():
    X, y = _data(n=100)
    model = xn.mlp([5, 16, 2], seed=0, backend=_expensive_reads_backend())
    with pytest.raises(xn.DivergenceError):
        model.fit(X * 1e30, y, loss="cross_entropy", optimizer=xn.SGD(lr=1e10), epochs=2,
                  batch_size=10, check_every=3)
    for name, p in model.params.items():  # restored to the last finite weights
        assert np.isfinite(xn.backend.to_numpy(p)).all(), name
