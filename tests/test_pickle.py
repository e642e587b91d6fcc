"""Models and backends survive copy.deepcopy and pickle, and train on identically afterwards."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import table as backends

ROUND_TRIPS = {"deepcopy": copy.deepcopy, "pickle": lambda obj: pickle.loads(pickle.dumps(obj))}


# --------------------------------------------------------------------------- Backend


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_backend_round_trips_to_the_same_backend(backend, how):
    assert ROUND_TRIPS[how](backend) is backend


def test_backend_float64_keeps_its_dtype(backend64):
    assert pickle.loads(pickle.dumps(backend64)) is backend64


def test_unpickling_resolves_the_backend_again(backend, monkeypatch):
    """With nothing cached (as in a fresh process) the name, device and dtype come back."""
    raw = pickle.dumps(backend)
    monkeypatch.setattr(backends, "_cache", {})
    again = pickle.loads(raw)
    assert again is not backend
    assert (again.name, again.dtype_name) == (backend.name, backend.dtype_name)
    assert str(again.device) == str(backend.device)
    assert again.owns(backend.asarray([1.0, 2.0]))


def test_the_default_device_and_its_name_give_one_backend():
    torch = pytest.importorskip("torch")
    assert backends.get("torch") is backends.get("torch", "cpu")
    assert backends.get("torch") is backends.get("torch", torch.device("cpu"))


# --------------------------------------------------------------------------- Sequential


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((48, 4)), rng.integers(0, 3, 48)


def _trained(backend):
    model = xn.Sequential(xn.Dense(4, 8), xn.ReLU(), xn.Dropout(0.2), xn.Dense(8, 3),
                          seed=0, backend=backend)
    X, y = _data()
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=2, batch_size=16,
              seed=0)
    return model


def _host(model) -> dict:
    arrays = {f"param {k}": v for k, v in model.params.items()}
    arrays.update({f"state {k}": v for k, v in model.optimizer.state_arrays().items()})
    return {k: model.backend.to_numpy(v).copy() for k, v in arrays.items()}


def _train_on(model, seed=1):
    X, y = _data()
    model.fit(X, y, loss="cross_entropy", optimizer=model.optimizer, epochs=2, batch_size=16,
              seed=seed)


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_trained_model_round_trips_with_its_optimizer(backend, how):
    model = _trained(backend)
    twin = ROUND_TRIPS[how](model)
    assert twin.backend is model.backend
    assert twin.optimizer is not model.optimizer
    assert twin.optimizer.iterations == model.optimizer.iterations
    assert twin.optimizer.state_arrays()  # Adam's moments came along
    _assert_same(_host(twin), _host(model))


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_copy_trains_on_exactly_as_the_original(backend, how):
    model = _trained(backend)
    twin = ROUND_TRIPS[how](model)
    _train_on(model)
    _train_on(twin)
    assert twin.optimizer.iterations == model.optimizer.iterations
    _assert_same(_host(twin), _host(model))


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_copy_shares_no_arrays_with_the_original(backend, how):
    model = _trained(backend)
    before = _host(model)
    twin = ROUND_TRIPS[how](model)
    _train_on(twin)  # updates the twin's parameters and moments in place where the backend can
    _assert_same(_host(model), before)
    assert _host(twin)["param 0.W"].tobytes() != before["param 0.W"].tobytes()


def test_predictions_survive_pickle(backend):
    model = _trained(backend)
    X, _ = _data()
    twin = pickle.loads(pickle.dumps(model))
    expected = model.backend.to_numpy(model.predict(X))
    np.testing.assert_array_equal(twin.backend.to_numpy(twin.predict(X)), expected)
