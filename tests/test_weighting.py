"""Per-sample and per-class weights, counting updates, and the batch loss for callbacks.

Weighted losses and gradients are checked against PyTorch in float64 (``reduction="none"``
for sample weights, ``CrossEntropyLoss(weight=...)`` for class weights).
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

torch = pytest.importorskip("torch")


def _data(n=48, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, rng.integers(0, k, n), rng.uniform(0.0, 2.0, n)


def _torch_step(model, X, loss_of, lr=0.1):
    """One SGD step of ``model``'s float64 twin in torch: (loss, new params)."""
    P = {k: torch.tensor(np.asarray(model.backend.to_numpy(v)), requires_grad=True)
         for k, v in model.params.items()}
    Z = torch.relu(torch.tensor(X) @ P["0.W"] + P["0.b"]) @ P["2.W"] + P["2.b"]
    L = loss_of(Z)
    L.backward()
    return L.item(), {k: (p - lr * p.grad).detach().numpy() for k, p in P.items()}


def _params(model):
    return {k: np.array(model.backend.to_numpy(v)) for k, v in model.params.items()}


def test_class_weight_is_torch_cross_entropy_with_weight(backend64):
    X, y, _ = _data()
    cw = np.array([0.5, 2.0, 1.5])
    model = xn.mlp([5, 7, 3], seed=0, backend=backend64)
    expected_loss, expected = _torch_step(
        model, X, lambda Z: torch.nn.CrossEntropyLoss(weight=torch.tensor(cw))(
            Z, torch.tensor(y)))
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=1,
                        batch_size=None, class_weight={0: 0.5, 1: 2.0, 2: 1.5})
    assert history.history["loss"][0] == pytest.approx(expected_loss, rel=1e-12)
    for k, v in _params(model).items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-10, atol=1e-12)


def test_sample_weight_is_the_weighted_mean_of_per_sample_losses(backend64):
    X, _, w = _data()
    Y = np.random.default_rng(1).standard_normal((48, 3))
    model = xn.mlp([5, 7, 3], seed=0, backend=backend64)
    tw = torch.tensor(w)
    expected_loss, expected = _torch_step(
        model, X, lambda Z: (torch.nn.MSELoss(reduction="none")(Z, torch.tensor(Y)).mean(1)
                             * tw).sum() / tw.sum())
    history = model.fit(X, Y, loss="mse", optimizer=xn.SGD(lr=0.1), epochs=1, batch_size=None,
                        sample_weight=w)
    assert history.history["loss"][0] == pytest.approx(expected_loss, rel=1e-12)
    for k, v in _params(model).items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-10, atol=1e-12)


def test_class_and_sample_weights_multiply_and_follow_the_shuffle():
    X, y, w = _data()
    cw = [0.5, 2.0, 1.5]
    both = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    both.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=16,
             sample_weight=w, class_weight=cw)
    product = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    product.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=16,
                sample_weight=w * np.asarray(cw)[y])
    for k, v in _params(both).items():
        np.testing.assert_allclose(v, _params(product)[k], rtol=1e-12)


def test_integer_weights_equal_repeated_rows():
    X, y, _ = _data(n=12)
    counts = np.array([1, 2, 3, 1, 1, 2, 1, 1, 3, 1, 2, 1])
    weighted = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    weighted.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=3,
                 batch_size=None, sample_weight=counts)
    repeated = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    repeated.fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), loss="cross_entropy",
                 optimizer=xn.SGD(lr=0.1), epochs=3, batch_size=None)
    for k, v in _params(weighted).items():
        np.testing.assert_allclose(v, _params(repeated)[k], rtol=1e-10)


def test_binary_class_weight_weighs_each_label():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = (X[:, 0] > 0).astype(float)
    model = xn.mlp([5, 7, 1], seed=0, dtype="float64")
    ref = xn.mlp([5, 7, 1], seed=0, dtype="float64")
    model.fit(X, y, loss="binary_cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=1,
              batch_size=None, class_weight={1: 3.0})
    ref.fit(X, y, loss="binary_cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=1,
            batch_size=None, sample_weight=np.where(y > 0, 3.0, 1.0))
    for k, v in _params(model).items():
        np.testing.assert_allclose(v, _params(ref)[k], rtol=1e-12)


def test_a_batch_of_zero_weights_adds_a_zero_gradient():
    X, y, _ = _data(n=32)
    w = np.ones(32)
    w[:16] = 0.0
    model = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    before = _params(model)
    history = model.fit(X[:16], y[:16], loss="cross_entropy", optimizer=xn.SGD(lr=0.1),
                        epochs=1, batch_size=16, shuffle=False, sample_weight=w[:16] + 1e-300)
    assert np.isfinite(history.history["loss"][0])
    model = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=1, batch_size=16,
              shuffle=False, sample_weight=w, max_steps=1)
    assert all(np.array_equal(v, before[k]) for k, v in _params(model).items())


def test_weights_are_split_with_validation_split():
    X, y, w = _data()
    split = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    split.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=8,
              sample_weight=w, validation_split=0.25)
    head = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    head.fit(X[:36], y[:36], loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=2,
             batch_size=8, sample_weight=w[:36], validation_data=(X[36:], y[36:]))
    for k, v in _params(split).items():
        np.testing.assert_array_equal(v, _params(head)[k])


def test_memory_mapped_data_takes_sample_weights(tmp_path):
    X, y, w = _data()
    np.save(tmp_path / "X.npy", X)
    mapped = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    mapped.fit(np.load(tmp_path / "X.npy", mmap_mode="r"), y, loss="cross_entropy",
               optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=8, sample_weight=w)
    memory = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    memory.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=2, batch_size=8,
               sample_weight=w)
    for k, v in _params(mapped).items():
        np.testing.assert_array_equal(v, _params(memory)[k])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_weights_the_loss_and_every_metric():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    X, y, w = _data()
    model = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    got = model.evaluate(X, y, loss="cross_entropy", sample_weight=w)
    Z = torch.tensor(np.asarray(model.predict(X)))
    per = torch.nn.CrossEntropyLoss(reduction="none")(Z, torch.tensor(y)).numpy()
    assert got["loss"] == pytest.approx(float((per * w).sum() / w.sum()), rel=1e-12)
    pred = Z.numpy().argmax(1)
    assert got["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(y, pred, sample_weight=w), rel=1e-12)
    T = np.random.default_rng(2).standard_normal((48, 2))
    reg = xn.mlp([5, 7, 2], seed=0, dtype="float64")
    got = reg.evaluate(X, T, loss="mse", sample_weight=w)
    P = np.asarray(reg.predict(X))
    assert got["mse"] == pytest.approx(sklearn_metrics.mean_squared_error(T, P, sample_weight=w))
    assert got["mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(T, P, sample_weight=w))
    assert got["r2"] == pytest.approx(sklearn_metrics.r2_score(T, P, sample_weight=w))
    assert got["loss"] == pytest.approx(got["mse"])


def test_uniform_weights_evaluate_as_none():
    X, y, _ = _data()
    model = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    plain = model.evaluate(X, y, loss="cross_entropy")
    ones = model.evaluate(X, y, loss="cross_entropy", sample_weight=np.ones(48))
    assert ones == pytest.approx(plain, rel=1e-12)


# ------------------------------------------------------------------- bad weights refused


@pytest.mark.parametrize("weights, match", [
    (np.ones(47), "47 weights for 48 samples"),
    (np.ones((48, 1)), "must be 1-D"),
    (np.r_[np.ones(47), np.nan], "NaN"),
    (np.r_[np.ones(47), np.inf], "nf"),
    (np.r_[np.ones(47), -1.0], "non-negative; sample 47"),
    (np.zeros(48), "zero for every sample"),
    (["a"] * 48, "sample_weight"),
])
def test_bad_sample_weights_are_refused_before_anything_changes(weights, match):
    X, y, _ = _data()
    model = xn.mlp([5, 7, 3], seed=0)
    before = _params(model)
    with pytest.raises(xn.DataError, match=match):
        model.fit(X, y, loss="cross_entropy", sample_weight=weights)
    with pytest.raises(xn.DataError, match=match):
        model.evaluate(X, y, loss="cross_entropy", sample_weight=weights)
    assert model.optimizer is None
    assert all(np.array_equal(v, before[k]) for k, v in _params(model).items())


@pytest.mark.parametrize("class_weight, error, match", [
    ({3: 1.0}, xn.DataError, "label 3; the model has 3 classes"),
    ({-1: 1.0}, xn.DataError, "label -1"),
    ({"a": 1.0}, xn.DataError, "label 'a'"),
    ({0: "x"}, xn.DataError, "must be a number"),
    ({0: -1.0}, xn.DataError, "non-negative"),
    ([1.0, 2.0], xn.DataError, "one weight per class \\(3\\)"),
    ([0.0, 0.0, 0.0], xn.DataError, "zero for every class"),
    ({0: float("nan")}, xn.DataError, "NaN"),
])
def test_bad_class_weights_are_refused_before_anything_changes(class_weight, error, match):
    X, y, _ = _data()
    model = xn.mlp([5, 7, 3], seed=0)
    before = _params(model)
    with pytest.raises(error, match=match):
        model.fit(X, y, loss="cross_entropy", class_weight=class_weight)
    assert model.optimizer is None
    assert all(np.array_equal(v, before[k]) for k, v in _params(model).items())


def test_class_weight_needs_a_classification_loss():
    X, _, _ = _data()
    with pytest.raises(ValueError, match="class_weight needs a classification loss"):
        xn.mlp([5, 7, 3]).fit(X, np.zeros((48, 3)), loss="mse", class_weight={0: 2.0})
    with pytest.raises(ValueError, match="needs one output"):
        xn.mlp([5, 7, 3]).fit(X, np.zeros((48, 3)), loss="binary_cross_entropy",
                              class_weight={0: 2.0})


def test_sample_weight_with_an_iterable_of_batches_is_refused():
    X, y, w = _data()
    with pytest.raises(ValueError, match="sample_weight needs X and y as arrays"):
        xn.mlp([5, 7, 3]).fit([(X, y)], loss="cross_entropy", sample_weight=w)


class _TwoRanks:
    rank, size = 0, 2

    def allreduce_(self, *a, **k):
        raise AssertionError("no collective may run before the refusal")

    allreduce_scalar = allreduce_


def test_weights_over_many_processes_are_refused_before_any_collective():
    X, y, w = _data()
    with pytest.raises(ValueError, match="not supported over many processes"):
        xn.mlp([5, 7, 3]).fit(X, y, loss="cross_entropy", sample_weight=w, comm=_TwoRanks())


# ------------------------------------------------------------------------- max_steps


def test_max_steps_stops_mid_epoch_and_history_records_it():
    X, y, _ = _data()
    model = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    opt = xn.SGD(lr=0.1)
    history = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=5, batch_size=10,
                        max_steps=7)
    assert opt.iterations == 7
    assert history.history["steps"] == [5, 7]
    assert len(history.history["loss"]) == 2


def test_max_steps_equals_the_same_updates_by_hand():
    X, y, _ = _data()
    stopped = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    stopped.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=3, batch_size=16,
                shuffle=False, max_steps=4)
    by_hand = xn.mlp([5, 7, 3], seed=0, dtype="float64")
    step = xn.Step(by_hand, "cross_entropy", xn.SGD(lr=0.1))
    Xd = by_hand.device_inputs(X)
    Td = by_hand.device_targets(y, "cross_entropy", Xd)
    for lo in (0, 16, 32, 0):
        step(Xd[lo:lo + 16], Td[lo:lo + 16])
    for k, v in _params(stopped).items():
        np.testing.assert_array_equal(v, _params(by_hand)[k])


def test_max_steps_beyond_the_epochs_changes_nothing():
    X, y, _ = _data()
    a = xn.mlp([5, 7, 3], seed=0).fit(X, y, loss="cross_entropy", epochs=2, max_steps=1000)
    b = xn.mlp([5, 7, 3], seed=0).fit(X, y, loss="cross_entropy", epochs=2)
    assert a.history["loss"] == b.history["loss"] and a.history["steps"] == [2, 4]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "7", True])
def test_bad_max_steps_is_refused(bad):
    X, y, _ = _data()
    with pytest.raises((ValueError, TypeError), match="max_steps"):
        xn.mlp([5, 7, 3]).fit(X, y, loss="cross_entropy", max_steps=bad)


# ------------------------------------------------------------------- the batch loss


class _Losses(xn.Callback):
    wants_batch_loss = True

    def __init__(self):
        self.seen = []

    def on_batch_end(self, batch, logs):
        self.seen.append(logs["batch_loss"])


class _Sizes(xn.Callback):
    def __init__(self):
        self.keys = set()

    def on_batch_end(self, batch, logs):
        self.keys |= set(logs)


def test_callbacks_that_ask_get_each_batch_loss():
    X, y, _ = _data()
    asks, quiet = _Losses(), _Sizes()
    history = xn.mlp([5, 7, 3], seed=0, dtype="float64").fit(
        X, y, loss="cross_entropy", epochs=1, batch_size=16, callbacks=[asks, quiet])
    assert len(asks.seen) == 3 and all(isinstance(v, float) for v in asks.seen)
    assert np.mean(asks.seen) == pytest.approx(history.history["loss"][0], rel=1e-12)
    plain = _Sizes()
    xn.mlp([5, 7, 3]).fit(X, y, loss="cross_entropy", epochs=1, callbacks=[plain])
    assert "batch_loss" not in plain.keys
