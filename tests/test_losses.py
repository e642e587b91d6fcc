"""The Huber and L1 losses against torch.nn, and user losses (Loss objects, callables).

Values and gradients are checked in float64 against ``torch.nn.HuberLoss``/``L1Loss`` on
every backend, per-sample weights against torch's unreduced loss weighted by hand, and
each gradient against central finite differences. Targets are drawn so that no residual
sits within the finite-difference step of a kink (0 for l1, +-delta for huber).
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet import cli
from xpnet.backend import to_numpy
from xpnet.nn import losses
from xpnet.testing import check_grads
from xpnet.train import traced

DELTAS = [1.0, 2.0, 0.3]


def _residuals(seed=0, shape=(7, 3)):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal(shape) * 2.0
    T = rng.standard_normal(shape)
    return Y, T


def _torch_loss(kind, delta, Y, T, reduction="mean"):
    torch = pytest.importorskip("torch")
    Yt = torch.tensor(Y, requires_grad=True)
    fn = (torch.nn.HuberLoss(delta=delta, reduction=reduction) if kind == "huber"
          else torch.nn.L1Loss(reduction=reduction))
    return fn(Yt, torch.tensor(T)), Yt


def _ours(kind, delta):
    if kind == "l1":
        return losses.resolve("l1")
    return losses.resolve("huber") if delta == 1.0 else xn.losses.Huber(delta=delta)


CASES = [("huber", d) for d in DELTAS] + [("l1", None)]
IDS = [f"huber-{d}" for d in DELTAS] + ["l1"]


@pytest.mark.parametrize("kind, delta", CASES, ids=IDS)
def test_value_and_gradient_match_torch(backend64, kind, delta):
    Y, T = _residuals()
    ref, Yt = _torch_loss(kind, delta, Y, T)
    ref.backward()
    value, dY = _ours(kind, delta)(backend64.xp, backend64.asarray(Y), backend64.asarray(T))
    assert dY.dtype == backend64.dtype and tuple(dY.shape) == Y.shape
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dY), Yt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind, delta", CASES, ids=IDS)
def test_sample_weights_weight_each_samples_mean_loss(backend64, kind, delta):
    Y, T = _residuals(1)
    w = np.random.default_rng(2).uniform(0.0, 3.0, Y.shape[0])
    per, Yt = _torch_loss(kind, delta, Y, T, reduction="none")
    torch = pytest.importorskip("torch")
    wt = torch.tensor(w / w.sum())
    ref = (per.mean(dim=1) * wt).sum()  # sum_i w_i l_i / sum_i w_i, l_i over the outputs
    ref.backward()
    value, dY = _ours(kind, delta)(backend64.xp, backend64.asarray(Y), backend64.asarray(T),
                                   backend64.asarray(w / w.sum()))
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dY), Yt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind, delta", CASES, ids=IDS)
def test_gradient_matches_finite_differences(backend64, kind, delta):
    Y, T = _residuals(3)
    loss, xp, Td = _ours(kind, delta), backend64.xp, backend64.asarray(T)
    _, dY = loss(xp, backend64.asarray(Y), Td)
    h = 1e-6
    numeric = np.zeros_like(Y)
    for index in np.ndindex(*Y.shape):
        up, down = Y.copy(), Y.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (float(loss(xp, backend64.asarray(up), Td)[0])
                          - float(loss(xp, backend64.asarray(down), Td)[0])) / (2 * h)
    np.testing.assert_allclose(to_numpy(dY), numeric, rtol=1e-6, atol=1e-9)


def test_the_registry_and_the_public_module():
    assert {"huber", "l1"} <= set(losses.LOSSES)
    assert xn.losses is losses and xn.losses.Huber().config() == {"delta": 1.0}
    assert not losses.LOSSES["huber"].classification and not losses.LOSSES["l1"].classification
    assert repr(xn.losses.Huber(delta=2.0)) == "Huber(delta=2.0)"
    assert xn.losses.Huber(delta=2.0).builtin
    for bad in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="Huber: delta"):
            xn.losses.Huber(delta=bad)
    with pytest.raises(ValueError, match="class, not a loss"):
        losses.resolve(xn.losses.Huber)


def _regression(n=40, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.standard_normal((n, 1))
    return X, y


@pytest.mark.parametrize("loss", ["huber", "l1", xn.losses.Huber(delta=0.5)],
                         ids=["huber", "l1", "huber-0.5"])
def test_fit_and_evaluate_with_the_new_losses(loss):
    X, y = _regression()
    model = xn.mlp([3, 8, 1], seed=0, backend="numpy", dtype="float64")
    history = model.fit(X, y, loss=loss, optimizer=xn.Adam(lr=0.02), epochs=30, batch_size=8)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    scores = model.evaluate(X, y, loss=loss)
    assert set(scores) == {"loss", "mse", "mae", "r2"} and scores["r2"] > 0.5
    Y = to_numpy(model.predict(X))
    ref, _ = _torch_loss("l1" if loss == "l1" else "huber",
                         getattr(loss, "config", lambda: {"delta": 1.0})().get("delta"), Y, y)
    assert scores["loss"] == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(scores["mae"], np.mean(np.abs(Y - y)), rtol=1e-12)


def my_mse(xp, Y, T):
    D = Y - T
    n = D.shape[0] * D.shape[1]
    return xp.sum(D * D) / n, D * (2.0 / n)


def test_a_callable_loss_trains_as_the_built_in_one(backend):
    X, y = _regression()
    runs = []
    for loss in ("mse", my_mse):
        model = xn.mlp([3, 4, 1], seed=0, backend=backend)
        model.fit(X, y, loss=loss, optimizer=xn.SGD(lr=0.05), epochs=3, batch_size=8)
        runs.append({k: to_numpy(v) for k, v in model.params.items()})
        assert model.evaluate(X, y, loss=loss)["mse"] >= 0.0
    for k in runs[0]:
        np.testing.assert_allclose(runs[0][k], runs[1][k], rtol=2e-5, atol=1e-6)


def test_a_callable_and_a_parametrised_loss_under_the_traced_step():
    pytest.importorskip("jax")
    model = xn.mlp([3, 4, 1], seed=0, backend="jax")
    opt = xn.SGD(lr=0.1)
    assert traced.compiled_step(model, losses.resolve(my_mse), opt) is None  # a user's: eager
    assert traced.compiled_step(model, xn.losses.Huber(delta=0.5), opt) is not None
    X, y = _regression()
    runs = []
    for fast in (True, False):  # traced, then eager
        with xn.fast_paths(fast):
            m = xn.mlp([3, 4, 1], seed=0, backend="jax", dtype="float64")
            m.fit(X, y, loss=xn.losses.Huber(delta=0.5), optimizer=xn.SGD(lr=0.1), epochs=2,
                  batch_size=8)
            runs.append({k: to_numpy(v) for k, v in m.params.items()})
    for k in runs[0]:
        np.testing.assert_allclose(runs[0][k], runs[1][k], rtol=1e-12, atol=1e-13)
    # a different delta is a different trace, not the cached one
    key = traced._key(model, xn.losses.Huber(delta=0.5), opt)
    assert key != traced._key(model, xn.losses.Huber(delta=2.0), opt)


def _wrong_dY_shape(xp, Y, T):
    return xp.sum(Y), xp.sum(Y, axis=1)


def _wrong_loss_shape(xp, Y, T):
    return Y - T, Y - T


def _not_a_pair(xp, Y, T):
    return xp.sum(Y)


def _wrong_dtype(xp, Y, T):
    return xp.sum(Y), xp.astype(Y, xp.float32 if Y.dtype == xp.float64 else xp.float64)


@pytest.mark.parametrize("fn, needles", [
    (_wrong_dY_shape, ["_wrong_dY_shape", "dY", "(40, 1)", "(40,)"]),
    (_wrong_loss_shape, ["_wrong_loss_shape", "0-d", "(40, 1)"]),
    (_not_a_pair, ["_not_a_pair", "pair"]),
    (_wrong_dtype, ["_wrong_dtype", "dtype"]),
])
def test_a_callable_returning_the_wrong_thing_is_named_before_any_update(fn, needles):
    X, y = _regression()
    model = xn.mlp([3, 4, 1], seed=0, backend="numpy")
    before = {k: to_numpy(v).copy() for k, v in model.params.items()}
    with pytest.raises(ValueError) as info:
        model.fit(X, y, loss=fn, optimizer=xn.SGD(lr=0.1), epochs=1, batch_size=None)
    for needle in needles:
        assert needle in str(info.value)
    for k, v in model.params.items():
        np.testing.assert_array_equal(to_numpy(v), before[k])


def test_a_callable_loss_refuses_sample_weights():
    backend = xn.backend.get("numpy", dtype="float64")
    Y, T = _residuals()
    w = backend.asarray(np.full(Y.shape[0], 1.0 / Y.shape[0]))
    with pytest.raises(ValueError, match="my_mse.*per-sample weights"):
        losses.resolve(my_mse)(backend.xp, backend.asarray(Y), backend.asarray(T), w)


def test_check_grads_checks_a_custom_loss_as_a_layer():
    X, y = _regression(12)
    model = xn.mlp([3, 4, 1], seed=0, backend="numpy")
    report = check_grads(model, X, y, loss=my_mse)
    assert report.passed and "custom loss 'my_mse'" in report.errors
    assert set(check_grads(model, X, y, loss="mse").errors) == set(model.params)

    def off_by_two(xp, Y, T):  # the value of mse, the gradient of twice it
        value, dY = my_mse(xp, Y, T)
        return value, dY * 2.0

    with pytest.raises(AssertionError, match="off_by_two"):
        check_grads(model, X, y, loss=off_by_two)


@pytest.mark.parametrize("loss", ["huber", "l1"])
def test_the_command_line_trains_with_the_new_losses(loss, capsys, tmp_path):
    X, y = _regression()
    np.savetxt(tmp_path / "line.csv", np.column_stack([X, y]), delimiter=",")
    assert cli.main(["train", "--data", str(tmp_path / "line.csv"), "--epochs", "2",
                     "--layers", "4", "--loss", loss]) == 0
    out = capsys.readouterr().out
    assert f"loss {loss}" in out and "regression" in out and "accuracy" not in out
