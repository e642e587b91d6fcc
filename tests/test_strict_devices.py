"""array-api-strict's fake devices stand in for GPU bugs on a CPU-only CI.

``device1``: arrays on two devices cannot mix, so any array created without ``device=``
(a one-hot, an index, a zero state) fails loudly. ``no_float64``: float64 is refused, so an
accidental upcast anywhere in a float32 step fails loudly.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

xs = pytest.importorskip("array_api_strict")

OPTIMIZERS = [lambda: xn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
              lambda: xn.Adam(lr=1e-2, weight_decay=1e-3, clipnorm=1.0)]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64), X[:, :2] * 0.5


@pytest.mark.parametrize("device", ["device1", "no_float64"])
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_a_whole_fit_stays_on_the_models_device(device, make_optimizer, loss):
    X, labels, targets = _data()
    width = {"cross_entropy": 2, "binary_cross_entropy": 1, "mse": 2}[loss]
    y = {"cross_entropy": labels, "binary_cross_entropy": labels.astype(np.float32),
         "mse": targets}[loss]
    backend = xn.backend.get("array_api_strict", device=device)
    model = xn.Sequential(xn.Dense(3, 8), xn.GELU(), xn.Dropout(0.2), xn.Dense(8, 8), xn.Tanh(),
                          xn.Dense(8, width), seed=0, backend=backend)
    history = model.fit(X, y, loss=loss, optimizer=make_optimizer(), epochs=2, batch_size=16,
                        validation_split=0.25)
    assert np.isfinite(history.history["val_loss"]).all()
    for name, p in model.params.items():
        assert p.device == xs.Device(device), name
        assert p.dtype == xs.float32, name
    for key, state in model.optimizer.state_arrays().items():
        assert state.device == xs.Device(device), key
    Y = model.predict(X, batch_size=7)
    assert Y.device == xs.Device(device) and Y.dtype == xs.float32


def test_strict_on_a_fake_device_matches_numpy():
    X, labels, _ = _data()
    runs = []
    for backend in (xn.backend.get("numpy"), xn.backend.get("array_api_strict", "device1")):
        model = xn.mlp([3, 8, 2], seed=0, backend=backend)
        model.fit(X, labels, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=3,
                  batch_size=16)
        runs.append({k: backend.to_numpy(v) for k, v in model.params.items()})
    for name in runs[0]:
        np.testing.assert_allclose(runs[1][name], runs[0][name], rtol=1e-6, atol=1e-7)


def test_save_and_load_from_a_non_cpu_device(tmp_path):
    X, labels, _ = _data()
    backend = xn.backend.get("array_api_strict", "device1")
    model = xn.mlp([3, 8, 2], seed=0, backend=backend)
    model.fit(X, labels, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1)
    model.save(tmp_path / "m.npz")
    back = xn.load(tmp_path / "m.npz", backend=backend)
    for name, p in model.params.items():
        assert back.params[name].device == xs.Device("device1")
        np.testing.assert_array_equal(backend.to_numpy(back.params[name]), backend.to_numpy(p))
