"""Sequential and mlp: construction, initialisation, parameters, moving, fit/evaluate/predict,
EarlyStopping, and the errors a user meets first."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import table as backends
from xpnet.nn import init as initializers
from xpnet.nn.layers import ACTIVATIONS
from xpnet.nn.losses import LOSSES
from xpnet.nn.optim import OPTIMIZERS


def _host(model) -> dict[str, np.ndarray]:
    return {k: model.backend.to_numpy(v).copy() for k, v in model.params.items()}


def _blobs(n=64, seed=0):
    """Three separable clusters in 4-D: a classifier learns them in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centres[y] + 0.3 * rng.standard_normal((n, 4)), y


# ----------------------------------------------------------------------------- construction


def test_mlp_builds_dense_layers_with_activations_between():
    model = xn.mlp([4, 8, 6, 3], activation="tanh", seed=0, backend="numpy")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "Tanh", "Dense", "Tanh", "Dense"]  # linear output (logits)
    assert (model.n_in, model.n_out) == (4, 3)


def test_mlp_output_activation_and_dropout():
    model = xn.mlp([4, 8, 2], activation="relu", output_activation="sigmoid", dropout=0.25,
                   seed=0, backend="numpy")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "ReLU", "Dropout", "Dense", "Sigmoid"]
    assert model.layers[2].p == 0.25


def test_sequential_accepts_layers_or_a_list():
    a = xn.Sequential(xn.Dense(2, 3), xn.ReLU(), xn.Dense(3, 1), seed=0, backend="numpy")
    b = xn.Sequential([xn.Dense(2, 3), xn.ReLU(), xn.Dense(3, 1)], seed=0, backend="numpy")
    assert list(a.params) == list(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_model_uses_the_current_backend_by_default():
    with xn.use("array_api_strict"):
        model = xn.mlp([2, 3, 1], seed=0)
    assert model.backend.name == "array_api_strict"
    assert model.backend.owns(model.params["0.W"])


def test_params_are_ordered_and_named_by_layer_index():
    model = xn.Sequential(xn.Dense(4, 8), xn.ReLU(), xn.Dropout(0.1), xn.Dense(8, 3),
                          xn.Dense(3, 2, bias=False), seed=0, backend="numpy")
    assert list(model.params) == ["0.W", "0.b", "3.W", "3.b", "4.W"]
    shapes = {k: tuple(v.shape) for k, v in model.params.items()}
    assert shapes == {"0.W": (4, 8), "0.b": (8,), "3.W": (8, 3), "3.b": (3,), "4.W": (3, 2)}
    np.testing.assert_array_equal(model.params["0.b"], 0.0)


def test_default_init_is_he_before_relu_family_and_glorot_otherwise():
    model = xn.Sequential(xn.Dense(4, 8), xn.ReLU(), xn.Dense(8, 6), xn.Tanh(), xn.Dense(6, 2),
                          seed=5, backend=backends.get("numpy", dtype="float64"))
    rng = np.random.default_rng(5)  # the model's host stream, in layer order
    expected = {
        "0.W": initializers.he_uniform(rng, 4, 8),
        "2.W": initializers.glorot_uniform(rng, 8, 6),
        "4.W": initializers.glorot_uniform(rng, 6, 2),  # the output layer: Glorot
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(model.params[name], value, err_msg=name)


def test_he_is_chosen_through_dropout_and_for_gelu_and_leaky_relu():
    for act in (xn.GELU, xn.LeakyReLU):
        model = xn.Sequential(xn.Dense(4, 8), xn.Dropout(0.5), act(), xn.Dense(8, 1),
                              seed=1, backend=backends.get("numpy", dtype="float64"))
        rng = np.random.default_rng(1)
        np.testing.assert_array_equal(model.params["0.W"], initializers.he_uniform(rng, 4, 8))


def test_explicit_init_overrides_the_default():
    model = xn.Sequential(xn.Dense(4, 8, init="normal"), xn.ReLU(), seed=2,
                          backend=backends.get("numpy", dtype="float64"))
    rng = np.random.default_rng(2)
    np.testing.assert_array_equal(model.params["0.W"], initializers.normal(rng, 4, 8))
    model = xn.mlp([4, 8, 1], init="glorot", seed=2, backend=backends.get("numpy", dtype="float64"))
    rng = np.random.default_rng(2)
    np.testing.assert_array_equal(model.params["0.W"], initializers.glorot_uniform(rng, 4, 8))


# ----------------------------------------------------------------------------- set_params


def test_set_params_accepts_numpy_and_other_backends(backend):
    model = xn.mlp([3, 4, 2], seed=0, backend=backend)
    other = xn.mlp([3, 4, 2], seed=9, backend="array_api_strict")
    model.set_params(other.params)
    for k, v in model.params.items():
        assert backend.owns(v)
        assert v.dtype == backend.dtype
        np.testing.assert_array_equal(backend.to_numpy(v), np.asarray(other.params[k]))
    host = {k: np.full(tuple(v.shape), 0.5) for k, v in model.params.items()}
    model.set_params(host)
    host["0.W"][...] = 7.0  # set_params copies: the caller's arrays stay theirs
    np.testing.assert_array_equal(backend.to_numpy(model.params["0.W"]), 0.5)


@pytest.mark.parametrize("change, words", [
    (lambda p: {**p, "9.W": p["0.W"]}, ["unknown", "9.W"]),
    (lambda p: {k: v for k, v in p.items() if k != "2.b"}, ["missing", "2.b"]),
    (lambda p: {**p, "2.W": np.zeros((5, 2))}, ["2.W", "(5, 2)", "(4, 2)"]),
])
def test_set_params_validates_and_leaves_params_unchanged(change, words):
    model = xn.mlp([3, 4, 2], seed=0, backend="numpy")
    before = _host(model)
    bad = change({k: np.ones(v.shape) for k, v in before.items()})
    with pytest.raises(xn.ModelError) as info:
        model.set_params(bad)
    for word in words:
        assert word in str(info.value)
    for k, v in _host(model).items():
        np.testing.assert_array_equal(v, before[k])


# ----------------------------------------------------------------------------- to()


def test_to_moves_params_and_optimizer_state_and_training_continues(backend):
    X, y = _blobs()
    # The parity tests' shapes (64 x 4, [4, 16, 3], batches of 16): JAX compiles per shape.
    model = xn.mlp([4, 16, 3], seed=0, backend="numpy")
    opt = xn.Adam(lr=0.05)
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=16)
    params, state = _host(model), {k: np.asarray(v).copy() for k, v in opt.state_arrays().items()}

    assert model.to(backend.name) is model
    assert model.backend is backend
    for k, v in model.params.items():
        assert backend.owns(v), k
        np.testing.assert_array_equal(backend.to_numpy(v), params[k])
    for k, v in opt.state_arrays().items():
        assert backend.owns(v), k
        np.testing.assert_array_equal(backend.to_numpy(v), state[k])

    loss_before = model.evaluate(X, y, loss="cross_entropy")["loss"]
    model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=16)
    assert opt.iterations == 4 * 4  # the same optimizer went on counting
    assert model.evaluate(X, y, loss="cross_entropy")["loss"] < loss_before


def test_to_changes_dtype():
    model = xn.mlp([3, 4, 2], seed=0, backend="numpy")
    model.to("numpy", dtype="float64")
    assert all(v.dtype == np.float64 for v in model.params.values())


# ----------------------------------------------------------------------------- predict


def test_predict_converts_numpy_lists_and_other_backends(backend):
    model = xn.mlp([3, 5, 2], seed=0, backend=backend)
    X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    ref = backend.to_numpy(model.predict(X))
    assert ref.shape == (4, 2)
    sources = [X.tolist(), X.astype(np.float64), backends.get("array_api_strict").asarray(X),
               backends.get("numpy").asarray(X)]
    for source in sources:
        out = model.predict(source)
        assert backend.owns(out)
        np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-6, atol=1e-7)
    batched = model.predict(X, batch_size=3)  # a short last batch
    np.testing.assert_allclose(backend.to_numpy(batched), ref, rtol=1e-6, atol=1e-7)


def test_dropout_is_the_identity_at_predict_and_evaluate_time():
    X, y = _blobs(20)
    with_dropout = xn.mlp([4, 8, 3], dropout=0.5, seed=0, backend="numpy")
    plain = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    plain.set_params({k.replace("3.", "2."): v for k, v in with_dropout.params.items()})
    first, second = with_dropout.predict(X), with_dropout.predict(X)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, plain.predict(X), rtol=1e-6)
    assert with_dropout.evaluate(X, y, "cross_entropy") == plain.evaluate(X, y, "cross_entropy")


def test_dropout_changes_training_steps():
    """The other side of the identity test: dropout is live inside fit."""
    X, y = _blobs(20)
    a = xn.mlp([4, 8, 3], dropout=0.5, seed=0, backend="numpy")
    b = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    for m in (a, b):
        m.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.1), epochs=1, batch_size=20)
    assert not np.array_equal(a.params["0.W"], b.params["0.W"])


# ----------------------------------------------------------------------------- fit / evaluate


def test_fit_history_has_per_epoch_loss_and_validation_metrics():
    X, y = _blobs()
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    history = model.fit(X[:40], y[:40], loss="cross_entropy", optimizer=xn.Adam(lr=0.05),
                        epochs=4, batch_size=16, validation_data=(X[40:], y[40:]))
    assert set(history.history) == {"loss", "val_loss", "val_accuracy"}
    for values in history.history.values():
        assert len(values) == 4
        assert all(isinstance(v, float) for v in values)
    assert history.history["loss"][-1] < history.history["loss"][0]
    final = model.evaluate(X[40:], y[40:], loss="cross_entropy")
    assert final["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    assert final["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])


def test_fit_without_validation_logs_only_loss():
    X, y = _blobs(20)
    history = xn.mlp([4, 3, 1], seed=0, backend="numpy").fit(X, y.astype(float), epochs=2)
    assert set(history.history) == {"loss"}


def test_evaluate_returns_loss_and_accuracy(backend):
    X, y = _blobs(30)
    model = xn.mlp([4, 6, 3], seed=0, backend=backend)
    result = model.evaluate(X, y, loss="cross_entropy")
    assert set(result) == {"loss", "accuracy"}
    logits = backend.to_numpy(model.predict(X)).astype(np.float64)
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(logits, axis=1) == y))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-np.mean(log_p[np.arange(30), y]), rel=1e-5)


def test_evaluate_regression_has_loss_and_regression_metrics():
    X, y = _blobs(10)
    model = xn.mlp([4, 3, 1], seed=0, backend="numpy")
    result = model.evaluate(X, y.astype(float), loss="mse")
    assert set(result) == {"loss", "mse", "mae", "r2"}
    pred = model.predict(X)[:, 0]
    assert result["loss"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)
    assert result["mse"] == pytest.approx(result["loss"], rel=1e-5)


# ----------------------------------------------------------------------------- EarlyStopping


class _Recorder(xn.Callback):
    def __init__(self):
        self.params = []

    def on_epoch_end(self, epoch, logs):
        self.params.append(_host(self.model))


@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping_waits_patience_epochs_without_improvement(patience):
    X, y = _blobs()
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    # min_delta larger than any possible gain: only the first epoch ever counts as better.
    stop = xn.EarlyStopping(monitor="loss", patience=patience, min_delta=1e9)
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=10,
                        callbacks=[stop])
    assert len(history.history["loss"]) == patience + 2
    assert stop.stopped_epoch == patience + 1


def test_early_stopping_does_not_stop_while_improving():
    X, y = _blobs()
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    stop = xn.EarlyStopping(monitor="loss", patience=0, min_delta=0.0)
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=0.01), epochs=5,
                        batch_size=None, callbacks=[stop])  # full batch, small lr: monotone
    assert len(history.history["loss"]) == 5
    assert stop.stopped_epoch is None


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restore_best_weights(restore):
    X, y = _blobs()
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    record = _Recorder()
    stop = xn.EarlyStopping(monitor="loss", patience=2, min_delta=1e9,
                            restore_best_weights=restore)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=10,
              callbacks=[record, stop])
    expected = record.params[0] if restore else record.params[-1]  # best = the first epoch
    for k, v in _host(model).items():
        np.testing.assert_array_equal(v, expected[k])
    assert not np.array_equal(record.params[0]["0.W"], record.params[-1]["0.W"])


def test_early_stopping_monitors_val_loss_by_default():
    stop = xn.EarlyStopping(patience=0)
    stop.set_model(xn.mlp([2, 1], backend="numpy"))
    stop.on_train_begin({})
    stop.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    stop.on_epoch_end(1, {"loss": 0.5, "val_loss": 2.0})  # train loss better, val worse
    assert stop.model.stop_training


@pytest.mark.parametrize("kwargs, word", [({"patience": -1}, "patience"),
                                          ({"min_delta": -0.1}, "min_delta"),
                                          ({"mode": "up"}, "mode")])
def test_early_stopping_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        xn.EarlyStopping(**kwargs)


# ----------------------------------------------------------------------------- clear errors


def test_mismatched_widths_name_the_layer_and_both_widths():
    with pytest.raises(xn.ModelError) as info:
        xn.Sequential(xn.Dense(4, 8), xn.ReLU(), xn.Dense(5, 2))
    message = str(info.value)
    assert "layer 2" in message and "Dense" in message
    assert "5" in message and "8" in message


def test_input_of_the_wrong_width_names_the_layer_and_both_widths():
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    with pytest.raises(xn.DataError) as info:
        model.predict(np.zeros((2, 5)))
    message = str(info.value)
    assert "5 features" in message and "expects 4" in message and "layer 0 (Dense)" in message


def test_bad_data_raises_before_training_changes_anything():
    X, y = _blobs(20)
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    before = _host(model)
    for bad_y, word in [(y[:10], "samples"), (y + 5, "labels")]:
        with pytest.raises(xn.DataError, match=word):
            model.fit(X, bad_y, loss="cross_entropy", epochs=1)
    for k, v in _host(model).items():
        np.testing.assert_array_equal(v, before[k])
    assert model.optimizer is None


def test_unknown_loss_lists_the_known_ones():
    model = xn.mlp([4, 3], seed=0, backend="numpy")
    X, y = _blobs(6)
    for call in (lambda: model.fit(X, y, loss="hinge"), lambda: model.evaluate(X, y, "hinge"),
                 lambda: model.loss_and_grads(X, y, loss="hinge")):
        with pytest.raises(ValueError) as info:
            call()
        assert "hinge" in str(info.value)
        for name in LOSSES:
            assert name in str(info.value)


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        xn.mlp([4, 8, 3], activation="swish")
    assert "swish" in str(info.value)
    for name in ACTIVATIONS:
        assert name in str(info.value)


def test_unknown_optimizer_lists_the_known_ones():
    X, y = _blobs(6)
    with pytest.raises(ValueError) as info:
        xn.mlp([4, 3], seed=0, backend="numpy").fit(X, y, "cross_entropy", optimizer="lbfgs")
    assert "lbfgs" in str(info.value)
    for name in OPTIMIZERS:
        assert name in str(info.value)


@pytest.mark.parametrize("make", [lambda: xn.Dense(0, 3), lambda: xn.Dense(2, 2.5),
                                  lambda: xn.Dropout(1.0), lambda: xn.Dense(2, 2, init="zeros"),
                                  lambda: xn.SGD(lr=-1), lambda: xn.Adam(betas=(0.9, 1.0))])
def test_bad_constructor_arguments_are_refused(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("loss, squash", [("cross_entropy", "softmax"),
                                          ("binary_cross_entropy", "sigmoid")])
def test_fit_warns_when_a_logit_loss_follows_a_squashing_layer(loss, squash):
    model = xn.mlp([2, 4, 2 if squash == "softmax" else 1], output_activation=squash,
                   backend="numpy")
    X = np.zeros((4, 2), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.warns(UserWarning, match="takes logits"):
        model.fit(X, y, loss=loss, epochs=1)


def test_fit_does_not_warn_for_logits():
    import warnings

    model = xn.mlp([2, 4, 2], backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1]),
                  loss="cross_entropy", epochs=1)


# ----------------------------------------------------------------------------- memory


def test_weights_that_cannot_be_drawn_are_refused_before_drawing(monkeypatch):
    from xpnet.backend import memory

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2**20)  # 1 MiB free

    def drawn(self):
        raise AssertionError("the weights were drawn")

    monkeypatch.setattr(xn.Sequential, "_init_host", drawn)
    with pytest.raises(xn.OutOfMemoryError) as info:
        xn.mlp([1000, 1000, 2], backend="numpy")
    message = str(info.value)
    for part in ("Sequential: the initial weights need about", "only 1.0 MiB is free",
                 "layer 0 (Dense 1000 -> 1000, 1,001,000 parameters)"):
        assert part in message, message


def test_fit_checks_memory_with_its_batch_optimizer_slots_and_the_guards_snapshot(monkeypatch):
    from xpnet.backend import memory
    from xpnet.train import loop

    seen = []
    monkeypatch.setattr(loop, "check_fits", lambda *args, **kw: seen.append((args, kw)))
    X, y = _blobs(20)
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(), batch_size=8, epochs=1)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", batch_size=None, epochs=1)
    (adam, adam_kw), (sgd, sgd_kw) = seen
    assert adam[1:4] == ([4, 8, 3], 8, 2) and sgd[1:4] == ([4, 8, 3], 20, 0)
    assert adam_kw["snapshots"] == sgd_kw["snapshots"] == 1 and adam_kw["built"]

    monkeypatch.undo()
    monkeypatch.setattr(memory, "available_bytes", lambda backend: 100)
    model = xn.mlp([4, 8, 3], seed=0, backend="numpy")
    before = _host(model)
    with pytest.raises(xn.OutOfMemoryError, match="to fit .* only 100 B is free"):
        model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=1)
    assert model.optimizer is None
    for name, value in _host(model).items():
        np.testing.assert_array_equal(value, before[name])
