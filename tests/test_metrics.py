"""Metrics on every backend against scikit-learn's definitions; evaluate and fit report them."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.train import metrics

skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")


def test_regression_metrics_match_scikit_learn(backend64):
    rng = np.random.default_rng(0)
    T, Y = rng.standard_normal((30, 2)), rng.standard_normal((30, 2))
    t, y = backend64.asarray(T), backend64.asarray(Y)
    assert metrics.mse(t, y) == pytest.approx(skm.mean_squared_error(T, Y), rel=1e-12)
    assert metrics.mae(t, y) == pytest.approx(skm.mean_absolute_error(T, Y), rel=1e-12)
    assert metrics.r2(t, y) == pytest.approx(skm.r2_score(T, Y), rel=1e-12)
    assert all(isinstance(f(t, y), float) for f in (metrics.mse, metrics.mae, metrics.r2))


def test_r2_of_a_constant_target_follows_scikit_learn():
    T = np.array([[2.0], [2.0], [2.0]])
    assert metrics.r2(T, T) == skm.r2_score(T, T) == 1.0
    assert metrics.r2(T, T + 1.0) == skm.r2_score(T, T + 1.0) == 0.0


def test_accuracy_accepts_labels_scores_one_hot_and_a_logit_column(backend):
    labels = np.array([0, 2, 1, 1, 0])
    scores = np.eye(3)[[0, 1, 1, 1, 2]] + 0.1  # predicts 0, 1, 1, 1, 2: three right
    assert metrics.accuracy(backend.asarray(labels), backend.asarray(scores)) == 0.6
    assert metrics.accuracy(backend.asarray(np.eye(3)[labels]), backend.asarray(scores)) == 0.6
    binary = np.array([[2.0], [-1.0], [0.5], [-3.0]])
    assert metrics.accuracy(np.array([1, 0, 0, 0]), backend.asarray(binary)) == 0.75
    column = backend.asarray(np.array([[2.0], [0.0], [1.0], [1.0], [0.0]]))  # labels, not logits
    assert metrics.accuracy(column, backend.asarray(labels)) == 0.6  # 0.4 if read as logits


def test_arrays_of_different_libraries_are_compared_on_the_host():
    torch = pytest.importorskip("torch")
    T = np.array([1.0, 2.0, 3.0])
    assert metrics.mae(T, torch.tensor([1.0, 2.0, 5.0])) == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError, match="rows"):
        metrics.mse(T, np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(np.zeros((3, 2)), np.zeros((3, 1)))


def test_evaluate_reports_regression_metrics_that_match_the_definitions(backend):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3))
    y = X @ np.array([1.0, 2.0, -1.0])
    model = xn.mlp([3, 5, 1], seed=0, backend=backend)
    result = model.evaluate(X, y)
    pred = backend.to_numpy(model.predict(X)).astype(np.float64)[:, 0]
    assert set(result) == {"loss", "mse", "mae", "r2"}
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-4)
    assert result["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-4, abs=1e-5)


def test_binary_cross_entropy_reports_accuracy():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 2))
    y = (X[:, 0] > 0).astype(np.float64)
    model = xn.mlp([2, 1], seed=0)
    result = model.evaluate(X, y, loss="binary_cross_entropy")
    logits = model.predict(X)[:, 0]
    assert result["accuracy"] == pytest.approx(np.mean((logits >= 0) == (y == 1)))
