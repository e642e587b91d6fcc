"""Divergence stops training by name and keeps finite weights; clipnorm bounds the update."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import kernels as fast


def _regression(n=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = X @ rng.standard_normal((4, 1)) * 10.0
    return X, y


def _host(model) -> dict:
    return {k: model.backend.to_numpy(v).copy() for k, v in model.params.items()}


def _assert_bits_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def _diverge(backend, **kw):
    X, y = _regression()
    model = xn.mlp([4, 16, 1], seed=0, backend=backend)
    with pytest.raises(xn.DivergenceError) as info:
        model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=1e3), epochs=200, **kw)
    return model, info.value


def test_huge_lr_stops_with_epoch_and_batch_and_restores_the_last_finite_weights(backend):
    """Full batch, a check every step: the error names epoch e, and the model equals a fresh
    model trained for exactly e epochs (bit for bit), on the synchronous and the restore-point
    (JAX) paths alike."""
    model, err = _diverge(backend, batch_size=None, check_every=1)
    assert err.epoch is not None and err.batch == 0
    assert f"epoch {err.epoch + 1}, batch 1" in str(err)  # counted from 1, as progress lines
    assert err.epoch > 0, "the data should take a few steps to diverge"
    params = _host(model)
    assert all(np.all(np.isfinite(v)) for v in params.values())
    X, y = _regression()
    fresh = xn.mlp([4, 16, 1], seed=0, backend=backend)
    fresh.fit(X, y, loss="mse", optimizer=xn.SGD(lr=1e3), epochs=err.epoch, batch_size=None)
    _assert_bits_equal(params, _host(fresh))


def test_divergence_on_minibatches_keeps_finite_weights(backend):
    """Default check interval: the per-step path keeps the weights of the batch before; the
    periodic path (JAX, GPUs) restores its last restore point; both end finite."""
    model, err = _diverge(backend, batch_size=4)
    assert "epoch" in str(err) and "batch" in str(err)
    assert all(np.all(np.isfinite(v)) for v in _host(model).values())


class _Recorder(xn.Callback):
    def on_train_begin(self, logs):
        self.seen = [_host(self.model)]

    def on_batch_end(self, batch, logs):
        self.seen.append(_host(self.model))


@pytest.mark.parametrize("name", ["numpy", "torch", "array_api_strict"])
def test_synchronous_backends_keep_the_weights_of_the_step_before(name):
    if name not in xn.available():
        pytest.skip(f"{name} is not installed")
    X, y = _regression()
    model = xn.mlp([4, 16, 1], seed=0, backend=name)
    recorder = _Recorder()
    with pytest.raises(xn.DivergenceError, match="before that update"):
        model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=1e2), epochs=100, batch_size=4,
                  callbacks=[recorder])
    _assert_bits_equal(_host(model), recorder.seen[-1])


def test_overflowing_optimizer_state_restores_weights_and_state():
    """Adam's second moment overflows (g * g) before the loss does: found at the epoch-end
    check, which restores the weights and optimizer state of the start of the fit."""
    X, y = _regression()
    model = xn.mlp([4, 16, 1], seed=0)
    start = _host(model)
    with pytest.raises(xn.DivergenceError, match="restored .* the start of this fit"):
        model.fit(X, y, loss="mse", optimizer=xn.Adam(lr=1e6), epochs=100, batch_size=4)
    _assert_bits_equal(_host(model), start)
    assert model.optimizer.state_arrays() == {} and model.optimizer.iterations == 0


def test_finite_but_huge_values_are_not_divergence():
    """Summing 3e38 twice overflows float32; the check must not call that divergence."""
    backend = xn.backend.get("numpy")
    for kernels in (backend.kernels, fast.Portable(backend.xp, inplace=True)):
        big = np.full(4, 3e38, dtype="float32")
        assert kernels.all_finite(np.float32(1.0), [big, big])
        assert not kernels.all_finite(np.float32(1.0),
                                      [big, np.array([np.inf], dtype="float32")])
        assert not kernels.all_finite(np.float32(np.nan), [big])


def test_a_loss_that_overflows_on_the_first_step_keeps_the_given_weights():
    X, y = _regression()
    model = xn.mlp([4, 1], seed=0)
    model.set_params({"0.W": np.full((4, 1), 3e19), "0.b": np.zeros(1)})
    with pytest.raises(xn.DivergenceError, match=r"epoch 1, batch 1"):
        model.fit(X, y, loss="mse", optimizer="sgd", lr=0.1, epochs=1, batch_size=8)
    np.testing.assert_array_equal(_host(model)["0.W"], np.full((4, 1), 3e19, dtype="float32"))


# --------------------------------------------------------------------------- clipnorm


def test_clipnorm_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((5, 3)) * 4, "b": rng.standard_normal(3)}
    opt = xn.SGD(lr=0.1, clipnorm=1.5)
    ours = opt.clip(grads, xn.backend.get("numpy", dtype="float64").xp)
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
               for g in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.asarray(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.5)
    for t, g in zip(tensors, ours.values(), strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14, atol=0)


def test_clipnorm_leaves_small_gradients_alone():
    grads = {"a": np.full(4, 0.1)}
    out = xn.SGD(lr=0.1, clipnorm=10.0).clip(grads, xn.backend.get("numpy").xp)
    np.testing.assert_array_equal(out["a"], grads["a"])


@pytest.mark.parametrize("clipnorm", [0.01, 0.5])
def test_clipnorm_bounds_the_sgd_update(backend, clipnorm):
    X, y = _regression()
    model = xn.mlp([4, 16, 1], seed=0, backend=backend)
    before = _host(model)
    _, grads = model.loss_and_grads(X, y, loss="mse")
    raw = np.sqrt(sum(float(np.sum(backend.to_numpy(g).astype("float64") ** 2))
                      for g in grads.values()))
    assert raw > clipnorm  # so the bound is what is being tested
    lr = 0.5
    model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=lr, clipnorm=clipnorm), epochs=1,
              batch_size=None)
    after = _host(model)
    step = np.sqrt(sum(np.sum((after[k].astype("float64") - before[k]) ** 2) for k in before))
    np.testing.assert_allclose(step, lr * clipnorm, rtol=1e-4)


def test_clipnorm_keeps_a_huge_learning_rate_finite_for_longer():
    X, y = _regression()
    model = xn.mlp([4, 16, 1], seed=0)
    model.fit(X, y, loss="mse", optimizer=xn.SGD(lr=1e3, clipnorm=1e-4), epochs=5, batch_size=8)
    assert all(np.all(np.isfinite(v)) for v in _host(model).values())
