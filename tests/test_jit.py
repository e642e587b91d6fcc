"""The traced JAX step (xpnet.train.traced) trains exactly as the eager JAX step does.

Each case fits twice from the same seed: once with the traced step and once eagerly
(``xn.fast_paths(False)`` turns the traced step off; JAX's eager kernels are the portable ones
either way), then compares parameters, optimizer state, iterations and loss history.

Tolerances: float64 ``rtol=1e-12, atol=1e-13`` (both paths run the same maths in double
precision; only XLA's fusion of the traced graph may reorder a few operations; measured:
at most 6e-16 apart). float32 ``rtol=2e-5, atol=2e-6``: inside the trace XLA fuses
element-wise chains (FMA contraction, another reduction order), and the optimizer's
scalars (Adam's bias corrections ``1 - b ** t``, ``lr * weight_decay``) are computed in
float32 on the device instead of in float64 on the host, so each step may differ by a few
float32 ulps; after these 12 steps they were at most 2.4e-7 apart (2 ulps near 1), and the
bounds leave 10x room for other CPUs. A real difference in the update (a stale lr or
``t``, a missed weight decay) moves the weights by orders of magnitude more.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.nn import losses
from xpnet.train import traced as jit

jax = pytest.importorskip("jax")

TOL = {"float32": {"rtol": 2e-5, "atol": 2e-6}, "float64": {"rtol": 1e-12, "atol": 1e-13}}

OPTIMIZERS = {
    "sgd": lambda: xn.SGD(lr=0.05),
    "sgd-nesterov-wd": lambda: xn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-wd": lambda: xn.Adam(lr=1e-2, weight_decay=1e-2),
    "adam-wd-clipnorm": lambda: xn.Adam(lr=1e-2, weight_decay=1e-2, clipnorm=0.5),
    "sgd-dampening": lambda: xn.SGD(lr=0.05, momentum=0.9, dampening=0.2),
    "adamw-amsgrad": lambda: xn.AdamW(lr=1e-2, amsgrad=True),
    "rmsprop-all": lambda: xn.RMSprop(lr=1e-2, momentum=0.5, centered=True, weight_decay=1e-2),
    "adagrad-all": lambda: xn.Adagrad(lr=0.05, lr_decay=0.1, weight_decay=1e-2,
                                      initial_accumulator_value=0.1),
}
# every optimizer meets every loss across the parametrization without a full cross product
CASES = [("sgd", "mse"), ("sgd-nesterov-wd", "cross_entropy"),
         ("adam-wd", "binary_cross_entropy"), ("adam-wd-clipnorm", "cross_entropy"),
         ("sgd-dampening", "mse"), ("adamw-amsgrad", "cross_entropy"),
         ("rmsprop-all", "binary_cross_entropy"), ("adagrad-all", "mse")]


def _data(loss, n=40, n_in=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if loss == "mse":
        return X, rng.standard_normal((n, 2)), 2
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (n, 1)).astype(np.float64), 1
    return X, rng.integers(0, 3, n), 3


def _fit(monkeypatch, traced, loss, opt_name, dtype, callbacks=(), epochs=4):
    xn.fast_paths(traced)
    X, y, n_out = _data(loss)
    model = xn.mlp([X.shape[1], 8, n_out], activation="tanh", seed=3, backend="jax",
                   dtype=dtype)
    opt = OPTIMIZERS[opt_name]()
    assert (jit.compiled_step(model, losses.resolve(loss), opt) is not None) == traced
    # 40 samples in batches of 16: the last batch of every epoch is short (8)
    history = model.fit(X, y, loss=loss, optimizer=opt, epochs=epochs, batch_size=16, seed=7,
                        callbacks=list(callbacks))
    return model, opt, history


def _host(d: dict) -> dict:
    return {k: np.asarray(v) for k, v in d.items()}


def _assert_same_training(a, b, tol):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    pa, pb = _host(model_a.params), _host(model_b.params)
    assert list(pa) == list(pb)  # the model's own order, not a pytree's sorted one
    for k in pa:
        assert pa[k].dtype == pb[k].dtype
        np.testing.assert_allclose(pa[k], pb[k], err_msg=k, **tol)
    sa, sb = _host(opt_a.state_arrays()), _host(opt_b.state_arrays())
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], err_msg=k, **tol)
    assert opt_a.iterations == opt_b.iterations
    np.testing.assert_allclose(hist_a.history["loss"], hist_b.history["loss"], **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name,loss", CASES)
def test_traced_fit_matches_eager_fit(monkeypatch, opt_name, loss, dtype):
    traced = _fit(monkeypatch, True, loss, opt_name, dtype)
    eager = _fit(monkeypatch, False, loss, opt_name, dtype)
    assert traced[1].iterations == 4 * 3
    _assert_same_training(traced, eager, TOL[dtype])


def test_a_learning_rate_schedule_takes_effect_in_the_traced_step(monkeypatch):
    def schedule():
        return xn.LearningRateScheduler(lambda epoch, lr: 0.05 / (1 + 3 * epoch))

    traced = _fit(monkeypatch, True, "cross_entropy", "adam-wd", "float64", [schedule()])
    eager = _fit(monkeypatch, False, "cross_entropy", "adam-wd", "float64", [schedule()])
    _assert_same_training(traced, eager, TOL["float64"])
    assert traced[1].lr == pytest.approx(0.05 / 10)
    # and the schedule did move the weights (a stale traced lr would leave them as here)
    fixed = _fit(monkeypatch, True, "cross_entropy", "adam-wd", "float64")
    assert not np.allclose(_host(traced[0].params)["0.W"], _host(fixed[0].params)["0.W"])


def test_each_batch_shape_compiles_once_and_lr_is_not_in_the_key(monkeypatch):
    xn.fast_paths(True)
    X, y, _ = _data("mse")
    model = xn.mlp([5, 6, 2], seed=0, backend="jax", dtype="float64")
    fn = None
    for lr in (0.1, 0.01):  # a new optimizer with another lr reuses the compiled step
        opt = xn.SGD(lr=lr, momentum=0.3)
        model.fit(X, y, optimizer=opt, epochs=3, batch_size=16)
        fn = jit._cache[jit._key(model, losses.LOSSES["mse"], opt)]
    assert fn._cache_size() == 2  # batches of 16 and the short last one of 8, not per epoch


def test_a_second_fit_continues_the_optimizer_state(monkeypatch):
    runs = []
    for traced in (True, False):
        model, opt, _ = _fit(monkeypatch, traced, "mse", "adam-wd", "float64", epochs=2)
        X, y, _ = _data("mse", seed=1)
        history = model.fit(X, y, optimizer=opt, epochs=2, batch_size=16)
        runs.append((model, opt, history))
    _assert_same_training(*runs, TOL["float64"])


def test_the_traced_step_applies_only_where_it_is_pure(monkeypatch):
    xn.fast_paths(True)
    loss = losses.LOSSES["mse"]
    assert jit.compiled_step(xn.mlp([3, 4, 1], backend="jax"), loss, xn.SGD()) is not None
    # dropout masks come from the host RNG; other backends have their own fast paths
    assert jit.compiled_step(xn.mlp([3, 4, 1], dropout=0.2, backend="jax"), loss,
                             xn.SGD()) is None
    assert jit.compiled_step(xn.mlp([3, 4, 1], dropout=0.0, backend="jax"), loss,
                             xn.SGD()) is not None
    assert jit.compiled_step(xn.mlp([3, 4, 1], backend="numpy"), loss, xn.SGD()) is None

    class MySGD(xn.SGD):  # a subclass may keep state on the host: stay eager
        pass

    assert jit.compiled_step(xn.mlp([3, 4, 1], backend="jax"), loss, MySGD()) is None
    xn.fast_paths(False)
    assert jit.compiled_step(xn.mlp([3, 4, 1], backend="jax"), loss, xn.SGD()) is None


def test_divergence_restores_finite_weights_on_the_traced_path(monkeypatch):
    xn.fast_paths(True)
    X, y, _ = _data("mse")
    model = xn.mlp([5, 16, 2], seed=0, backend="jax")
    assert jit.compiled_step(model, losses.LOSSES["mse"], xn.SGD(lr=1e12)) is not None
    with pytest.raises(xn.DivergenceError):
        model.fit(X * 1e3, y, optimizer=xn.SGD(lr=1e12), epochs=5, batch_size=8,
                  check_every=2)
    for v in _host(model.params).values():
        assert np.isfinite(v).all()
