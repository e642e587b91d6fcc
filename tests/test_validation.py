"""The bad-input catalogue: every boundary rejects bad input by name, before any state changes.

Each case builds a model, trains it one epoch with Adam (so optimizer state exists), takes a
NumPy snapshot of parameters and optimizer state, triggers the error and checks the exception
type, the key words of its message, and that the snapshot is bit-identical afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.data import DataError

N_IN, N_OUT, N = 3, 4, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, N_IN)).astype("float32")
    y = rng.integers(0, N_OUT, N)
    return X, y


def _trained(backend="numpy"):
    model = xn.mlp([N_IN, 5, N_OUT], seed=0, backend=backend)
    X, y = _data()
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=4)
    return model


def _snapshot(model) -> dict:
    """Host copies of everything an error must not touch."""
    snap = {f"param/{k}": model.backend.to_numpy(v).copy() for k, v in model.params.items()}
    opt = model.optimizer
    snap.update({f"opt/{k}": model.backend.to_numpy(v).copy()
                 for k, v in opt.state_arrays().items()})
    snap["iterations"] = opt.iterations
    snap["optimizer"] = opt
    snap["backend"] = model.backend
    return snap


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == after[key].dtype and value.shape == after[key].shape, key
            assert value.tobytes() == after[key].tobytes(), f"{key} changed"
        else:
            assert value is after[key] or value == after[key], f"{key} changed"


def _trained_optimizer(sizes, dtype=None):
    model = xn.mlp(sizes, seed=1, dtype=dtype)
    X, y = _data()
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=4)
    return model.optimizer


X0, y0 = _data()
nan_X = X0.copy()
nan_X[2, 1] = np.nan
inf_X = X0.copy()
inf_X[0, 0] = np.inf
nan_y = y0.astype("float64")
nan_y[3] = np.nan
onehot5 = np.eye(5)[np.arange(N) % 5]
fit_ce = dict(loss="cross_entropy", epochs=1)


def fit(X=X0, y=y0, **kw):
    return lambda m: m.fit(X, y, **{**fit_ce, **kw})


# (id, call on the model, exception type, key words that the message must contain)
CASES = [
    # --- data given to fit
    ("strings", fit(X=np.array([["a", "b", "c"]] * N)), DataError, ["X", "numeric"]),
    ("ragged", fit(X=[[1.0, 2.0, 3.0], [1.0]] * 4), DataError, ["X"]),
    ("complex", fit(X=X0 + 1j), DataError, ["real"]),
    ("X 1-D", fit(X=X0[:, 0]), DataError, ["2-D", "reshape"]),
    ("X 3-D", fit(X=X0[:, :, None]), DataError, ["2-D", "(8, 3, 1)"]),
    ("X scalar", fit(X=3.0), DataError, ["2-D"]),
    ("feature count", fit(X=np.ones((N, 7))), DataError, ["7 features", "layer 0", "expects 3"]),
    ("length mismatch", fit(y=y0[:5]), DataError, ["8 samples", "5", "match"]),
    ("y scalar", fit(y=1), DataError, ["samples", "scalar"]),
    ("empty", fit(X=np.ones((0, N_IN)), y=np.ones(0)), DataError, ["empty"]),
    ("NaN in X", fit(X=nan_X), DataError, ["X", "NaN"]),
    ("Inf in X", fit(X=inf_X), DataError, ["X", "Inf"]),
    ("NaN in y", fit(y=nan_y), DataError, ["y", "NaN"]),
    ("label too big", fit(y=np.full(N, N_OUT)), DataError, ["labels", "4 outputs", "[0, 3]"]),
    ("negative label", fit(y=-(y0 + 1)), DataError, ["labels", "[0, 3]"]),
    ("non-integer label", fit(y=y0 + 0.5), DataError, ["integer"]),
    ("one-hot width", fit(y=onehot5), DataError, ["one-hot", "5 columns", "4 outputs"]),
    ("negative one-hot", fit(y=-np.eye(N_OUT)[y0]), DataError, ["one-hot", "negative"]),
    ("labels 3-D", fit(y=np.zeros((N, 2, 2))), DataError, ["cross_entropy", "shape"]),
    ("mse y shape", fit(y=np.ones((N, 2)), loss="mse"), DataError, ["mse", "(8, 4)"]),
    ("bce y range", fit(y=np.full((N, N_OUT), 2.0), loss="binary_cross_entropy"), DataError,
     ["[0, 1]"]),
    ("val X width", fit(validation_data=(np.ones((4, 2)), y0[:4])), DataError,
     ["X_val", "2 features"]),
    ("val y NaN", fit(validation_data=(X0, nan_y)), DataError, ["y_val", "NaN"]),
    ("val not a pair", fit(validation_data=(X0,)), ValueError, ["validation_data", "pair"]),
    ("validation_split 1", fit(validation_split=1.0), ValueError, ["validation_split"]),
    # --- hyper-parameters given to fit
    ("lr zero", fit(optimizer="sgd", lr=0.0), ValueError, ["lr", "> 0"]),
    ("lr negative", fit(optimizer="adam", lr=-1e-3), ValueError, ["lr", "> 0"]),
    ("lr NaN", fit(optimizer="sgd", lr=float("nan")), ValueError, ["lr", "finite"]),
    ("lr twice", fit(optimizer=xn.SGD(lr=0.1), lr=0.1), ValueError, ["lr", "not both"]),
    ("batch_size 0", fit(batch_size=0), ValueError, ["batch_size", ">= 1"]),
    ("batch_size -3", fit(batch_size=-3), ValueError, ["batch_size"]),
    ("batch_size float", fit(batch_size=2.5), ValueError, ["batch_size", "int"]),
    ("epochs -1", fit(epochs=-1), ValueError, ["epochs", ">= 0"]),
    ("epochs float", fit(epochs=1.5), ValueError, ["epochs"]),
    ("unknown loss", fit(loss="hinge"), ValueError, ["hinge", "mse", "cross_entropy"]),
    ("unknown optimizer", fit(optimizer="lbfgs"), ValueError, ["lbfgs", "sgd", "rmsprop"]),
    ("bad callback", fit(callbacks=[print]), TypeError, ["callbacks"]),
    ("bad verbose", fit(verbose=7), ValueError, ["verbose"]),
    # --- the other entry points
    ("predict width", lambda m: m.predict(np.ones((2, 5))), DataError, ["5 features", "expects 3"]),
    ("predict NaN", lambda m: m.predict(nan_X), DataError, ["NaN"]),
    ("predict 1-D", lambda m: m.predict(X0[0]), DataError, ["2-D"]),
    ("predict batch_size", lambda m: m.predict(X0, batch_size=-1), ValueError, ["batch_size"]),
    ("optimizer of another model", fit(optimizer=_trained_optimizer([N_IN, 7, N_OUT])),
     ValueError, ["optimizer", "'0.W'", "(3, 7)", "another model"]),
    ("optimizer of another dtype", fit(optimizer=_trained_optimizer([N_IN, 5, N_OUT], "float64")),
     ValueError, ["optimizer", "float32", "new optimizer"]),
    ("evaluate length", lambda m: m.evaluate(X0, y0[:3], loss="cross_entropy"), DataError,
     ["samples"]),
    ("evaluate batch_size", lambda m: m.evaluate(X0, y0, "cross_entropy", batch_size=0),
     ValueError, ["batch_size"]),
    ("evaluate loss", lambda m: m.evaluate(X0, y0, loss="hinge"), ValueError, ["hinge", "known"]),
    ("grads label", lambda m: m.loss_and_grads(X0, y0 + N_OUT, loss="cross_entropy"), DataError,
     ["labels"]),
    ("grads width", lambda m: m.loss_and_grads(X0[:, :2], y0, loss="cross_entropy"), DataError,
     ["2 features"]),
    # --- set_params
    ("params shape", lambda m: m.set_params({**m.params, "0.W": np.ones((3, 6))}), xn.ModelError,
     ["0.W", "(3, 6)", "(3, 5)"]),
    ("params missing", lambda m: m.set_params({"0.W": np.ones((3, 5))}), xn.ModelError,
     ["missing", "2.W"]),
    ("params unknown", lambda m: m.set_params({**m.params, "9.W": np.ones(1)}), xn.ModelError,
     ["unknown", "9.W"]),
    ("params NaN", lambda m: m.set_params({**m.params, "2.b": np.full(N_OUT, np.nan)}), DataError,
     ["2.b", "NaN"]),
    ("params strings", lambda m: m.set_params({**m.params, "0.b": np.array(list("abcde"))}),
     DataError, ["0.b", "numeric"]),
    ("params not array", lambda m: m.set_params({**m.params, "0.b": object()}), DataError,
     ["0.b"]),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_changes_nothing(call, error, words):
    model = _trained()
    before = _snapshot(model)
    with pytest.raises(error) as info:
        call(model)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    _assert_same(before, _snapshot(model))


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("make, words", [
    (lambda: xn.Dropout(1.0), ["Dropout", "[0, 1)"]),
    (lambda: xn.Dropout(-0.1), ["Dropout", "[0, 1)"]),
    (lambda: xn.mlp([3, 4, 2], activation="swish"), ["swish", "relu", "tanh"]),
    (lambda: xn.Dense(3, 0), ["n_out", "positive"]),
    (lambda: xn.Sequential(xn.Dense(3, 4), xn.ReLU(), xn.Dense(5, 2)), ["layer 2", "4"]),
    (lambda: xn.SGD(lr=0.1, momentum=1.0), ["momentum", "< 1"]),
    (lambda: xn.Adam(lr=1e-3, betas=(0.9,)), ["betas"]),
    (lambda: xn.SGD(lr=0.1, clipnorm=0.0), ["clipnorm", "> 0"]),
])
def test_bad_constructor_arguments_are_named(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_backend_bad_input_is_caught_before_the_device(backend):
    """The same checks hold on every backend, for arrays of that backend too."""
    model = _trained(backend)
    before = _snapshot(model)
    bad = backend.asarray(nan_X)
    with pytest.raises(DataError, match="NaN"):
        model.fit(bad, y0, loss="cross_entropy")
    with pytest.raises(DataError, match="expects 3"):
        model.predict(backend.asarray(np.ones((2, 4))))
    with pytest.raises(DataError, match="labels"):
        model.fit(X0, y0 + N_OUT, loss="cross_entropy")
    _assert_same(before, _snapshot(model))


def test_arrays_of_another_backend_are_converted():
    torch = pytest.importorskip("torch")
    model = _trained()
    expected = model.predict(X0)
    got = model.predict(torch.asarray(X0))
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected)
    model.set_params({k: torch.asarray(v) for k, v in model.params.items()})
    np.testing.assert_array_equal(model.predict(X0), expected)


def test_arrays_of_the_same_library_on_another_device_are_moved():
    xs = pytest.importorskip("array_api_strict")
    model = xn.mlp([N_IN, 5, N_OUT], seed=0, backend="array_api_strict")
    elsewhere = xs.asarray(X0, device=xs.Device("device1"))
    out = model.predict(elsewhere)
    assert out.device == model.backend.device
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model.predict(X0)))


def test_arrays_that_cannot_be_moved_name_both_sides():
    torch = pytest.importorskip("torch")
    model = _trained()
    before = _snapshot(model)
    with pytest.raises(DataError) as info:
        model.fit(torch.empty((N, N_IN), device="meta"), y0, loss="cross_entropy")
    for word in ("torch", "meta", "numpy", "cpu"):
        assert word in str(info.value)
    _assert_same(before, _snapshot(model))


def test_torch_tensors_that_require_grad_are_taken_as_plain_data():
    """Otherwise every in-place update would extend an autograd graph (and warn)."""
    torch = pytest.importorskip("torch")
    model = xn.mlp([N_IN, 5, N_OUT], seed=0, backend="torch")
    linear = torch.nn.Linear(N_IN, 5)
    model.set_params({**model.params, "0.W": linear.weight.T, "0.b": linear.bias})
    X = torch.asarray(X0).requires_grad_()
    model.fit(X, y0, loss="cross_entropy", epochs=2, batch_size=4)
    assert not any(p.requires_grad for p in model.params.values())
    assert not model.predict(X).requires_grad
    assert linear.weight.grad is None


# --------------------------------------------------------------------------- issue 9, family 4
# Validation that ran too late or said the wrong thing: each family below failed on the code
# before it (a wrapped-around label, "NaN or Inf" for a finite value, rows of 7.0 accepted as
# one-hot, np.matrix and masked arrays reaching the layers, a TypeError for a model without
# a Dense layer).


def _message_of(call, error=DataError) -> str:
    model = _trained()
    before = _snapshot(model)
    with pytest.raises(error) as info:
        call(model)
    _assert_same(before, _snapshot(model))
    return str(info.value)


@pytest.mark.parametrize("labels, shown", [
    (np.full(N, 1e20), "1e+20"),
    (np.full(N, -1e20), "-1e+20"),
    (np.array([0, 1, 2, 3, 0, 1, 2, 2**63 + 5], dtype=np.uint64), str(2**63 + 5)),
    (np.array([0.0, 1, 2, 3, 0, 1, 2, 1e300]), "1e+300"),
])
def test_labels_out_of_range_are_reported_with_their_real_value(labels, shown):
    message = _message_of(fit(y=labels))
    assert shown in message and "[0, 3]" in message
    assert "-9223372036854775808" not in message


@pytest.mark.parametrize("call, name", [
    (fit(X=X0.astype(np.float64) * 1e300), "X"),
    (fit(y=np.full((N, N_OUT), 1e39) / np.float64(1.0), loss="mse"), "y"),
    (fit(validation_data=(X0.astype(np.float64) + 1e200, y0)), "X_val"),
    (lambda m: m.predict([[10**39, 0, 0]]), "X"),
    (lambda m: m.set_params({**m.params, "0.b": np.full(5, -1e300)}), "0.b"),
])
def test_finite_values_beyond_float32_are_an_overflow_not_nan(call, name):
    message = _message_of(call)
    assert name in message and "float32" in message and "3.40282e+38" in message
    assert "NaN" not in message


def test_overflow_names_the_largest_magnitude():
    assert "1e+300" in _message_of(lambda m: m.predict(np.full((2, N_IN), 1e300)))


def test_long_double_beyond_float64_is_an_overflow_for_a_float64_model():
    model = xn.mlp([N_IN, 2], dtype="float64")
    with pytest.raises(DataError, match=r"float64's range.*1e\+400"):
        model.predict(np.full((2, N_IN), np.longdouble("1e400")))


def test_python_ints_beyond_float64_are_named():
    with pytest.raises(DataError, match="401 digits.*float64"):
        _trained().predict([[10**400, 0, 0]])


def test_nan_keeps_its_own_message_with_the_first_position():
    message = _message_of(lambda m: m.predict(nan_X))
    assert "1 NaN or Inf" in message and "row 2, column 1" in message


@pytest.mark.parametrize("T, words", [
    (np.full((N, N_OUT), 7.0), ["row 0", "sums to 28"]),
    (np.zeros((N, N_OUT)), ["row 0", "sums to 0"]),
    (np.eye(N_OUT)[y0] * 2, ["row 0", "sums to 2"]),
    (np.vstack([np.eye(N_OUT)[y0[:3]], [[0.5, 0.5, 0.5, -0.5]], np.eye(N_OUT)[y0[4:]]]),
     ["negative", "row 3"]),
    (np.vstack([np.eye(N_OUT)[y0[:5]], [[0.3, 0.3, 0.3, 0.0]], np.eye(N_OUT)[y0[6:]]]),
     ["row 5", "sums to 0.9"]),
])
def test_one_hot_rows_must_be_distributions(T, words):
    message = _message_of(fit(y=T))
    for word in ["one-hot", *words]:
        assert word in message, (word, message)


@pytest.mark.parametrize("dtype, wobble, accepted", [
    ("float64", 1e-7, True), ("float64", 1e-5, False),
    ("float32", 5e-4, True), ("float32", 5e-3, False),
])
def test_one_hot_tolerance_follows_the_dtype_it_came_in(dtype, wobble, accepted):
    T = np.full((N, N_OUT), 0.25) + np.array([wobble, 0, 0, 0])
    call = fit(y=T.astype(dtype))
    if accepted:
        call(_trained())
    else:
        _message_of(call)


def test_soft_labels_that_are_distributions_are_accepted():
    soft = np.full((N, N_OUT), 0.1) + 0.6 * np.eye(N_OUT)[y0]
    _trained().fit(X0, soft, loss="cross_entropy", epochs=1)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_np_matrix_is_a_plain_array_and_gives_the_same_results():
    model = _trained()
    expected = model.predict(X0)
    got = model.predict(np.matrix(X0))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, expected)
    model.fit(np.matrix(X0), np.matrix(y0).T, loss="cross_entropy", epochs=1)


def test_masked_arrays_are_refused_when_anything_is_masked():
    masked = np.ma.masked_array(X0, mask=np.zeros_like(X0, bool))
    masked[3, 2] = np.ma.masked
    message = _message_of(fit(X=masked))
    assert "masked" in message and "row 3, column 2" in message and "X" in message


def test_masked_arrays_without_masked_entries_are_their_data():
    model = _trained()
    np.testing.assert_array_equal(model.predict(np.ma.masked_array(X0)), model.predict(X0))


def test_masked_targets_are_refused_by_name():
    y = np.ma.masked_array(y0, mask=[0, 0, 1, 0, 0, 0, 0, 0])
    assert "y is a masked array" in _message_of(fit(y=y))


class _TableLike:
    """What pandas and friends offer: an ``__array__`` and nothing of the array API."""

    def __init__(self, values):
        self.values = values

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)


@pytest.mark.parametrize("make", [
    lambda: _TableLike(X0),
    lambda: memoryview(np.ascontiguousarray(X0)),
    lambda: X0.tolist(),
    lambda: tuple(map(tuple, X0.tolist())),
    lambda: np.asarray(X0, dtype=object),
])
def test_array_likes_of_numbers_are_accepted(make):
    model = _trained()
    np.testing.assert_allclose(model.predict(make()), model.predict(X0), rtol=1e-6)


def test_float16_and_long_double_features_are_read_in_the_model_dtype():
    model = _trained()
    for X in (X0.astype(np.float16), X0.astype(np.longdouble)):
        np.testing.assert_array_equal(model.predict(X), model.predict(X.astype(np.float32)))


def test_bool_features_are_zero_and_one():
    model = _trained()
    np.testing.assert_array_equal(model.predict(X0 > 0), model.predict((X0 > 0).astype(float)))


def test_integer_targets_for_mse_are_values():
    model = xn.mlp([N_IN, 1])
    model.fit(X0, np.arange(N), epochs=1)


@pytest.mark.parametrize("bad, words", [
    ([[1.0, 2.0, 3.0], [1.0, 2.0]] * 4, ["X", "ragged", "row 1 has 2 entries"]),
    ([[1.0, 2.0, 3.0], [1.0, [2.0], 3.0]] * 4, ["X", "ragged", "in row 1"]),
    ("abc", ["X is str", "2-D"]),
    (b"abc", ["X is bytes"]),
    (None, ["X is NoneType"]),
    ({"a": [1, 2, 3]}, ["X is dict"]),
    (np.zeros((N, N_IN), "datetime64[s]"), ["X", "dates", "datetime64"]),
    (np.zeros((N, N_IN), "timedelta64[s]"), ["X", "durations"]),
    (np.array([["1", "x", "3"]] * N), ["X", "text", "'x' at row 0, column 1"]),
    (np.zeros((N, N_IN), "S2"), ["X", "bytes"]),
    (np.array([[1, object(), 3]] * N, dtype=object), ["X", "row 0, column 1", "object"]),
    (np.zeros(N, dtype=[("a", "f4"), ("b", "f4"), ("c", "f4")]), ["X", "structured"]),
    (np.zeros((N, N_IN), complex), ["X", "complex"]),
    (np.zeros((0, N_IN)), ["X", "empty"]),
    (np.zeros((N, N_IN, 1)), ["X", "2-D", "(8, 3, 1)"]),
    (np.float64(1.0), ["X", "2-D", "single number"]),
])
def test_what_is_not_a_real_numeric_table_is_refused_by_name(bad, words):
    message = _message_of(fit(X=bad))
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("bad, words", [
    (np.zeros(N, "datetime64[s]"), ["y", "dates"]),
    (["a"] * N, ["y", "text"]),
    ([0, 1, [2, 3], 0, 1, 2, 3, 0], ["y", "ragged", "row 2"]),
    (None, ["y is NoneType"]),
])
def test_bad_targets_are_refused_by_name(bad, words):
    message = _message_of(fit(y=bad))
    for word in words:
        assert word in message, (word, message)


def test_validation_arrays_are_named_as_such():
    message = _message_of(fit(validation_data=([[1.0, 2.0, 3.0], [1.0]], y0[:2])))
    assert "X_val" in message and "ragged" in message


def test_a_model_without_parameters_is_refused_by_fit_as_nothing_to_train():
    model = xn.Sequential(xn.ReLU())
    for call in (lambda: model.fit(X0, y0, loss="cross_entropy"),
                 lambda: model.fit(X0, X0)):
        with pytest.raises(xn.ModelError, match="no Dense layer.*nothing to train"):
            call()
    assert model.optimizer is None
    np.testing.assert_array_equal(model.predict(X0), np.maximum(X0, 0))


def test_a_parameter_free_model_can_be_evaluated():
    model = xn.Sequential(xn.ReLU())
    assert model.evaluate(X0, np.maximum(X0, 0))["loss"] == 0.0
    # its output is as wide as X: targets of another width are refused by name
    with pytest.raises(DataError, match=r"mse"):
        model.evaluate(X0, np.ones((X0.shape[0], X0.shape[1] + 1)))
    loss, grads = model.loss_and_grads(X0, np.maximum(X0, 0))
    assert loss == 0.0 and grads == {}


def test_a_bad_seed_is_named():
    with pytest.raises(ValueError, match="seed must be None or an int >= 0; got -1"):
        xn.data.host_rng(-1)
    with pytest.raises(ValueError, match="seed"):
        xn.data.host_rng("a")


def test_device_arrays_beyond_float32_are_an_overflow_on_every_backend(backend):
    model = _trained(backend)
    before = _snapshot(model)
    xp = backend.xp

    def huge(shape):
        return xp.asarray(np.full(shape, 1e300), dtype=xp.float64, device=backend.device)

    with pytest.raises(DataError, match=r"X holds values beyond float32's range.*1e\+300"):
        model.predict(huge((2, N_IN)))
    with pytest.raises(DataError, match=r"set_params: 0\.b holds values beyond.*1e\+300"):
        model.set_params({**model.params, "0.b": huge((5,))})
    _assert_same(before, _snapshot(model))


# --------------------------------------------------------------------------- layer arguments


@pytest.mark.parametrize("width", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integers_are_widths(width, tmp_path):
    model = xn.mlp([3, np.int64(8), width])
    assert model.n_out == 2 and type(model.layers[-1].n_out) is int
    model.save(tmp_path / "m.npz")  # config() is JSON: plain ints only
    assert xn.load(tmp_path / "m.npz").param_shapes() == model.param_shapes()


@pytest.mark.parametrize("width, words", [
    (2.0, ["n_out", "2.0", "float"]), (True, ["n_out", "bool"]), (np.True_, ["n_out"]),
    (0, ["n_out", "positive"]), (np.int64(-3), ["n_out", "positive"]), ("2", ["n_out", "str"]),
])
def test_widths_that_are_not_positive_integers_are_refused(width, words):
    with pytest.raises(ValueError) as info:
        xn.Dense(3, width)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("make, value", [
    (lambda: xn.LeakyReLU(np.float32(0.5)), 0.5), (lambda: xn.LeakyReLU(np.int64(1)), 1.0),
    (lambda: xn.Dropout(np.float32(0.25)), 0.25), (lambda: xn.Dropout(np.float64(0.5)), 0.5),
])
def test_numpy_numbers_are_layer_arguments(make, value):
    layer = make()
    assert list(layer.config().values()) == [value]
    assert type(next(iter(layer.config().values()))) is float


@pytest.mark.parametrize("make, words", [
    (lambda: xn.LeakyReLU(True), ["slope", "True"]),
    (lambda: xn.LeakyReLU(float("inf")), ["slope", "finite"]),
    (lambda: xn.Dropout(np.True_), ["Dropout", "[0, 1)"]),
    (lambda: xn.Dense(3, 2, bias="no"), ["bias", "True or False"]),
])
def test_bool_like_layer_arguments_are_refused(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_targets_of_no_samples_are_empty_not_a_reduction_error():
    backend = xn.backend.get("numpy")
    for loss in ("cross_entropy", "binary_cross_entropy"):
        with pytest.raises(DataError, match=r"y is empty: shape \(0,\)"):
            xn.data.targets(backend, np.zeros(0), loss, 1, 0)


def test_a_zero_d_object_number_is_a_shape_problem_not_a_type_problem():
    with pytest.raises(DataError, match=r"2-D.*shape \(\)"):
        _trained().predict(np.array(3.5, dtype=object))
