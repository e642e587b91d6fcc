"""Resources and concurrency: per-thread backends; out-of-memory errors say what to lower."""

from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import is_out_of_memory

CPU_NAMES = [n for n in ("numpy", "torch", "array_api_strict", "jax") if n in xn.available()]


def _run_threads(target, names):
    errors, threads = [], []

    def guarded(name):
        try:
            target(name)
        except BaseException as exc:  # reported by the main thread
            errors.append((name, exc))

    for name in names:
        threads.append(threading.Thread(target=guarded, args=(name,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_use_in_one_thread_does_not_change_another():
    names = CPU_NAMES
    barrier = threading.Barrier(len(names))
    seen = {}

    def worker(name):
        xn.use(name)
        barrier.wait()  # every thread has now called use() with its own backend
        seen[name] = [xn.current().name]
        seen[name].append(xn.mlp([2, 3, 1], seed=0).backend.name)
        with xn.use("numpy"):
            barrier.wait()  # every thread is inside its own with-block
        seen[name].append(xn.current().name)

    _run_threads(worker, names)
    assert seen == {n: [n, n, n] for n in names}


def test_a_new_thread_starts_from_the_default_not_the_callers_choice(monkeypatch):
    monkeypatch.delenv("XPNET_BACKEND", raising=False)
    xn.use("array_api_strict")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(xn.current().name))
    thread.start()
    thread.join()
    assert seen == ["numpy"]
    assert xn.current().name == "array_api_strict"


def test_threads_training_at_once_get_the_results_of_training_alone():
    """No hidden shared state: concurrent fits equal the same fits run one after another."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5))
    y = rng.integers(0, 3, 64)

    def train(name, seed):
        with xn.use(name):
            model = xn.mlp([5, 16, 3], dropout=0.2, seed=seed)
            model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=2,
                      batch_size=8, seed=seed)
            return {k: model.backend.to_numpy(v) for k, v in model.params.items()}

    jobs = [(name, seed) for name in CPU_NAMES[:3] for seed in (1, 2)]
    alone = {job: train(*job) for job in jobs}
    together = {}
    barrier = threading.Barrier(len(jobs))

    def worker(job):
        barrier.wait()
        together[job] = train(*job)

    _run_threads(worker, jobs)
    for job in jobs:
        for k in alone[job]:
            assert alone[job][k].tobytes() == together[job][k].tobytes(), (job, k)


# --------------------------------------------------------------------------- out of memory


def _fake_cupy(monkeypatch):
    """A stand-in ``cupy`` module whose cuda.memory.OutOfMemoryError is the real path's type."""
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(memory=types.SimpleNamespace())

    class OutOfMemoryError(MemoryError):
        pass

    cupy.cuda.memory.OutOfMemoryError = OutOfMemoryError
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return OutOfMemoryError("Out of memory allocating 1,073,741,824 bytes")


def _failing_step(monkeypatch, model, exc):
    def step(*args, **kwargs):
        raise exc

    monkeypatch.setattr(model, "forward", step)  # every training step runs the forward pass


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((100, 20)), rng.integers(0, 10, 100)


def test_cupy_out_of_memory_during_fit_names_sizes_and_what_to_lower(monkeypatch):
    error = _fake_cupy(monkeypatch)
    model = xn.mlp([20, 300, 10], seed=0)
    _failing_step(monkeypatch, model, error)
    X, y = _data()
    with pytest.raises(xn.OutOfMemoryError) as info:
        model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=64)
    message = str(info.value)
    n_params = 20 * 300 + 300 + 300 * 10 + 10
    for words in ("batch_size=64", "100 samples", f"{n_params:,} parameters",
                  f"{n_params * 4 / 1024:.1f} KiB", "float32", "Lower batch_size",
                  "Out of memory allocating"):
        assert words in message, f"{words!r} not in {message!r}"
    assert info.value.__cause__ is error
    assert isinstance(info.value, MemoryError)


def test_torch_out_of_memory_is_translated_too(monkeypatch):
    torch = pytest.importorskip("torch")
    model = xn.mlp([20, 8, 10], seed=0, dtype="float64")
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    _failing_step(monkeypatch, model, error)
    X, y = _data()
    with pytest.raises(xn.OutOfMemoryError, match=r"batch_size=None .*float64") as info:
        model.fit(X, y, loss="cross_entropy", epochs=1, batch_size=None)
    assert "Tried to allocate" in str(info.value)


def test_evaluate_out_of_memory_is_translated(monkeypatch):
    error = _fake_cupy(monkeypatch)
    model = xn.mlp([20, 8, 10], seed=0)

    def predict(*args, **kwargs):
        raise error

    monkeypatch.setattr(model, "predict_device", predict)
    X, y = _data()
    with pytest.raises(xn.OutOfMemoryError, match="during evaluate with batch_size=10"):
        model.evaluate(X, y, loss="cross_entropy", batch_size=10)


def test_other_errors_pass_through_unchanged(monkeypatch):
    _fake_cupy(monkeypatch)
    model = xn.mlp([20, 8, 10], seed=0)
    error = RuntimeError("something else")
    _failing_step(monkeypatch, model, error)
    X, y = _data()
    with pytest.raises(RuntimeError) as info:
        model.fit(X, y, loss="cross_entropy")
    assert info.value is error
    assert not is_out_of_memory(MemoryError("host memory"))


def test_xla_resource_exhausted_is_recognised():
    class XlaRuntimeError(RuntimeError):
        pass

    assert is_out_of_memory(XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying"))
    assert not is_out_of_memory(XlaRuntimeError("INVALID_ARGUMENT: shapes"))
