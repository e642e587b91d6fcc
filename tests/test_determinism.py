"""Determinism: the same seeds give bit-identical parameters after training, run after run.

Randomness comes only from the host NumPy Generator (initial weights, shuffling, dropout
masks), so on one backend and device two runs execute the same operations on the same
numbers. GPU caveats are in the README ("What xpnet guarantees").
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn


def _data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((48, 6))
    return X, rng.integers(0, 3, 48), X @ rng.standard_normal((6, 2))


def _train(backend, dropout=0.0, model_seed=0, fit_seed=0, loss="cross_entropy",
           optimizer=None):
    X, labels, targets = _data()
    y = labels if loss == "cross_entropy" else targets
    n_out = 3 if loss == "cross_entropy" else 2
    model = xn.mlp([6, 16, 16, n_out], activation="gelu", dropout=dropout, seed=model_seed,
                   backend=backend)
    history = model.fit(X, y, loss=loss, optimizer=optimizer or xn.Adam(lr=1e-2), epochs=3,
                        batch_size=8, seed=fit_seed)
    params = {k: backend.to_numpy(v).copy() for k, v in model.params.items()}
    return params, history.history["loss"]


def _identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_same_seed_twice_gives_bit_identical_parameters(backend, dropout):
    first, losses_1 = _train(backend, dropout)
    second, losses_2 = _train(backend, dropout)
    assert _identical(first, second)
    assert losses_1 == losses_2


def test_momentum_sgd_and_mse_are_deterministic_too(backend):
    opt = lambda: xn.SGD(lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
    first, _ = _train(backend, loss="mse", optimizer=opt())
    second, _ = _train(backend, loss="mse", optimizer=opt())
    assert _identical(first, second)


def test_the_seeds_matter(backend):
    """So the tests above could fail: other model or fit seeds give other parameters."""
    base, _ = _train(backend, dropout=0.3)
    assert not _identical(base, _train(backend, dropout=0.3, model_seed=1)[0])
    assert not _identical(base, _train(backend, dropout=0.3, fit_seed=1)[0])


def test_initial_weights_are_bit_identical_on_every_backend(backend):
    reference = xn.mlp([6, 16, 3], seed=3, backend="numpy")
    model = xn.mlp([6, 16, 3], seed=3, backend=backend)
    for k, v in reference.params.items():
        assert backend.to_numpy(model.params[k]).tobytes() == v.tobytes(), k


def test_training_is_deterministic_after_a_save_and_load(tmp_path):
    """Continuing from a checkpoint equals continuing in memory (optimizer state included)."""
    X, labels, _ = _data()
    a = xn.mlp([6, 16, 3], seed=0)
    a.fit(X, labels, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=8)
    a.save(tmp_path / "a.npz")
    b = xn.load(tmp_path / "a.npz")
    for m in (a, b):
        m.fit(X, labels, loss="cross_entropy", optimizer=m.optimizer, epochs=2, batch_size=8,
              seed=5)
    assert _identical({k: np.asarray(v) for k, v in a.params.items()},
                      {k: np.asarray(v) for k, v in b.params.items()})
