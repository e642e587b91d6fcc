"""xpnet.testing: check_grads finds a wrong backprop; assert_parity finds a backend that differs."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.testing import assert_parity, check_grads


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.int64)


class ScaledGradDense(xn.Dense):
    """A Dense whose backprop reports 1.5x the true weight gradient: a typical user bug."""

    def forward(self, params, X, ctx):
        Y, backprop = super().forward(params, X, ctx)

        def wrong(dY, need_dX=True):
            dX, grads = backprop(dY, need_dX)
            return dX, {**grads, "W": grads["W"] * 1.5}

        return Y, wrong


def test_check_grads_passes_a_correct_model_and_reports_every_parameter(backend):
    X, y = _data()
    model = xn.mlp([3, 5, 2], activation="tanh", seed=0, backend=backend)
    report = check_grads(model, X, y, loss="cross_entropy")
    assert report.passed and set(report.errors) == {"0.W", "0.b", "2.W", "2.b"}
    assert report.worst in report.errors and report.worst_error < 1e-6
    assert model.backend.dtype_name == "float32"  # the check ran on a float64 copy


def test_check_grads_names_the_wrong_parameter():
    X, y = _data()
    model = xn.Sequential(xn.Dense(3, 4), xn.Tanh(), ScaledGradDense(4, 2), seed=0)
    with pytest.raises(AssertionError, match=r"'2\.W'.*relative error") as info:
        check_grads(model, X, y, loss="cross_entropy")
    assert "analytic" in str(info.value) and "numeric" in str(info.value)
    report = check_grads(model, X, y, loss="cross_entropy", raise_error=False)
    assert report.worst == "2.W" and report.worst_error == pytest.approx(1 / 3, rel=1e-3)
    assert report.errors["0.W"] < 1e-6 and report.errors["2.b"] < 1e-6


class NaNGradDense(xn.Dense):
    """A Dense whose backprop reports NaN for one weight's gradient (a 0/0 in a user's maths)."""

    def forward(self, params, X, ctx):
        Y, backprop = super().forward(params, X, ctx)

        def wrong(dY, need_dX=True):
            dX, grads = backprop(dY, need_dX)
            W = np.array(grads["W"])
            W[0, 0] = np.nan
            return dX, {**grads, "W": ctx.backend.asarray(W)}

        return Y, wrong


def test_check_grads_fails_a_nan_gradient_and_names_it():
    # NaN compares false with every number: it must not slip under the tolerance
    X, y = _data()
    model = xn.Sequential(xn.Dense(3, 4), xn.Tanh(), NaNGradDense(4, 2), seed=0)
    with pytest.raises(AssertionError, match=r"'2\.W'.*relative error nan"):
        check_grads(model, X, y, loss="cross_entropy")
    report = check_grads(model, X, y, loss="cross_entropy", raise_error=False)
    assert not report.passed and report.worst == "2.W" and report.worst_index == (0, 0)
    assert report.errors["0.W"] < 1e-6


def test_check_grads_refuses_a_model_with_nothing_to_check():
    X, y = _data()
    with pytest.raises(xn.ModelError, match="check_grads: the model has no parameters"):
        check_grads(xn.Sequential(xn.Tanh()), X, np.zeros((len(X), 3)))


def test_assert_parity_reports_gaps_on_every_available_backend():
    X, y = _data(16)
    report = assert_parity(lambda: xn.mlp([3, 6, 2], seed=0), X, y, loss="cross_entropy",
                           optimizer=xn.Adam(lr=0.05), steps=3, batch_size=8)
    others = [n for n in xn.available() if n != "numpy"]
    assert sorted(report.diffs) == sorted(others)
    for per in report.diffs.values():
        assert set(per) == {"0.W", "0.b", "2.W", "2.b"}
        assert max(per.values()) <= report.tolerance


def test_assert_parity_names_the_backend_and_parameter_that_differ():
    if "torch" not in xn.available():
        pytest.skip("torch is not installed")
    X, y = _data(16)

    def build():  # a different seed on torch only: every parameter differs there
        return xn.mlp([3, 4, 2], seed=1 if xn.current().name == "torch" else 0)

    with pytest.raises(AssertionError, match=r"parameter '\d\.[Wb]' on torch differs"):
        assert_parity(build, X, y, ["torch"], loss="cross_entropy", steps=2)


def test_assert_parity_skips_a_backend_that_cannot_run_here():
    if "cupy" in xn.available():
        pytest.skip("cupy runs here, so nothing is skipped")
    X, y = _data(16)
    report = assert_parity(lambda: xn.mlp([3, 2], seed=0), X, y, ["cupy"], steps=1,
                           loss="cross_entropy")
    assert report.diffs == {} and report.passed
    assert "cupy" in report.skipped["cupy"]
