"""Numerical stability on every backend: inputs of +-1e4 give finite values and the exact limits.

At |z| = 1e4, exp(-|z|) is 0 in float32 and float64, so every limit below is exact in
floating point: a correct implementation meets it to the last bit or within one rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.nn import losses
from xpnet.nn.layers import Pass

BIG = 1e4


def _host(backend, x):
    return np.asarray(backend.to_numpy(x), dtype="float64")


def _check(got, expected):
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_cross_entropy_of_huge_logits(backend):
    Z = backend.asarray([[BIG, -BIG], [BIG, -BIG], [-BIG, BIG], [0.0, BIG]])
    T = backend.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    loss, dZ = losses.cross_entropy(backend.xp, Z, T)
    # rows: right with certainty (0), wrong by 2e4, right (0), wrong by 1e4; mean over 4
    _check(_host(backend, loss), (0.0 + 2 * BIG + 0.0 + BIG) / 4)
    expected = np.array([[0, 0], [1, -1], [0, 0], [-1, 1]]) / 4
    _check(_host(backend, dZ), expected)


def test_cross_entropy_through_the_model(backend):
    """The public path (labels, encoding, loss_and_grads) stays finite at the same logits."""
    model = xn.Sequential(xn.Dense(2, 2, bias=False), seed=0, backend=backend)
    model.set_params({"0.W": np.eye(2)})
    X = np.array([[BIG, -BIG], [-BIG, BIG]])
    loss, grads = model.loss_and_grads(X, np.array([1, 1]), loss="cross_entropy")
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, BIG, rtol=1e-6)  # (2e4 + 0) / 2
    # dZ = [[1, -1], [0, 0]] / 2; dW = X.T @ dZ
    np.testing.assert_allclose(_host(backend, grads["0.W"]),
                               np.array([[BIG, -BIG], [-BIG, BIG]]) / 2, rtol=1e-6)


def test_binary_cross_entropy_of_huge_logits(backend):
    Z = backend.asarray([[BIG, BIG, -BIG, -BIG]])
    T = backend.asarray([[1.0, 0.0, 1.0, 0.0]])
    loss, dZ = losses.binary_cross_entropy(backend.xp, Z, T)
    _check(_host(backend, loss), (0.0 + BIG + BIG + 0.0) / 4)
    _check(_host(backend, dZ), np.array([[0.0, 1.0, -1.0, 0.0]]) / 4)


def _layer(backend, layer, values, dY):
    X = backend.asarray(values)
    Y, backprop = layer.forward({}, X, Pass(backend.xp, backend))
    dX, _ = backprop(backend.asarray(dY))
    return _host(backend, Y), _host(backend, dX)


def test_sigmoid_of_huge_inputs(backend):
    Y, dX = _layer(backend, xn.Sigmoid(), [[BIG, -BIG, 0.0]], [[1.0, 1.0, 1.0]])
    _check(Y, [[1.0, 0.0, 0.5]])
    _check(dX, [[0.0, 0.0, 0.25]])


def test_softmax_of_huge_inputs(backend):
    Y, dX = _layer(backend, xn.Softmax(), [[BIG, -BIG, 0.0], [BIG, BIG, -BIG]],
                   [[1.0, 2.0, 3.0], [1.0, -1.0, 5.0]])
    _check(Y, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    # J^T dY = S * (dY - <dY, S>): row 1 is 0; row 2 is 0.5 * ([1, -1] - 0) and 0.
    _check(dX, [[0.0, 0.0, 0.0], [0.5, -0.5, 0.0]])


@pytest.mark.parametrize("name", ["tanh", "gelu", "relu", "leaky_relu"])
def test_other_activations_of_huge_inputs(backend, name):
    layer = xn.nn.layers.activation(name)
    Y, dX = _layer(backend, layer, [[BIG, -BIG]], [[1.0, 1.0]])
    slope = {"tanh": 0.0, "gelu": 0.0, "relu": 0.0, "leaky_relu": 0.01}[name]
    low = {"tanh": -1.0, "gelu": 0.0, "relu": 0.0, "leaky_relu": -BIG * 0.01}[name]
    high = {"tanh": 1.0}.get(name, BIG)
    _check(Y, [[high, low]])
    _check(dX, [[0.0 if name == "tanh" else 1.0, slope]])


def test_training_from_saturated_logits_stays_finite(backend):
    """A classifier that starts with huge, wrong logits learns without NaN."""
    model = xn.Sequential(xn.Dense(2, 2), seed=0, backend=backend)
    model.set_params({"0.W": np.array([[BIG, -BIG], [-BIG, BIG]]) / 10, "0.b": np.zeros(2)})
    X = np.array([[1.0, 0.0], [0.0, 1.0]] * 4)
    y = np.array([1, 0] * 4)
    history = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=1.0, epochs=3,
                        batch_size=None)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
