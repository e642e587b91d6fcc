"""Every backend fast path (xpnet.backend.kernels) computes what the portable path computes."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import kernels as fast
from xpnet.backend import to_numpy
from xpnet.nn import losses
from xpnet.nn.layers import Pass

RTOL, ATOL = 2e-5, 1e-6


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _close(a, b):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=RTOL, atol=ATOL)


def _portable(backend):
    return fast.Portable(backend.xp, backend.inplace)


@pytest.fixture
def pair(backend):
    """(fast kernels, portable kernels) of one backend."""
    return backend.kernels, _portable(backend)


def test_selection_by_capability(backend, monkeypatch):
    expected = {"numpy": fast.NumPyKernels, "torch": fast.TorchKernels, "cupy": fast.CuPyKernels}
    assert type(backend.kernels) is expected.get(backend.name, fast.Portable)
    with xn.fast_paths(False):
        assert type(backend.kernels) is fast.Portable
    assert type(backend.kernels) is expected.get(backend.name, fast.Portable)
    monkeypatch.setenv("XPNET_FAST", "0")  # the environment sets the starting value
    assert type(backend.kernels) is fast.Portable


@pytest.mark.parametrize("bias", [True, False])
def test_linear(backend, pair, bias):
    rng = np.random.default_rng(1)
    X, W, b = (backend.asarray(_rand(rng, *s)) for s in ((7, 5), (5, 3), (3,)))
    ours, ref = (k.linear(X, W, b if bias else None) for k in pair)
    _close(ours, ref)
    _close(ours, to_numpy(X) @ to_numpy(W) + (to_numpy(b) if bias else 0.0))


@pytest.mark.parametrize("overwrite", [False, True])
def test_relu_and_its_gradient(backend, pair, overwrite):
    rng = np.random.default_rng(2)
    host = _rand(rng, 9, 6)
    kernels, portable = pair
    X = backend.asarray(host)
    if kernels.relu is None:
        pytest.skip(f"{backend.name} has no fused ReLU: the layer's own maths runs")
    Y = kernels.relu(X, overwrite=overwrite)
    _close(Y, np.maximum(host, 0.0))
    if not overwrite or not backend.inplace:
        _close(X, host)  # the caller's array is untouched unless it said it may be overwritten
    dY = backend.asarray(_rand(rng, 9, 6))
    if kernels.relu_grad is not None:
        _close(kernels.relu_grad(dY, Y), np.where(host > 0, to_numpy(dY), 0.0))
    assert portable.relu is None and portable.relu_grad is None  # the layer's maths runs
    # the layer with and without the fused kernels
    layer, dY_host = xn.ReLU(), to_numpy(dY)
    for kernels_ in pair:
        ctx = Pass(backend.xp, backend, kernels=kernels_)
        out, back = layer.forward({}, backend.asarray(host), ctx)
        _close(out, np.maximum(host, 0.0))
        _close(back(backend.asarray(dY_host))[0], np.where(host > 0, dY_host, 0.0))


@pytest.mark.parametrize("size", [(3, 4), (300, 700)])  # (300, 700) takes the blockwise path
def test_sgd_update_in_place(backend, pair, size):
    if not backend.inplace:
        pytest.skip(f"{backend.name} arrays are immutable: updates are functional there")
    rng = np.random.default_rng(3)
    p0, g = _rand(rng, *size), _rand(rng, *size)
    kernels, portable = pair
    p_fast, p_ref = backend.asarray(p0), backend.asarray(p0)
    out = kernels.sgd_(p_fast, backend.asarray(g), 0.1)
    portable.sgd_(p_ref, backend.asarray(g), 0.1)
    assert out is p_fast
    _close(p_fast, p_ref)
    _close(p_fast, p0 - np.float32(0.1) * g)


@pytest.mark.parametrize("targets", ["onehot", "probabilities"])
def test_cross_entropy_matches_the_loss_module(backend, pair, targets):
    rng = np.random.default_rng(4)
    Z = _rand(rng, 8, 5) * 10.0
    if targets == "onehot":
        T = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 8)]
    else:
        T = rng.dirichlet(np.ones(5), 8).astype(np.float32)
    Zd, Td = backend.asarray(Z), backend.asarray(T)
    entry = losses.LOSSES["cross_entropy"]
    ref_loss, ref_grad = entry(backend.xp, Zd, Td)
    for kernels in pair:
        loss, grad = entry.value_and_grad(kernels, backend.xp, Zd, Td)  # fused where offered
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
        _close(grad, ref_grad)
    _close(Zd, Z)  # the logits are not overwritten (evaluate reads them after the loss)


def test_training_with_fast_paths_matches_portable(backend):
    rng = np.random.default_rng(5)
    X, y = _rand(rng, 32, 6), rng.integers(0, 3, 32)
    runs = []
    for use_fast in (True, False):
        model = xn.mlp([6, 16, 16, 3], seed=0, backend=backend)
        with xn.fast_paths(use_fast):
            model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1, momentum=0.9),
                      epochs=3, batch_size=8, seed=0)
        runs.append({k: to_numpy(v) for k, v in model.params.items()})
    for name in runs[0]:
        np.testing.assert_allclose(runs[0][name], runs[1][name], rtol=1e-4, atol=1e-5)


def test_in_place_relu_never_touches_arrays_the_caller_holds(backend):
    rng = np.random.default_rng(6)
    host = _rand(rng, 5, 4)
    X = backend.asarray(host)
    first = xn.Sequential(xn.ReLU(), xn.Dense(4, 2), backend=backend)  # ReLU sees the user's X
    first.predict(X)
    _close(X, host)
    after_sigmoid = xn.Sequential(xn.Dense(4, 4), xn.Sigmoid(), xn.ReLU(), xn.Dense(4, 2),
                                  backend=backend, seed=0)
    Y, backprops = after_sigmoid.forward(X)
    ref = xn.Sequential(xn.Dense(4, 4), xn.Sigmoid(), xn.ReLU(), xn.Dense(4, 2),
                        backend=backend, seed=0)
    portable = _portable(backend)
    _close(Y, ref.forward(X, kernels=portable)[0])
    grads = after_sigmoid.backward(backend.asarray(np.ones((5, 2), np.float32)), backprops)
    ref_Y, ref_back = ref.forward(X, kernels=portable)
    ref_grads = ref.backward(backend.asarray(np.ones((5, 2), np.float32)), ref_back)
    for name in grads:
        _close(grads[name], ref_grads[name])


@pytest.mark.gpu
def test_cupy_kernels_match_portable(gpu_backend):
    kernels, portable = gpu_backend.kernels, _portable(gpu_backend)
    assert isinstance(kernels, fast.CuPyKernels)
    rng = np.random.default_rng(7)
    X, W, b = (gpu_backend.asarray(_rand(rng, *s)) for s in ((64, 32), (32, 16), (16,)))
    _close(kernels.linear(X, W, b), portable.linear(X, W, b))
    Y = kernels.relu(X @ W, overwrite=True)
    dY = gpu_backend.asarray(_rand(rng, 64, 16))
    _close(kernels.relu_grad(dY, Y), portable.relu_grad(dY, Y))
    T = gpu_backend.asarray(np.eye(16, dtype=np.float32)[rng.integers(0, 16, 64)])
    reference = losses.LOSSES["cross_entropy"](gpu_backend.xp, Y, T)
    for a, b_ in zip(kernels.cross_entropy(Y, T), reference, strict=True):
        _close(a, b_)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite_matches_portable(backend, pair, bad):
    rng = np.random.default_rng(8)
    arrays = [_rand(rng, 6, 5), _rand(rng, 5), _rand(rng, 300, 300),  # 300x300: BLAS path
              _rand(rng, 4, 7)[:, 1:4]]
    if bad is not None:
        arrays[int(rng.integers(0, 4))][..., -1] = bad
    device = [backend.asarray(a) for a in arrays]
    value = backend.asarray(np.float32(1.5))
    expected = bad is None
    for kernels in pair:
        assert kernels.all_finite(value, device) is expected
    huge = [backend.asarray(np.full((4, 4), 3e38, np.float32))]  # its sum overflows: still finite
    for kernels in pair:
        assert kernels.all_finite(value, huge) is True
        assert kernels.all_finite(backend.asarray(np.float32(np.nan)), device[:1]) is False


def test_optimizer_keeps_no_kernels_after_a_step(backend):
    import copy

    rng = np.random.default_rng(9)
    opt = xn.SGD(lr=0.1, momentum=0.9)
    model = xn.mlp([4, 8, 2], seed=0, backend=backend)
    model.fit(_rand(rng, 16, 4), rng.integers(0, 2, 16), loss="cross_entropy", optimizer=opt,
              epochs=1, batch_size=8)
    twin = copy.deepcopy(opt)  # sklearn's clone deep-copies optimizers; modules cannot be
    assert twin.config() == opt.config() and twin.iterations == opt.iterations == 2


@pytest.mark.parametrize("size", [(3, 4), (300, 700)])
@pytest.mark.parametrize("keep, take", [(0.9, 0.1), (1.0, 1.0)])  # RMSprop's, Adagrad's
def test_adaptive_update_halves_in_place(backend, pair, size, keep, take):
    """The adaptive optimizers' fused halves (torch: addcmul_, addcdiv_) equal the portable
    maths and the closed forms s = keep s + take g^2 and p -= lr g / d."""
    if not backend.inplace:
        pytest.skip(f"{backend.name} arrays are immutable: updates are functional there")
    rng = np.random.default_rng(10)
    s0, g, p0 = _rand(rng, *size) ** 2, _rand(rng, *size), _rand(rng, *size)
    d = np.sqrt(s0) + np.float32(0.5)
    results = []
    for kernels in pair:
        s, p = backend.asarray(s0), backend.asarray(p0)
        assert kernels.square_average_(s, backend.asarray(g), keep, take) is s
        assert kernels.divide_step_(p, backend.asarray(g), backend.asarray(d), 0.1) is p
        results.append((s, p))
    (s_fast, p_fast), (s_ref, p_ref) = results
    _close(s_fast, s_ref)
    _close(p_fast, p_ref)
    _close(results[0][0], np.float32(keep) * s0 + np.float32(take) * g * g)
    _close(results[0][1], p0 - np.float32(0.1) * (g / d))
