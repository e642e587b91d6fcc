"""Data that does not fit in memory: memory-mapped arrays and iterables of batches.

Training on a memory map, or on a list of batches, must give exactly what training on
the same arrays in memory gives; a memory-mapped file must never become resident whole;
every bad input is refused by name, the first batch before anything changes.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend.table import to_numpy
from xpnet.data import DataError, sources

HERE = pathlib.Path(__file__).resolve().parent
rng0 = np.random.default_rng(0)
X0 = rng0.normal(size=(203, 6)).astype(np.float32)
y0 = rng0.integers(0, 3, size=203)


def _mapped(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def _net(backend="numpy", dropout=True):
    layers = [xn.Dense(6, 8), xn.Tanh()]
    if dropout:
        layers.append(xn.Dropout(0.2))
    return xn.Sequential(*layers, xn.Dense(8, 3), seed=0, backend=backend)


def _host(net):
    return {k: to_numpy(v) for k, v in net.params.items()}


def _train(X, y=None, backend="numpy", **kwargs):
    net = _net(backend)
    options = dict(loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=3,
                   batch_size=32, seed=5)
    history = net.fit(X, y, **{**options, **kwargs})
    return _host(net), history.history


def _assert_same(a, b):
    params_a, history_a = a
    params_b, history_b = b
    assert history_a == history_b  # floats compared exactly
    for name in params_a:
        np.testing.assert_array_equal(params_a[name], params_b[name], err_msg=name)


# --------------------------------------------------------------------------- memory maps


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("split", [0.0, 0.25])
@pytest.mark.parametrize("which", ["X", "y", "both"])
def test_mapped_training_equals_training_in_memory(tmp_path, shuffle, split, which):
    X = _mapped(tmp_path, "X", X0) if which in ("X", "both") else X0
    y = _mapped(tmp_path, "y", y0) if which in ("y", "both") else y0
    expected = _train(X0, y0, shuffle=shuffle, validation_split=split)
    _assert_same(_train(X, y, shuffle=shuffle, validation_split=split), expected)


def test_mapped_training_equals_training_in_memory_on_every_backend(tmp_path, backend):
    X, y = _mapped(tmp_path, "X", X0), _mapped(tmp_path, "y", y0)
    _assert_same(_train(X, y, backend=backend, validation_split=0.2, epochs=2),
                 _train(X0, y0, backend=backend, validation_split=0.2, epochs=2))


def test_mapped_validation_data_is_evaluated_in_chunks(tmp_path, monkeypatch):
    Xv, yv = X0[:90], y0[:90]
    expected = _train(X0, y0, validation_data=(Xv, yv))
    monkeypatch.setattr(sources, "CHUNK_BYTES", 40 * 6 * 4)  # 40 rows a chunk: 3 chunks
    got = _train(X0, y0, validation_data=(_mapped(tmp_path, "Xv", Xv), yv))
    # the predictions of a chunk are those of the whole set, to the matmul's rounding
    for key, values in expected[1].items():
        np.testing.assert_allclose(got[1][key], values, rtol=1e-6, err_msg=key)


def test_a_copy_on_write_map_trains_as_well(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, X0)
    _assert_same(_train(np.load(path, mmap_mode="c"), y0), _train(X0, y0))


def test_np_memmap_of_a_raw_file_trains(tmp_path):
    path = tmp_path / "X.f32"
    X0.tofile(path)
    X = np.memmap(path, dtype=np.float32, mode="r", shape=X0.shape)
    _assert_same(_train(X, y0), _train(X0, y0))


def test_a_bad_row_deep_in_a_map_is_named_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64 * 6 * 4)  # 64 rows a chunk
    bad = X0.copy()
    bad[150, 2] = np.nan
    net = _net()
    before = _host(net)
    with pytest.raises(DataError) as info:
        net.fit(_mapped(tmp_path, "X", bad), y0, loss="cross_entropy")
    assert "X[128:192]" in str(info.value) and "row 22, column 2" in str(info.value)
    assert net.optimizer is None and net.history is None
    _assert_same((_host(net), {}), (before, {}))


def test_bad_mapped_labels_and_shapes_are_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64 * 6 * 4)
    labels = y0.copy()
    labels[200] = 7
    with pytest.raises(DataError, match=r"y\[192:203\] holds class labels from 0 to 7"):
        _net().fit(X0, _mapped(tmp_path, "y", labels), loss="cross_entropy")
    with pytest.raises(DataError, match="X has 203 samples but y has 202"):
        _net().fit(_mapped(tmp_path, "X", X0), y0[:202], loss="cross_entropy")
    with pytest.raises(DataError, match="X has 5 features but layer 0"):
        _net().fit(_mapped(tmp_path, "X5", X0[:, :5]), y0, loss="cross_entropy")
    with pytest.raises(DataError, match="X must be 2-D"):
        _net().fit(_mapped(tmp_path, "X1", X0[:, 0]), y0, loss="cross_entropy")


@pytest.mark.parametrize("batch_size", [None, 16])
def test_evaluate_and_predict_read_a_map_in_chunks(tmp_path, monkeypatch, batch_size):
    net = _net(dropout=False)
    X = _mapped(tmp_path, "X", X0)
    expected = net.evaluate(X0, y0, loss="cross_entropy", batch_size=batch_size)
    predicted = to_numpy(net.predict(X0, batch_size=batch_size))
    monkeypatch.setattr(sources, "CHUNK_BYTES", 40 * 6 * 4)  # 40 rows: 6 chunks
    got = net.evaluate(X, _mapped(tmp_path, "y", y0), loss="cross_entropy",
                       batch_size=batch_size)
    if batch_size:  # whole batches per chunk: the same forward passes, the same numbers
        assert got == expected
        np.testing.assert_array_equal(to_numpy(net.predict(X, batch_size=16)), predicted)
    else:
        assert got == pytest.approx(expected, rel=1e-6)
        np.testing.assert_allclose(to_numpy(net.predict(X)), predicted, rtol=1e-6)
    bad = X0.copy()
    bad[100, 0] = np.inf
    with pytest.raises(DataError, match=r"X\[80:120\] contains 1 NaN or Inf"):
        net.predict(_mapped(tmp_path, "bad", bad))


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset VmHWM (the peak resident size) to the current size, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def test_a_500_mb_map_trains_with_resident_memory_bounded(tmp_path):
    if not _reset_peak():
        pytest.skip("cannot reset the peak resident size (/proc/self/clear_refs)")
    n, d = 500 * 2**20 // (256 * 4), 256
    path = tmp_path / "big.npy"
    rng = np.random.default_rng(0)
    block = rng.standard_normal((2**15, d), dtype=np.float32).tobytes()
    with open(path, "wb") as fh:  # written through the file: no page of it resident here
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (n, d)})
        for _ in range(0, n, 2**15):
            fh.write(block)
    X = np.load(path, mmap_mode="r")
    y = rng.integers(0, 4, size=n)
    net = xn.mlp([d, 16, 4], seed=0, backend="numpy")
    _reset_peak()
    start = _status_kib("VmRSS")
    history = net.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-3), epochs=1,
                      batch_size=4096, seed=0)
    grown_mib = (_status_kib("VmHWM") - start) / 1024
    assert np.isfinite(history.history["loss"][0])
    assert grown_mib < 100, f"resident memory grew by {grown_mib:.0f} MiB"
    # the measure can say no: reading the mapping whole makes it resident
    _reset_peak()
    start = _status_kib("VmRSS")
    for lo in range(0, n, 2**16):
        float(X[lo:lo + 2**16].sum())
    assert (_status_kib("VmHWM") - start) / 1024 > 400


# --------------------------------------------------------------------------- iterables


def _batches(X, y, size=32):
    return [(X[lo:hi], y[lo:hi]) for lo, hi in xn.data.batch_bounds(len(X), size)]


def test_a_list_of_batches_equals_the_concatenated_arrays():
    val = (X0[:50], y0[:50])
    _assert_same(_train(_batches(X0, y0), validation_data=val),
                 _train(X0, y0, shuffle=False, validation_data=val))


def test_a_torch_dataloader_trains_as_its_arrays():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(X0), torch.from_numpy(y0)),
                        batch_size=32, shuffle=False)
    _assert_same(_train(loader), _train(X0, y0, shuffle=False))
    shuffled = DataLoader(TensorDataset(torch.from_numpy(X0), torch.from_numpy(y0)),
                          batch_size=32, shuffle=True)
    _, history = _train(shuffled, backend="torch")
    assert len(history["loss"]) == 3 and all(np.isfinite(history["loss"]))


class _Fresh:
    """A custom re-iterable: __iter__ returns a new generator each epoch."""

    def __iter__(self):
        return iter(_batches(X0, y0))


def test_a_custom_reiterable_trains_and_a_generator_only_once():
    expected = _train(X0, y0, shuffle=False)
    _assert_same(_train(_Fresh()), expected)
    one_epoch = _train(X0, y0, shuffle=False, epochs=1)
    _assert_same(_train((b for b in _batches(X0, y0)), epochs=1), one_epoch)
    net = _net()
    with pytest.raises(ValueError, match="one-shot iterator .*epochs=3 reads it 3 times"):
        net.fit((b for b in _batches(X0, y0)), loss="cross_entropy", epochs=3)
    assert net.optimizer is None


def test_a_bad_first_batch_is_refused_before_anything_changes():
    net = _net()
    before = _host(net)
    cases = [
        ([(X0[:32, :5], y0[:32])], DataError, "X of batch 0 has 5 features"),
        ([(X0[:32], y0[:31])], DataError, "y of batch 0 has 31"),
        ([(X0[:32], y0[:32] + 5)], DataError, "y of batch 0 holds class labels"),
        ([(X0[:32],)], DataError, "batch 0 must be a pair"),
        (iter([]), DataError, "yielded no batch"),
        (42, DataError, "X must be 2-D"),
    ]
    for batches, error, words in cases:
        with pytest.raises(error, match=words):
            net.fit(batches, loss="cross_entropy", epochs=1)
    with pytest.raises(ValueError, match="validation_split cannot split an iterable"):
        net.fit(_batches(X0, y0), loss="cross_entropy", validation_split=0.2)
    assert net.optimizer is None and net.history is None
    _assert_same((_host(net), {}), (before, {}))


def test_a_bad_later_batch_stops_training_naming_it():
    batches = _batches(X0, y0)
    Xb = batches[2][0].copy()
    Xb[3, 1] = np.nan
    batches[2] = (Xb, batches[2][1])
    before = threading.active_count()
    with pytest.raises(DataError, match="X of batch 2 contains 1 NaN or Inf value.*row 3"):
        _net().fit(batches, loss="cross_entropy", epochs=2)
    assert threading.active_count() == before  # the prefetching thread is gone


def test_an_array_without_y_is_still_refused_as_a_missing_y():
    with pytest.raises(DataError, match="y is NoneType"):
        _net().fit(X0, loss="cross_entropy")
    with pytest.raises(DataError, match="y is NoneType"):
        _net().fit(X0.tolist(), loss="cross_entropy")


# --------------------------------------------------------------------------- the sources


def test_weights_follow_their_rows_through_a_shuffled_epoch(tmp_path):
    net = _net()
    backend = net.backend
    W = np.arange(len(X0), dtype=np.float32)
    Xd = net.device_inputs(X0)
    arrays = sources.Arrays(backend, Xd, net.device_targets(y0, "cross_entropy", Xd),
                            backend.asarray(W))
    mapped = sources.Mapped(net, _mapped(tmp_path, "X", X0), y0, "cross_entropy", W=W)
    mapped.validate()
    order = np.random.default_rng(1).permutation(len(X0))
    bounds = xn.data.batch_bounds(len(X0), 50)
    for source in (arrays, mapped):
        for batch in source.epoch(bounds, order):
            rows = to_numpy(batch.W).astype(np.int64)
            np.testing.assert_array_equal(rows, order[batch.lo:batch.hi])
            np.testing.assert_array_equal(to_numpy(batch.X), X0[rows])


def test_a_shard_takes_its_rows_of_each_batch(tmp_path):
    net = _net()
    half = lambda lo, hi: (lo + (hi - lo) // 2, hi)  # noqa: E731
    mapped = sources.Mapped(net, _mapped(tmp_path, "X", X0), y0, "cross_entropy")
    listed = sources.Batches(net, _batches(X0, y0), "cross_entropy", epochs=1)
    for source in (mapped, listed):
        batches = list(source.epoch(xn.data.batch_bounds(len(X0), 32), None, half))
        assert [(b.lo, b.hi) for b in batches] == xn.data.batch_bounds(len(X0), 32)
        for b in batches:
            np.testing.assert_array_equal(to_numpy(b.X), X0[half(b.lo, b.hi)[0]:b.hi])


# --------------------------------------------------------------------------- many processes


def _mpi_skip_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'xpnet[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec on PATH or beside the interpreter (pip install mpich)"
    return None


def _mpiexec() -> str | None:
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(_mpi_skip_reason() is not None, reason=str(_mpi_skip_reason()))
@pytest.mark.parametrize("kind", ["mapped", "batches"])
def test_each_rank_trains_on_its_shard_of_streamed_batches(tmp_path, kind):
    sys.path.insert(0, str(HERE))
    try:
        script = __import__("mpi_stream")
    finally:
        sys.path.remove(str(HERE))
    X, y = script.problem()
    np.save(tmp_path / "X.npy", X)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")
    done = subprocess.run([_mpiexec(), "-n", "3", sys.executable, str(HERE / "mpi_stream.py"),
                           str(tmp_path), kind], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    # one process on the arrays in memory: the same global batches in the same order
    params, losses = script.train(None, X, y, shuffle=kind == "mapped")
    files = [np.load(tmp_path / f"rank{r}.npz") for r in range(3)]
    for name, want in params.items():
        np.testing.assert_allclose(files[0][name], want, rtol=1e-10, atol=1e-12)
        for other in files[1:]:
            assert np.array_equal(other[name], files[0][name]), f"ranks differ on {name}"
    np.testing.assert_allclose(files[0]["loss"], losses, rtol=1e-10)


class _StopAt(xn.Callback):
    """Raises Ctrl-C's exception after ``at`` batches (as the user pressing it would)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.seen = at, []

    def on_batch_end(self, batch, logs):
        self.seen.append(logs["seen"])
        if len(self.seen) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["mapped", "batches"])
def test_an_interrupted_streamed_epoch_leaves_no_thread_behind(tmp_path, kind):
    data = ((_mapped(tmp_path, "X", X0), y0) if kind == "mapped" else (_batches(X0, y0), None))
    before = threading.active_count()
    stop = _StopAt(3)
    with pytest.raises(KeyboardInterrupt):
        _net().fit(*data, loss="cross_entropy", epochs=2, shuffle=False, callbacks=[stop])
    assert stop.seen == [32, 64, 96]
    assert threading.active_count() == before
