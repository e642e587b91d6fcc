"""A step's reused arrays (backend/workspace.py) give exactly what fresh arrays give.

The reference is the same kernels without a workspace: ``for_step`` patched to hand out
the shared kernels, so every step makes fresh arrays.
The arithmetic is the same, only where results are written differs, so every comparison
is bit for bit.
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import kernels as kernel_classes
from xpnet.backend.workspace import Workspace

REUSING = ["numpy"]  # the libraries whose step kernels hold a workspace (workspace.py)


@pytest.fixture(autouse=True)
def reuse_small_batches(monkeypatch):
    """The models here are small: let their steps reuse too (``test_small_batches_...``
    checks the threshold itself)."""
    monkeypatch.setattr(Workspace, "MIN_ELEMENTS", 0)


def _backend_or_skip(name: str) -> xn.Backend:
    try:
        return xn.backend.get(name)
    except xn.backend.BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")


@pytest.fixture(params=REUSING)
def reusing(request) -> xn.Backend:
    return _backend_or_skip(request.param)


def _without_reuse(monkeypatch):
    """Steps made from here on get the shared kernels: fresh arrays every step."""
    monkeypatch.setattr(kernel_classes.NumPyKernels, "for_step", lambda self: self)


@pytest.fixture
def no_reuse(monkeypatch):
    """The reference: every step of the test makes fresh arrays."""
    _without_reuse(monkeypatch)


def _data(n=70, n_in=12, n_out=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in), dtype=np.float32), rng.integers(0, n_out, n)


def _model(backend, sizes=(12, 16, 16, 5)):
    return xn.mlp(list(sizes), seed=0, backend=backend)


def _host(model) -> dict:
    return {k: model.backend.to_numpy(v).copy() for k, v in model.params.items()}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _fit(model, X, y, optimizer, **kwargs):
    kwargs = {"epochs": 2, "batch_size": 32, "seed": 3, **kwargs}
    history = model.fit(X, y, loss="cross_entropy", optimizer=optimizer, **kwargs)
    return history.history["loss"]


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("opt", [lambda: xn.SGD(lr=0.1, momentum=0.9), lambda: xn.Adam(1e-2)])
def test_one_step_object_equals_fresh_arrays_every_step(reusing, loss, opt, monkeypatch):
    """70 rows in batches of 32: two full batches and a ragged one of 6, three times."""
    X, y = _data()
    reused, fresh = _model(reusing), _model(reusing)
    if loss == "mse":  # regression targets: one value per output
        y = np.random.default_rng(1).standard_normal((X.shape[0], 5)).astype(np.float32)
    Xd = reused.device_inputs(X)
    Td = reused.device_targets(y, loss, Xd)
    step = xn.Step(reused, loss, opt())
    with monkeypatch.context() as patch:
        _without_reuse(patch)
        reference = xn.Step(fresh, loss, opt())  # the shared kernels: fresh arrays
    assert reference.kernels.workspace is None
    for _ in range(3):
        for lo in range(0, 70, 32):
            Xb, Tb = Xd[lo:lo + 32, ...], Td[lo:lo + 32, ...]
            value = step(Xb, Tb)
            expected = reference(Xb, Tb)
            assert float(value) == float(expected)
    _assert_same(_host(reused), _host(fresh))
    assert step.kernels.workspace is not None and step.kernels.workspace.nbytes > 0


def test_fit_with_a_ragged_last_batch_equals_fresh_arrays(reusing, monkeypatch):
    X, y = _data(n=70)  # 32 + 32 + 6
    reused = _model(reusing)
    loss_reused = _fit(reused, X, y, xn.Adam(1e-2), epochs=3, validation_data=(X, y))
    _without_reuse(monkeypatch)
    fresh = _model(reusing)
    assert _fit(fresh, X, y, xn.Adam(1e-2), epochs=3, validation_data=(X, y)) == loss_reused
    _assert_same(_host(reused), _host(fresh))


def _fits_with_changes(backends, batch_sizes=(32, 20, 32)):
    """Fit on each of ``backends`` in turn (``to()`` between), each with its batch size."""
    X, y = _data(n=90)
    model = _model(backends[0])
    opt = xn.SGD(lr=0.05, momentum=0.9)
    losses = []
    for backend, batch_size in zip(backends, batch_sizes, strict=True):
        model.to(backend)
        losses += _fit(model, X, y, opt, batch_size=batch_size)
    return model, losses


def test_to_between_fits_and_a_new_batch_size_equal_fresh_arrays(monkeypatch):
    moves = ("numpy", _backend_or_skip("torch"), "numpy")
    reused, losses = _fits_with_changes(moves)
    _without_reuse(monkeypatch)
    fresh, expected = _fits_with_changes(moves)
    assert losses == expected
    _assert_same(_host(reused), _host(fresh))


def test_a_step_after_to_has_the_new_backends_kernels():
    torch_b = _backend_or_skip("torch")
    model = _model("numpy")
    assert xn.Step(model, "mse", xn.SGD()).kernels.workspace is not None
    model.to(torch_b)  # torch's views do not hold their base: no workspace there
    assert xn.Step(model, "mse", xn.SGD()).kernels.workspace is None
    model.to("numpy")
    step = xn.Step(model, "cross_entropy", xn.SGD())
    X, y = _data()
    Xd = model.device_inputs(X)
    step(Xd, model.device_targets(y, "cross_entropy", Xd))
    kept = [a for pool in step.kernels.workspace._pools.values() for a in pool]
    assert kept and all(isinstance(a, np.ndarray) for a in kept)


def test_batch_size_change_matches_reference(reusing, monkeypatch):
    reused, losses = _fits_with_changes((reusing, reusing), batch_sizes=(32, 7))
    _without_reuse(monkeypatch)
    fresh, expected = _fits_with_changes((reusing, reusing), batch_sizes=(32, 7))
    assert losses == expected
    _assert_same(_host(reused), _host(fresh))


def _train_in_threads(backend, n_models=2):
    """Each model fits its own data in its own thread, all at the same time."""
    results: list = [None] * n_models
    errors: list = []
    start = threading.Barrier(n_models)

    def work(i):
        try:
            X, y = _data(n=150, seed=i)
            model = _model(backend)
            start.wait()
            losses = _fit(model, X, y, xn.Adam(1e-2), epochs=4, batch_size=16)
            results[i] = (losses, _host(model))
        except Exception as exc:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_two_models_in_two_threads_equal_fresh_arrays_trained_alone(reusing, monkeypatch):
    together = _train_in_threads(reusing)
    _without_reuse(monkeypatch)
    for i, (losses, params) in enumerate(together):
        X, y = _data(n=150, seed=i)
        alone = _model(reusing)
        assert _fit(alone, X, y, xn.Adam(1e-2), epochs=4, batch_size=16) == losses
        _assert_same(_host(alone), params)


def _shares(a, b) -> bool:
    return np.shares_memory(np.asarray(a), np.asarray(b))


def test_predict_and_loss_values_are_never_workspace_arrays(reusing):
    X, y = _data()
    model = _model(reusing)
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step = xn.Step(model, "cross_entropy", xn.SGD(lr=0.1))
    values = [step(Xd, Td) for _ in range(3)]  # the workspace now holds this batch's arrays
    before = model.backend.to_numpy(model.predict(X)).copy()
    predicted = model.predict(X)
    kept = [model.backend.to_numpy(a) for pool in step.kernels.workspace._pools.values()
            for a in pool]
    assert kept
    for a in kept:
        assert not _shares(model.backend.to_numpy(predicted), a)
        for v in values:
            assert not _shares(model.backend.to_numpy(v), a)
    assert len({float(v) for v in values}) == 3  # three different losses, not one buffer
    frozen = float(values[0])
    step(Xd, Td)  # a further step must not change what was handed out before it
    assert float(values[0]) == frozen
    np.testing.assert_array_equal(model.backend.to_numpy(predicted), before)


def test_jax_strict_and_torch_allocate_fresh_arrays():
    for name in ("jax", "array_api_strict", "torch"):
        try:
            backend = xn.backend.get(name)
        except xn.backend.BackendError:
            continue
        assert backend.kernels.for_step() is backend.kernels  # no workspace to write into
        assert backend.kernels.workspace is None
    with xn.fast_paths(False):  # the portable path reuses nothing on any backend
        assert xn.backend.get("numpy").kernels.for_step().workspace is None


def test_shared_kernels_never_hand_out_workspace_arrays():
    shared = xn.backend.get("numpy").kernels
    step_kernels = shared.for_step()
    assert shared.workspace is None and step_kernels is not shared
    X = np.ones((4, 3), np.float32)
    W = np.ones((3, 2), np.float32)
    assert step_kernels.linear(X, W, None) is not step_kernels.linear(X, W, None)  # no step


def test_small_batches_allocate_fresh_arrays_large_ones_reuse(monkeypatch):
    """Below ``MIN_ELEMENTS`` (batch x widest activation) the workspace is not started."""
    monkeypatch.setattr(Workspace, "MIN_ELEMENTS", 16 * 32)
    model = _model("numpy", sizes=(12, 32, 5))
    X, y = _data(n=16)
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step = xn.Step(model, "cross_entropy", xn.SGD())
    step(Xd[:15, ...], Td[:15, ...])  # 15 x 32 < 16 x 32
    assert step.kernels.workspace.nbytes == 0
    step(Xd, Td)
    assert step.kernels.workspace.nbytes > 0


def test_workspace_hands_out_only_arrays_nothing_else_holds():
    made = []

    def empty(shape, dtype, like):
        made.append(shape)
        return np.empty(shape, dtype)

    ws = Workspace(empty)
    ws.start("full")
    a = ws.take((4, 3), np.float32, None)
    b = ws.take((4, 3), np.float32, None)
    assert b is not a  # a is held here: never handed out twice
    view = a[1:, ...]
    del a
    assert ws.take((4, 3), np.float32, None) is not view.base  # a view holds its base
    assert len(made) == 3
    del view, b
    ws.take((4, 3), np.float32, None)  # two kept arrays are free now: no new one
    assert ws.take((4, 3), np.float64, None).dtype == np.float64  # another dtype: new
    assert len(made) == 4
    ws.stop()
    ws.start("ragged")
    ws.take((1, 3), np.float32, None)
    ws.stop()
    ws.start("full")  # the two most recent keys are both kept
    ws.take((4, 3), np.float32, None)
    assert len(made) == 5
    ws.stop()
    ws.start("third")  # evicts the least recently used: "ragged"
    ws.stop()
    ws.start("ragged")
    ws.take((1, 3), np.float32, None)
    ws.stop()
    assert len(made) == 6


def _step_peak_bytes(step, Xd, Td) -> int:
    """Peak traced memory above the start of one step (NumPy reports its array data)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step(Xd, Td)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("opt", [lambda: xn.SGD(lr=0.01), lambda: xn.Adam()])
def test_steady_state_step_allocates_nothing_batch_sized(opt):
    """After warm-up a NumPy step makes no array as large as a layer's activations.

    What is left is bounded by constants, not by batch x width: NumPy's ufunc iterator
    buffer for broadcast in-place operations (the bias add, the softmax's row division; at
    most 8192 elements), the loss's scalar, and the per-step dicts. Before reuse a step of
    this model peaked at 2.2 MB above its start (four batch x 512 float32 arrays live)."""
    sizes, batch = [256, 512, 512, 10], 256
    model = xn.mlp(sizes, seed=0, backend="numpy")
    X, y = _data(n=batch, n_in=sizes[0], n_out=sizes[-1])
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step = xn.Step(model, "cross_entropy", opt())
    for _ in range(3):
        step(Xd, Td)
    activation_bytes = batch * 512 * 4
    peak = min(_step_peak_bytes(step, Xd, Td) for _ in range(3))
    assert peak < activation_bytes / 4, f"a steady step peaked {peak} bytes above its start"


def test_step_peak_without_reuse_is_batch_sized(no_reuse):
    """The probe above can fail: the same step with fresh arrays peaks far above it."""
    sizes, batch = [256, 512, 512, 10], 256
    model = xn.mlp(sizes, seed=0, backend="numpy")
    X, y = _data(n=batch, n_in=sizes[0], n_out=sizes[-1])
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, "cross_entropy", Xd)
    step = xn.Step(model, "cross_entropy", xn.SGD(lr=0.01))
    step(Xd, Td)
    assert _step_peak_bytes(step, Xd, Td) > 2 * batch * 512 * 4


def test_torch_adam_scratch_gives_the_fresh_denominator():
    """The denominator goes into one kept array per thread: updates of two shapes in turn
    equal the same maths with a new array each time, bit for bit."""
    torch = pytest.importorskip("torch")
    kernels = _backend_or_skip("torch").kernels
    gen = torch.Generator().manual_seed(0)
    for shape in [(50,), (7, 3), (50,)]:
        p, g, m = (torch.randn(shape, generator=gen) for _ in range(3))
        v = torch.rand(shape, generator=gen)
        ref = [a.clone() for a in (p, g, m, v)]
        kernels.adam_(p, g, m, v, 0.9, 0.999, 1e-2, 0.3, 1e-8, 0.99)
        rp, rg, rm, rv = ref
        rm.mul_(0.9).add_(rg, alpha=0.1)
        rv.mul_(0.999).addcmul_(rg, rg, value=1.0 - 0.999)
        rp.mul_(0.99).addcdiv_(rm, torch.sqrt(rv).div_(0.3).add_(1e-8), value=-1e-2)
        for got, want in zip((p, m, v), (rp, rm, rv), strict=True):
            assert torch.equal(got, want)
