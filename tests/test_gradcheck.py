"""float64 central finite-difference checks of every layer and loss, on every backend.

Each check compares the analytic gradient (a layer's ``backprop`` closure, a loss's ``dY``,
``Sequential.loss_and_grads``) with ``(f(x + h) - f(x - h)) / 2h`` taken element by element
on the host, for weights, biases and inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.nn import losses
from xpnet.nn.layers import Pass

STEP = 1e-6
# Central differences in float64 with h = 1e-6: truncation ~h^2 * f''' (about 1e-12 here) and
# rounding ~1e-16 / h (about 1e-10), so 1e-6 relative leaves ample room yet catches any
# wrong term (a missing factor or sign gives errors of order 1).
RTOL, ATOL = 1e-6, 1e-8


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """d f / d x by central differences; ``f`` takes a host float64 array, returns a float."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + STEP
        up = f(x)
        x[i] = saved - STEP
        down = f(x)
        x[i] = saved
        grad[i] = (up - down) / (2 * STEP)
    return grad


def away_from_zero(rng, shape, low=0.2, high=1.5):
    """Values with |x| in [low, high]: no ReLU/LeakyReLU kink inside x +- STEP."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def _layer_cases():
    return [
        pytest.param(lambda: xn.Dense(3, 2), id="Dense"),
        pytest.param(lambda: xn.Dense(3, 2, bias=False), id="Dense-nobias"),
        pytest.param(xn.ReLU, id="ReLU"),
        pytest.param(lambda: xn.LeakyReLU(0.1), id="LeakyReLU"),
        pytest.param(xn.Sigmoid, id="Sigmoid"),
        pytest.param(xn.Tanh, id="Tanh"),
        pytest.param(xn.GELU, id="GELU"),
        pytest.param(xn.Softmax, id="Softmax"),
        pytest.param(xn.Identity, id="Identity"),
        pytest.param(lambda: xn.Dropout(0.4), id="Dropout"),
    ]


@pytest.mark.parametrize("make_layer", _layer_cases())
def test_layer_gradients_match_finite_differences(backend64, make_layer):
    layer = make_layer()
    rng = np.random.default_rng(1)
    X = away_from_zero(rng, (4, 3))
    host_params = {k: v.astype(np.float64) for k, v in layer.init_params(rng, "glorot").items()}
    if "b" in host_params:  # zero biases would hide a wrong bias gradient's scale
        host_params["b"] = rng.uniform(-0.5, 0.5, host_params["b"].shape)
    n_out = layer.out_width(3)
    G = rng.standard_normal((4, n_out))  # the objective is sum(Y * G), so dY = G

    def ctx():
        # Dropout draws its mask from this rng: re-seeding gives the same mask every call.
        return Pass(backend64.xp, backend64, training=True, rng=np.random.default_rng(7))

    def device(params):
        return {k: backend64.asarray(v) for k, v in params.items()}

    def objective(params, X_host):
        Y, _ = layer.forward(device(params), backend64.asarray(X_host), ctx())
        return float(np.sum(backend64.to_numpy(Y) * G))

    Y, backprop = layer.forward(device(host_params), backend64.asarray(X), ctx())
    assert Y.dtype == backend64.dtype
    dX, grads = backprop(backend64.asarray(G), need_dX=True)
    assert set(grads) == set(host_params)

    expected_dX = numeric_grad(lambda x: objective(host_params, x), X.copy())
    np.testing.assert_allclose(backend64.to_numpy(dX), expected_dX, rtol=RTOL, atol=ATOL)
    for name, value in host_params.items():
        def with_param(p, name=name):
            return objective({**host_params, name: p}, X)

        expected = numeric_grad(with_param, value.copy())
        assert grads[name].dtype == backend64.dtype
        np.testing.assert_allclose(backend64.to_numpy(grads[name]), expected,
                                   rtol=RTOL, atol=ATOL, err_msg=f"gradient of {name}")


def test_dropout_in_training_really_drops(backend64):
    """Guards the Dropout gradcheck above: with a live mask some entries must be zeroed."""
    X = backend64.asarray(np.ones((8, 16)))
    ctx = Pass(backend64.xp, backend64, training=True, rng=np.random.default_rng(0))
    Y, _ = xn.Dropout(0.5).forward({}, X, ctx)
    Y = backend64.to_numpy(Y)
    assert 0 < np.count_nonzero(Y) < Y.size
    np.testing.assert_allclose(Y[Y != 0], 2.0)  # survivors scaled by 1 / (1 - p)


def _loss_targets(rng, loss, shape):
    if loss == "mse":
        return rng.standard_normal(shape)
    if loss == "cross_entropy":
        return np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
    return rng.uniform(0, 1, shape)  # binary cross-entropy: soft targets in [0, 1]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "binary_cross_entropy"])
def test_loss_gradients_match_finite_differences(backend64, loss):
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((5, 3)) * 3.0
    T = _loss_targets(rng, loss, Y.shape)
    fn = losses.resolve(loss)
    T_dev = backend64.asarray(T)

    def value(Y_host):
        return float(fn(backend64.xp, backend64.asarray(Y_host), T_dev)[0])

    out, dY = fn(backend64.xp, backend64.asarray(Y), T_dev)
    assert dY.dtype == backend64.dtype
    np.testing.assert_allclose(backend64.to_numpy(dY), numeric_grad(value, Y.copy()),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss, make_targets", [
    ("mse", lambda rng, n: rng.standard_normal((n, 2))),
    ("cross_entropy", lambda rng, n: rng.integers(0, 2, n)),  # integer labels
    ("cross_entropy", lambda rng, n: np.eye(2)[rng.integers(0, 2, n)]),  # one-hot rows
    ("binary_cross_entropy", lambda rng, n: rng.uniform(0, 1, (n, 2))),
], ids=["mse", "ce-labels", "ce-onehot", "bce"])
def test_model_loss_and_grads_match_finite_differences(backend64, loss, make_targets):
    layers = [xn.Dense(3, 4), xn.Tanh(), xn.Dense(4, 2)]
    model = xn.Sequential(*layers, seed=3, backend=backend64)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 3))
    y = make_targets(rng, 6)
    host = {k: backend64.to_numpy(v).copy() for k, v in model.params.items()}
    _, grads = model.loss_and_grads(X, y, loss=loss)
    assert list(grads) == list(host)

    def loss_with(name, p):
        model.set_params({**host, name: p})
        return model.loss_and_grads(X, y, loss=loss)[0]

    for name, value in host.items():
        expected = numeric_grad(lambda p, name=name: loss_with(name, p), value.copy())
        np.testing.assert_allclose(backend64.to_numpy(grads[name]), expected,
                                   rtol=RTOL, atol=ATOL, err_msg=f"{loss}: gradient of {name}")


# ----------------------------------------------------------------------------- against torch


def _torch_reference(loss, Z, T, labels):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    Zt = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    if loss == "mse":
        value = F.mse_loss(Zt, torch.tensor(T))
    elif loss == "cross_entropy" and labels is not None:
        value = F.cross_entropy(Zt, torch.tensor(labels))
    elif loss == "cross_entropy":
        value = F.cross_entropy(Zt, torch.tensor(T))  # probability targets
    else:
        value = F.binary_cross_entropy_with_logits(Zt, torch.tensor(T))
    value.backward()
    return value.item(), Zt.grad.numpy()


@pytest.mark.parametrize("loss, kind", [("mse", None), ("cross_entropy", "labels"),
                                        ("cross_entropy", "onehot"),
                                        ("binary_cross_entropy", None)])
def test_losses_match_torch_values_and_gradients(loss, kind):
    rng = np.random.default_rng(5)
    # Large logits too: the stable log-sum-exp and logistic forms must not overflow.
    Z = rng.standard_normal((7, 4)) * np.array([1.0, 10.0, 100.0, 800.0])
    labels = rng.integers(0, 4, 7) if kind == "labels" else None
    T = _loss_targets(rng, loss, Z.shape) if labels is None else np.eye(4)[labels]
    ref_value, ref_grad = _torch_reference(loss, Z, T, labels)
    backend = xn.backend.get("numpy", dtype="float64")
    value, dZ = losses.resolve(loss)(backend.xp, backend.asarray(Z), backend.asarray(T))
    assert np.isfinite(float(value))
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(dZ), ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "binary_cross_entropy"])
def test_model_loss_matches_torch_on_every_backend(backend64, loss):
    """The same logits through Sequential.loss_and_grads (labels for cross-entropy) as torch."""
    torch = pytest.importorskip("torch")
    model = xn.Sequential(xn.Dense(3, 2), seed=6, backend=backend64)
    rng = np.random.default_rng(8)
    X = rng.standard_normal((5, 3))
    labels = rng.integers(0, 2, 5)
    y = labels if loss == "cross_entropy" else _loss_targets(rng, loss, (5, 2))
    value, grads = model.loss_and_grads(X, y, loss=loss)

    W = torch.tensor(backend64.to_numpy(model.params["0.W"]), requires_grad=True)
    b = torch.tensor(backend64.to_numpy(model.params["0.b"]), requires_grad=True)
    Z = torch.tensor(X) @ W + b
    F = torch.nn.functional
    if loss == "mse":
        ref = F.mse_loss(Z, torch.tensor(y))
    elif loss == "cross_entropy":
        ref = F.cross_entropy(Z, torch.tensor(labels))
    else:
        ref = F.binary_cross_entropy_with_logits(Z, torch.tensor(y))
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(backend64.to_numpy(grads["0.W"]), W.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(backend64.to_numpy(grads["0.b"]), b.grad.numpy(), rtol=1e-10,
                               atol=1e-15)
