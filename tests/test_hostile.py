"""The hostile-input catalogue: every public entry point, fed what a user should not feed it.

Each case is a row ``(id, call, error, words)``: ``call`` gets a fresh ``World`` (a model
trained one epoch with Adam, so optimizer state exists, with a checkpoint of it on disk) and
must raise ``error`` with every one of ``words`` in the message. Afterwards parameters
(bit-identical host copies), optimizer state and iterations, the optimizer object and its
config, the model's backend, the current backend and every file under the world's folder
must be exactly as before.

Which error a user gets, decided once for the whole API:

- ``DataError`` for data: X, y, X_val, y_val, parameter values (what, shape, dtype);
- ``ModelError`` for the model's structure: layers, sizes, parameter names and shapes;
- ``ValueError`` for an argument with a bad value, including a number of the wrong kind
  (a bool or float where an int is meant, NaN, Inf, out of range);
- ``TypeError`` for an argument that must be an object of some kind (a callable, a
  Callback, a mapping, a path) and is something else;
- ``BackendError`` for a backend name, device or dtype that cannot be used;
- ``CheckpointError`` for a file that is not a complete, consistent checkpoint, and the
  operating system's ``OSError`` for a folder that cannot be written.

Rows whose fix belongs to a module being rewritten elsewhere (io/checkpoint.py) carry
``needs``: they run as ``xfail(strict=True)``, so each one turns into a failure the day it
is fixed, and the mark comes off.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpnet as xn
from xpnet import data
from xpnet.data import DataError
from xpnet.testing import assert_parity, check_grads

N_IN, N_OUT, N = 3, 4, 8
NAN, INF = float("nan"), float("inf")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, N_IN)).astype("float32"), rng.integers(0, N_OUT, N)


X0, y0 = _data()


def _with(X, index, value):
    out = np.array(X, dtype=np.float64)
    out[index] = value
    return out


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """What a case may touch: a trained model, its optimizer, a folder with a checkpoint."""

    tmp: Any
    backend: str = "numpy"
    model: Any = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model = trained(self.backend)
        self.checkpoint = os.path.join(self.tmp, "model.npz")
        with open(self.checkpoint, "wb") as fh:  # save() fsyncs: too slow for 300 worlds
            fh.write(_checkpoint_bytes())

    @property
    def opt(self):
        return self.model.optimizer

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)


@functools.cache
def _checkpoint_bytes() -> bytes:
    """The bytes ``save`` writes for ``trained()`` (the same on every call: seeded)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        trained().save(path)
        with open(path, "rb") as fh:
            return fh.read()


def trained(backend="numpy", sizes=(N_IN, 5, N_OUT), seed=0, dtype=None):
    """A model after one epoch of Adam: parameters and optimizer state both set."""
    model = xn.mlp(list(sizes), seed=seed, backend=backend, dtype=dtype)
    model.fit(X0, y0, loss="cross_entropy", optimizer=xn.Adam(lr=1e-2), epochs=1, batch_size=4)
    return model


def snapshot(world: World) -> dict:
    """Host copies of everything an error must leave alone."""
    model, opt = world.model, world.model.optimizer
    host = model.backend.to_numpy
    snap = {f"param/{k}": host(v).copy() for k, v in model.params.items()}
    snap.update({f"opt/{k}": host(v).copy() for k, v in opt.state_arrays().items()})
    snap.update(iterations=opt.iterations, optimizer=opt, config=repr(opt.config()),
                backend=model.backend, current=xn.current(), layers=list(model.layers))
    for folder, _, files in os.walk(world.tmp):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                snap[f"file/{os.path.relpath(path, world.tmp)}"] = fh.read()
    return snap


def assert_unchanged(before: dict, after: dict) -> None:
    assert before.keys() == after.keys(), sorted(set(before) ^ set(after))
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == after[key].dtype and value.shape == after[key].shape, key
            assert value.tobytes() == after[key].tobytes(), f"{key} changed"
        elif key in ("optimizer", "backend", "current"):
            assert value is after[key] or value == after[key], f"{key} changed"
        else:
            assert value == after[key], f"{key} changed"


# --------------------------------------------------------------------------- case helpers


@dataclass(frozen=True)
class Case:
    """One row of the catalogue; ``needs`` (the change and where) makes it a strict xfail."""

    id: str
    call: Callable[[World], Any]
    error: type | tuple
    words: tuple[str, ...]
    needs: str | None = None
    library: str | None = None  # a case about that library's devices: skipped without it


def case(id, call, error, words, needs=None, library=None) -> Case:
    return Case(id, call, error, tuple(words), needs, library)


FIT_DEFAULTS = dict(loss="cross_entropy", epochs=1)


def fit(X=X0, y=y0, **kw):
    """A call fitting the world's model (cross-entropy, one epoch unless told)."""
    return lambda w: w.model.fit(X, y, **{**FIT_DEFAULTS, **kw})


def fit_same_optimizer(**kw):
    """fit with the model's own optimizer: a failure must not touch its state either."""
    return lambda w: w.model.fit(X0, y0, **{**FIT_DEFAULTS, "optimizer": w.opt, **kw})


def predict(X, **kw):
    return lambda w: w.model.predict(X, **kw)


def evaluate(X=X0, y=y0, **kw):
    return lambda w: w.model.evaluate(X, y, **{"loss": "cross_entropy", **kw})


def grads(X=X0, y=y0, loss="cross_entropy"):
    return lambda w: w.model.loss_and_grads(X, y, loss=loss)


def set_param(name, value):
    """set_params with every name valid and ``name`` replaced by ``value``."""
    return lambda w: w.model.set_params({**w.model.params, name: value})


def make(factory, *args, **kw):
    """A call that only constructs something (the world must stay untouched anyway)."""
    return lambda w: factory(*args, **kw)


def sklearn_fit(kind, **params):
    """Fit an xpnet.sklearn estimator with ``params``; the world checks it stays unfitted."""

    def call(w):
        estimators = pytest.importorskip("xpnet.sklearn")
        est = getattr(estimators, kind)(max_iter=params.pop("max_iter", 2), **params)
        w.extra["estimator"] = est
        X = np.random.default_rng(0).standard_normal((20, N_IN))
        y = np.arange(20) % 2 if kind == "MLPClassifier" else np.linspace(0, 1, 20)
        est.fit(X, y)

    return call


def share_optimizer(w):
    """A second model of the same shape fitted with the first one's optimizer."""
    other = xn.mlp([N_IN, 5, N_OUT], seed=7)
    other.fit(X0, y0, loss="cross_entropy", optimizer=w.opt, epochs=1)


def truncated_checkpoint(w):
    with open(w.checkpoint, "rb") as fh:
        raw = fh.read()
    path = w.path("half.npz")
    with open(path, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    return path


def flipped_checkpoint(w):
    with open(w.checkpoint, "rb") as fh:
        raw = bytearray(fh.read())
    raw[len(raw) // 3] ^= 0x01
    path = w.path("flipped.npz")
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
    return path


def load_written(writer, **kw):
    """Write a file with ``writer(world)`` (part of the setup), then load it."""

    def call(w):
        path = writer(w)
        w.extra["setup_files"] = True
        return xn.load(path, **kw)

    return call


def junk_file(w):
    path = w.path("junk.npz")
    with open(path, "wb") as fh:
        fh.write(b"not a checkpoint at all")
    return path


def plain_npz(w):
    path = w.path("plain.npz")
    np.savez(path, X=np.ones(3))
    return path


def save_onto_a_folder(w):
    os.makedirs(w.path("folder.npz"))
    w.extra["setup_files"] = True
    w.model.save(w.path("folder.npz"))


def scheduler_returning(value):
    return fit_same_optimizer(callbacks=[xn.LearningRateScheduler(lambda epoch, lr: value)])


masked_X = np.ma.masked_array(X0, mask=np.zeros_like(X0, bool))
masked_X[1, 2] = np.ma.masked
onehot = np.eye(N_OUT)[y0]

# --------------------------------------------------------------------------- the catalogue

CASES = [
    # --- xn.use
    case("use unknown name", make(xn.use, "tensorflow"), xn.BackendError,
         ["tensorflow", "known backends", "numpy"]),
    case("use name not a str", make(xn.use, 3), xn.BackendError, ["backend name", "int"]),
    case("use dtype float16", make(xn.use, "numpy", dtype="float16"), xn.BackendError,
         ["dtype", "float16", "float32"]),
    case("use numpy on cuda", make(xn.use, "numpy", device="cuda"), xn.BackendError,
         ["numpy", "CPU", "cuda"]),
    case("use torch on a tpu", make(xn.use, "torch", device="tpu"), xn.BackendError,
         ["torch", "tpu", "cpu"], library="torch"),
    # --- xn.mlp
    case("mlp one size", make(xn.mlp, [3]), xn.ModelError, ["at least two sizes"]),
    case("mlp size 0", make(xn.mlp, [3, 0]), ValueError, ["n_out", "positive"]),
    case("mlp size 2.0", make(xn.mlp, [3, 2.0]), ValueError, ["n_out", "2.0", "float"]),
    case("mlp size True", make(xn.mlp, [3, True]), ValueError, ["n_out", "bool"]),
    case("mlp size np.float64", make(xn.mlp, [3, np.float64(4)]), ValueError, ["n_out"]),
    case("mlp activation", make(xn.mlp, [3, 4, 2], activation="swish"), xn.ModelError,
         ["swish", "relu", "tanh"]),
    case("mlp output activation", make(xn.mlp, [3, 2], output_activation="swish"),
         xn.ModelError, ["swish"]),
    case("mlp dropout 1", make(xn.mlp, [3, 4, 2], dropout=1.0), ValueError,
         ["Dropout", "[0, 1)"]),
    case("mlp dropout NaN", make(xn.mlp, [3, 4, 2], dropout=NAN), ValueError, ["Dropout"]),
    case("mlp init", make(xn.mlp, [3, 2], init="xavierr"), ValueError,
         ["xavierr", "he", "glorot"]),
    case("mlp dtype int32", make(xn.mlp, [3, 2], dtype="int32"), xn.BackendError,
         ["dtype", "int32"]),
    case("mlp backend", make(xn.mlp, [3, 2], backend="tf"), xn.BackendError, ["tf"]),
    case("mlp seed -1", make(xn.mlp, [3, 2], seed=-1), ValueError, ["seed", "-1"]),
    case("mlp seed str", make(xn.mlp, [3, 2], seed="a"), ValueError, ["seed", "'a'"]),
    case("mlp sizes an int", make(xn.mlp, 3), xn.ModelError, ["mlp", "sizes"]),
    case("mlp sizes a str", make(xn.mlp, "342"), xn.ModelError, ["mlp", "sizes"]),
    case("mlp sizes None", make(xn.mlp, None), xn.ModelError, ["mlp", "sizes", "NoneType"]),
    case("mlp sizes a dict", make(xn.mlp, {3: 4}), xn.ModelError, ["mlp", "sizes", "dict"]),
    case("mlp huge layer", make(xn.mlp, [10**6, 10**6]), xn.OutOfMemoryError,
         ["layer 0", "Dense", "parameters"]),
    # --- xn.Sequential
    case("Sequential empty", make(xn.Sequential), xn.ModelError, ["at least one layer"]),
    case("Sequential int", make(xn.Sequential, 3), xn.ModelError, ["layer 0", "int"]),
    case("Sequential list and more", make(xn.Sequential, [xn.Dense(3, 4)], xn.Dense(4, 2)),
         xn.ModelError, ["layer 0", "list"]),
    case("Sequential widths", make(xn.Sequential, xn.Dense(3, 4), xn.ReLU(), xn.Dense(5, 2)),
         xn.ModelError, ["layer 2", "5", "4"]),
    case("Sequential backend", make(xn.Sequential, xn.Dense(3, 2), backend="tf"),
         xn.BackendError, ["tf"]),
    case("Sequential dtype", make(xn.Sequential, xn.Dense(3, 2), dtype="float16"),
         xn.BackendError, ["float16"]),
    case("Sequential layer class", make(xn.Sequential, xn.ReLU), xn.ModelError,
         ["layer 0", "ReLU()"]),
    case("Sequential Dense class", make(xn.Sequential, xn.Dense), xn.ModelError,
         ["layer 0", "Dense()"]),
    case("Sequential params a list", make(xn.Sequential, xn.Dense(3, 2), params=[1]),
         TypeError, ["Sequential(params=...)", "mapping"]),
    case("no Dense layer fit", lambda w: xn.Sequential(xn.ReLU()).fit(X0, y0, **FIT_DEFAULTS),
         xn.ModelError, ["Dense", "nothing to train"]),
    # --- layer constructors
    case("Dense n_out 0", make(xn.Dense, 3, 0), ValueError, ["n_out", "positive"]),
    case("Dense n_in -1", make(xn.Dense, -1, 2), ValueError, ["n_in", "positive"]),
    case("Dense n_in 3.0", make(xn.Dense, 3.0, 2), ValueError, ["n_in", "float"]),
    case("Dense n_in np.True_", make(xn.Dense, np.True_, 2), ValueError, ["n_in"]),
    case("Dense n_in str", make(xn.Dense, "3", 2), ValueError, ["n_in", "str"]),
    case("Dense init name", make(xn.Dense, 3, 2, init="bad"), ValueError, ["bad", "he"]),
    case("Dense init int", make(xn.Dense, 3, 2, init=3), ValueError, ["initialiser", "3"]),
    case("Dense bias str", make(xn.Dense, 3, 2, bias="no"), ValueError, ["bias"]),
    case("LeakyReLU NaN", make(xn.LeakyReLU, NAN), ValueError, ["slope", "finite"]),
    case("LeakyReLU inf", make(xn.LeakyReLU, INF), ValueError, ["slope", "finite"]),
    case("LeakyReLU bool", make(xn.LeakyReLU, True), ValueError, ["slope", "True"]),
    case("LeakyReLU str", make(xn.LeakyReLU, "a"), ValueError, ["slope"]),
    case("Dropout 1", make(xn.Dropout, 1.0), ValueError, ["Dropout", "[0, 1)"]),
    case("Dropout negative", make(xn.Dropout, -0.1), ValueError, ["Dropout", "[0, 1)"]),
    case("Dropout NaN", make(xn.Dropout, NAN), ValueError, ["Dropout"]),
    case("Dropout None", make(xn.Dropout, None), ValueError, ["Dropout", "None"]),
    case("Dropout bool", make(xn.Dropout, True), ValueError, ["Dropout", "True"]),
    # --- set_params
    case("params shape", set_param("0.W", np.ones((3, 6))), xn.ModelError,
         ["0.W", "(3, 6)", "(3, 5)"]),
    case("params 3-D", set_param("0.W", np.ones((3, 5, 1))), xn.ModelError, ["0.W"]),
    case("params missing", lambda w: w.model.set_params({"0.W": np.ones((3, 5))}),
         xn.ModelError, ["missing", "2.W"]),
    case("params unknown", set_param("9.W", np.ones(1)), xn.ModelError, ["unknown", "9.W"]),
    case("params NaN", set_param("2.b", np.full(N_OUT, NAN)), DataError, ["2.b", "NaN"]),
    case("params overflow", set_param("0.b", np.full(5, 1e300)), DataError,
         ["0.b", "float32's range", "1e+300"]),
    case("params text", set_param("0.b", np.array(list("abcde"))), DataError,
         ["0.b", "text"]),
    case("params bool", set_param("0.b", np.ones(5, bool)), DataError, ["0.b", "bool"]),
    case("params complex", set_param("0.b", np.ones(5, complex)), DataError,
         ["0.b", "complex"]),
    case("params ragged", set_param("0.W", [[1.0] * 5, [1.0] * 4, [1.0] * 5]), DataError,
         ["0.W", "ragged", "row 1"]),
    case("params masked", set_param("0.b", np.ma.masked_array(np.ones(5), [0, 1, 0, 0, 0])),
         DataError, ["0.b", "masked", "index 1"]),
    case("params object", set_param("0.b", object()), DataError, ["0.b", "object"]),
    case("params None", set_param("0.b", None), DataError, ["0.b", "NoneType"]),
    case("params not a mapping", lambda w: w.model.set_params(None), TypeError,
         ["set_params", "mapping"]),
    case("params a list", lambda w: w.model.set_params([1, 2]), TypeError, ["set_params"]),
    # --- predict
    case("predict width", predict(np.ones((2, 5))), DataError,
         ["5 features", "layer 0 (Dense)", "expects 3"]),
    case("predict NaN", predict(_with(X0, (2, 1), NAN)), DataError,
         ["X", "NaN", "row 2, column 1"]),
    case("predict overflow", predict(_with(X0, (0, 0), -1e300)), DataError,
         ["X", "float32's range", "-1e+300"]),
    case("predict 1-D", predict(X0[0]), DataError, ["2-D", "reshape"]),
    case("predict str", predict("abc"), DataError, ["X is str"]),
    case("predict bytes", predict(b"abc"), DataError, ["X is bytes"]),
    case("predict ragged", predict([[1.0, 2.0, 3.0], [1.0]]), DataError,
         ["X", "ragged", "row 1 has 1 entry"]),
    case("predict dates", predict(np.zeros((2, 3), "datetime64[s]")), DataError,
         ["X", "dates"]),
    case("predict masked", predict(masked_X), DataError, ["X", "masked", "row 1, column 2"]),
    case("predict object", predict(np.array([[1, "x", 3]], dtype=object)), DataError,
         ["X", "row 0, column 1", "str"]),
    case("predict batch_size -1", predict(X0, batch_size=-1), ValueError, ["batch_size"]),
    case("predict batch_size 2.5", predict(X0, batch_size=2.5), ValueError, ["batch_size"]),
    case("predict batch_size True", predict(X0, batch_size=True), ValueError, ["batch_size"]),
    # --- evaluate
    case("evaluate length", evaluate(y=y0[:3]), DataError, ["8 samples", "3"]),
    case("evaluate batch_size 0", evaluate(batch_size=0), ValueError, ["batch_size"]),
    case("evaluate batch_size names evaluate", evaluate(batch_size=2.5), ValueError,
         ["evaluate", "batch_size"]),
    case("evaluate loss", evaluate(loss="hinge"), ValueError, ["hinge", "known"]),
    case("evaluate one-hot 7", evaluate(y=np.full((N, N_OUT), 7.0)), DataError,
         ["one-hot", "row 0", "sums to 28"]),
    case("evaluate label 1e20", evaluate(y=np.full(N, 1e20)), DataError, ["1e+20", "[0, 3]"]),
    # --- loss_and_grads
    case("grads label", grads(y=y0 + N_OUT), DataError, ["labels", "[0, 3]"]),
    case("grads width", grads(X=X0[:, :2]), DataError, ["2 features"]),
    case("grads loss", grads(loss="hinge"), ValueError, ["hinge", "mse"]),
    case("grads y NaN", grads(y=_with(y0, 3, NAN)), DataError, ["y", "NaN", "index 3"]),
    case("grads mse shape", grads(y=np.ones((N, 2)), loss="mse"), DataError, ["mse", "(8, 4)"]),
    # --- fit: X
    case("fit X text", fit(X=np.array([["a", "b", "c"]] * N)), DataError, ["X", "text"]),
    case("fit X ragged", fit(X=[[1.0, 2.0, 3.0], [1.0]] * 4), DataError, ["X", "ragged"]),
    case("fit X complex", fit(X=X0 + 1j), DataError, ["X", "complex"]),
    case("fit X 3-D", fit(X=X0[:, :, None]), DataError, ["2-D", "(8, 3, 1)"]),
    case("fit X scalar", fit(X=3.0), DataError, ["2-D", "single number"]),
    case("fit X empty", fit(X=np.ones((0, N_IN)), y=np.ones(0)), DataError, ["empty"]),
    case("fit X NaN", fit(X=_with(X0, (4, 0), NAN)), DataError, ["X", "NaN"]),
    case("fit X Inf", fit(X=_with(X0, (4, 0), INF)), DataError, ["X", "Inf"]),
    case("fit X overflow", fit(X=_with(X0, (5, 1), 3e38 * 10)), DataError,
         ["X", "float32's range", "3e+39"]),
    case("fit X masked", fit(X=masked_X), DataError, ["X", "masked"]),
    case("fit X durations", fit(X=np.zeros((N, N_IN), "timedelta64[s]")), DataError,
         ["X", "durations"]),
    case("fit X None", fit(X=None), DataError, ["X is NoneType"]),
    case("fit X dict", fit(X={"a": 1}), DataError, ["X is dict"]),
    case("fit X records", fit(X=np.zeros(N, dtype=[("a", "f4"), ("b", "f4")])), DataError,
         ["X", "structured"]),
    # --- fit: y
    case("fit y length", fit(y=y0[:5]), DataError, ["8 samples", "5", "match"]),
    case("fit y scalar", fit(y=1), DataError, ["samples", "scalar"]),
    case("fit y NaN", fit(y=_with(y0, 3, NAN)), DataError, ["y", "NaN"]),
    case("fit label too big", fit(y=np.full(N, N_OUT)), DataError, ["labels", "[0, 3]"]),
    case("fit label 1e20", fit(y=np.full(N, 1e20)), DataError, ["1e+20", "[0, 3]"]),
    case("fit label uint64", fit(y=np.full(N, 2**63 + 1, dtype=np.uint64)), DataError,
         [str(2**63 + 1)]),
    case("fit label negative", fit(y=-(y0 + 1)), DataError, ["labels", "[0, 3]"]),
    case("fit label 0.5", fit(y=y0 + 0.5), DataError, ["integer", "y[0]"]),
    case("fit one-hot width", fit(y=np.eye(5)[np.arange(N) % 5]), DataError,
         ["one-hot", "5 columns", "4 outputs"]),
    case("fit one-hot 7", fit(y=np.full((N, N_OUT), 7.0)), DataError, ["row 0", "sums to 28"]),
    case("fit one-hot zeros", fit(y=np.zeros((N, N_OUT))), DataError, ["row 0", "sums to 0"]),
    case("fit one-hot twice", fit(y=2 * onehot), DataError, ["row 0", "sums to 2"]),
    case("fit one-hot negative", fit(y=-onehot), DataError, ["one-hot", "negative"]),
    case("fit labels 3-D", fit(y=np.zeros((N, 2, 2))), DataError, ["cross_entropy", "shape"]),
    case("fit mse shape", fit(y=np.ones((N, 2)), loss="mse"), DataError, ["mse", "(8, 4)"]),
    case("fit mse overflow", fit(y=np.full((N, N_OUT), 1e39), loss="mse"), DataError,
         ["y", "float32's range"]),
    case("fit bce range", fit(y=np.full((N, N_OUT), 2.0), loss="binary_cross_entropy"),
         DataError, ["[0, 1]", "2"]),
    case("fit y text", fit(y=["a"] * N), DataError, ["y", "text"]),
    case("fit y None", fit(y=None), DataError, ["y is NoneType"]),
    # --- fit: loss, optimizer
    case("fit loss unknown", fit(loss="hinge"), ValueError, ["hinge", "mse", "cross_entropy"]),
    case("fit loss None", fit(loss=None), ValueError, ["loss", "None"]),
    case("fit optimizer unknown", fit(optimizer="lbfgs"), ValueError, ["lbfgs", "rmsprop"]),
    case("fit optimizer int", fit(optimizer=3), ValueError, ["optimizer", "3"]),
    case("fit optimizer a class", fit(optimizer=xn.Adam), ValueError,
         ["optimizer", "class", "Adam()"]),
    case("fit optimizer of another model",
         lambda w: w.model.fit(X0, y0, optimizer=trained(sizes=(N_IN, 7, N_OUT)).optimizer,
                               **FIT_DEFAULTS),
         ValueError, ["optimizer", "'0.W'", "(3, 7)", "another model"]),
    case("fit optimizer of another dtype",
         lambda w: w.model.fit(X0, y0, optimizer=trained(dtype="float64").optimizer,
                               **FIT_DEFAULTS),
         ValueError, ["optimizer", "float32", "new optimizer"]),
    case("fit optimizer shared by two models", share_optimizer, ValueError,
         ["optimizer", "another model"]),
    # --- fit: epochs, batch_size, check_every
    case("fit epochs -1", fit(epochs=-1), ValueError, ["epochs", ">= 0"]),
    case("fit epochs 1.5", fit(epochs=1.5), ValueError, ["epochs"]),
    case("fit epochs True", fit(epochs=True), ValueError, ["epochs", "True"]),
    case("fit epochs str", fit(epochs="3"), ValueError, ["epochs"]),
    case("fit batch_size 0", fit(batch_size=0), ValueError, ["batch_size", ">= 1"]),
    case("fit batch_size -3", fit(batch_size=-3), ValueError, ["batch_size"]),
    case("fit batch_size 2.5", fit(batch_size=2.5), ValueError, ["batch_size", "int"]),
    case("fit batch_size True", fit(batch_size=True), ValueError, ["batch_size"]),
    case("fit check_every 0", fit(check_every=0), ValueError, ["check_every"]),
    case("fit check_every True", fit(check_every=True), ValueError, ["check_every"]),
    # --- fit: validation
    case("fit X_val width", fit(validation_data=(np.ones((4, 2)), y0[:4])), DataError,
         ["X_val", "2 features"]),
    case("fit y_val NaN", fit(validation_data=(X0, _with(y0, 3, NAN))), DataError,
         ["y_val", "NaN"]),
    case("fit y_val one-hot", fit(validation_data=(X0, np.full((N, N_OUT), 0.5))), DataError,
         ["y_val", "sums to 2"]),
    case("fit X_val ragged", fit(validation_data=([[1.0, 2.0, 3.0], [1.0]], y0[:2])),
         DataError, ["X_val", "ragged"]),
    case("fit validation not a pair", fit(validation_data=(X0,)), ValueError,
         ["validation_data", "pair"]),
    case("fit validation a dict", fit(validation_data={"X": X0}), ValueError,
         ["validation_data"]),
    case("fit validation_split 1", fit(validation_split=1.0), ValueError, ["validation_split"]),
    case("fit validation_split NaN", fit(validation_split=NAN), ValueError,
         ["validation_split"]),
    case("fit validation_split negative", fit(validation_split=-0.1), ValueError,
         ["validation_split"]),
    case("fit validation_split str", fit(validation_split="0.2"), ValueError,
         ["validation_split", "'0.2'"]),
    case("fit validation_split True", fit(validation_split=True), ValueError,
         ["validation_split"]),
    case("fit validation_split too small", fit(validation_split=0.01), ValueError,
         ["validation_split", "no validation"]),
    case("fit validation_split and data", fit(validation_split=0.5, validation_data=(X0, y0)),
         ValueError, ["validation_split", "validation_data"]),
    # --- fit: callbacks, seed, verbose, shuffle, lr, extra keywords
    case("fit callback not a Callback", fit(callbacks=[print]), TypeError, ["callbacks"]),
    case("fit callback a class", fit(callbacks=[xn.EarlyStopping]), TypeError,
         ["callbacks", "type"]),
    case("fit callbacks an int", fit(callbacks=3), TypeError, ["callbacks", "int"]),
    case("fit seed True", fit(seed=True), ValueError, ["seed", "True"]),
    case("fit shuffle 1", fit(shuffle=1), ValueError, ["shuffle"]),
    case("fit callbacks not a list", fit(callbacks=xn.EarlyStopping()), TypeError,
         ["callbacks", "[EarlyStopping(...)]"]),
    case("fit seed -1", fit(seed=-1), ValueError, ["seed"]),
    case("fit seed str", fit(seed="a"), ValueError, ["seed"]),
    case("fit shuffle str", fit(shuffle="no"), ValueError, ["shuffle"]),
    case("fit verbose 7", fit(verbose=7), ValueError, ["verbose", "7"]),
    case("fit verbose str", fit(verbose="1"), ValueError, ["verbose"]),
    case("fit lr 0", fit(optimizer="sgd", lr=0.0), ValueError, ["lr", "> 0"]),
    case("fit lr negative", fit(optimizer="adam", lr=-1e-3), ValueError, ["lr", "> 0"]),
    case("fit lr NaN", fit(optimizer="sgd", lr=NAN), ValueError, ["lr", "finite"]),
    case("fit lr inf", fit(optimizer="sgd", lr=INF), ValueError, ["lr", "finite"]),
    case("fit lr True", fit(lr=True), ValueError, ["lr", "True"]),
    case("fit lr str", fit(lr="0.1"), ValueError, ["lr"]),
    case("fit lr twice", fit(optimizer=xn.SGD(lr=0.1), lr=0.1), ValueError, ["lr", "not both"]),
    case("fit unknown keyword", fit(lrr=3), TypeError, ["lrr"]),
    case("fit schedule gives -1", scheduler_returning(-1.0), ValueError,
         ["learning rate", "epoch 0", "-1.0"]),
    case("fit schedule gives NaN", scheduler_returning(NAN), ValueError,
         ["learning rate", "nan"]),
    # --- save
    case("save .txt", lambda w: w.model.save(w.path("m.txt")), ValueError, [".npz", "m.txt"]),
    case("save to a folder name", lambda w: w.model.save(w.tmp), ValueError, [".npz"]),
    case("save to a missing folder", lambda w: w.model.save(w.path("missing/m.npz")), OSError,
         ["missing"]),
    case("save onto a folder", save_onto_a_folder, OSError, ["folder.npz"]),
    case("save path an int", lambda w: w.model.save(3), TypeError, ["save", "path"]),
    # --- xn.load
    case("load missing", lambda w: xn.load(w.path("none.npz")), xn.CheckpointError,
         ["cannot read", "none.npz"]),
    case("load junk", load_written(junk_file), xn.CheckpointError, ["junk.npz", "not"]),
    case("load plain npz", load_written(plain_npz), xn.CheckpointError,
         ["plain.npz", "not written by xpnet.save"]),
    case("load truncated", load_written(truncated_checkpoint), xn.CheckpointError,
         ["half.npz", "truncated"]),
    case("load flipped bit", load_written(flipped_checkpoint), xn.CheckpointError,
         ["flipped.npz", "corrupted"]),
    case("load a folder", lambda w: xn.load(w.tmp), xn.CheckpointError, ["cannot read"]),
    case("load backend", lambda w: xn.load(w.checkpoint, backend="tf"), xn.BackendError,
         ["tf"]),
    case("load dtype", lambda w: xn.load(w.checkpoint, dtype="int8"), xn.BackendError,
         ["dtype", "int8"]),
    case("load device", lambda w: xn.load(w.checkpoint, device="cuda"), xn.BackendError,
         ["numpy", "cuda"]),
    case("load path an int", make(xn.load, 3), TypeError, ["load", "path"]),
    # --- model.to
    case("to unknown backend", lambda w: w.model.to("tf"), xn.BackendError, ["tf"]),
    case("to dtype", lambda w: w.model.to("numpy", dtype="float16"), xn.BackendError,
         ["float16"]),
    case("to device", lambda w: w.model.to("numpy", device="cuda:0"), xn.BackendError,
         ["numpy", "cuda:0"]),
    case("to name an int", lambda w: w.model.to(3), xn.BackendError, ["backend name"]),
    case("to torch float16", lambda w: w.model.to("torch", dtype="float16"), xn.BackendError,
         ["float16"]),
    # --- optimizers
    case("SGD lr 0", make(xn.SGD, lr=0), ValueError, ["SGD", "lr", "> 0"]),
    case("SGD lr negative", make(xn.SGD, lr=-1), ValueError, ["SGD", "lr"]),
    case("SGD lr NaN", make(xn.SGD, lr=NAN), ValueError, ["SGD", "lr", "finite"]),
    case("SGD lr inf", make(xn.SGD, lr=INF), ValueError, ["lr", "finite"]),
    case("SGD lr bool", make(xn.SGD, lr=True), ValueError, ["lr", "True"]),
    case("SGD lr str", make(xn.SGD, lr="0.1"), ValueError, ["lr", "'0.1'"]),
    case("SGD momentum 1", make(xn.SGD, momentum=1.0), ValueError, ["momentum", "< 1"]),
    case("SGD momentum negative", make(xn.SGD, momentum=-0.1), ValueError, ["momentum"]),
    case("SGD momentum NaN", make(xn.SGD, momentum=NAN), ValueError, ["momentum"]),
    case("SGD nesterov without momentum", make(xn.SGD, nesterov=True), ValueError,
         ["nesterov", "momentum"]),
    case("SGD nesterov str", make(xn.SGD, momentum=0.5, nesterov="no"), ValueError,
         ["nesterov"]),
    case("SGD weight_decay negative", make(xn.SGD, weight_decay=-1), ValueError,
         ["weight_decay"]),
    case("SGD weight_decay inf", make(xn.SGD, weight_decay=INF), ValueError, ["weight_decay"]),
    case("SGD clipnorm 0", make(xn.SGD, clipnorm=0.0), ValueError, ["clipnorm", "> 0"]),
    case("SGD clipnorm bool", make(xn.SGD, clipnorm=True), ValueError, ["clipnorm"]),
    case("SGD clipnorm NaN", make(xn.SGD, clipnorm=NAN), ValueError, ["clipnorm"]),
    case("Adam betas one", make(xn.Adam, betas=(0.9,)), ValueError, ["betas"]),
    case("Adam betas str", make(xn.Adam, betas="ab"), ValueError, ["betas"]),
    case("Adam betas NaN", make(xn.Adam, betas=(NAN, 0.9)), ValueError, ["betas[0]"]),
    case("Adam betas 1", make(xn.Adam, betas=(0.9, 1.0)), ValueError, ["betas[1]", "< 1"]),
    case("Adam betas bool", make(xn.Adam, betas=(True, 0.9)), ValueError, ["betas[0]"]),
    case("Adam eps 0", make(xn.Adam, eps=0), ValueError, ["eps", "> 0"]),
    case("Adam eps inf", make(xn.Adam, eps=INF), ValueError, ["eps"]),
    case("Adam eps negative", make(xn.Adam, eps=-1e-8), ValueError, ["eps"]),
    case("Adam lr NaN", make(xn.Adam, lr=NAN), ValueError, ["Adam", "lr"]),
    case("Adam weight_decay NaN", make(xn.Adam, weight_decay=NAN), ValueError,
         ["weight_decay"]),
    case("Adam clipnorm negative", make(xn.Adam, clipnorm=-1), ValueError, ["clipnorm"]),
    case("SGD nesterov 1", make(xn.SGD, momentum=0.5, nesterov=1), ValueError, ["nesterov"]),
    # --- callbacks
    case("EarlyStopping patience -1", make(xn.EarlyStopping, patience=-1), ValueError,
         ["patience"]),
    case("EarlyStopping patience 1.5", make(xn.EarlyStopping, patience=1.5), ValueError,
         ["patience"]),
    case("EarlyStopping patience bool", make(xn.EarlyStopping, patience=True), ValueError,
         ["patience"]),
    case("EarlyStopping mode", make(xn.EarlyStopping, mode="up"), ValueError, ["mode", "up"]),
    case("EarlyStopping min_delta negative", make(xn.EarlyStopping, min_delta=-1), ValueError,
         ["min_delta"]),
    case("EarlyStopping min_delta NaN", make(xn.EarlyStopping, min_delta=NAN), ValueError,
         ["min_delta"]),
    case("EarlyStopping min_delta bool", make(xn.EarlyStopping, min_delta=True), ValueError,
         ["min_delta"]),
    case("EarlyStopping monitor int", make(xn.EarlyStopping, monitor=3), ValueError,
         ["monitor"]),
    case("EarlyStopping restore str", make(xn.EarlyStopping, restore_best_weights="yes"),
         ValueError, ["restore_best_weights"]),
    case("ModelCheckpoint .txt", make(xn.ModelCheckpoint, "a.txt"), ValueError,
         ["ModelCheckpoint", ".npz"]),
    case("ModelCheckpoint mode", make(xn.ModelCheckpoint, "a.npz", mode="x"), ValueError,
         ["mode"]),
    case("ModelCheckpoint path int", make(xn.ModelCheckpoint, 3), TypeError,
         ["ModelCheckpoint", "path"]),
    case("ModelCheckpoint missing folder",
         lambda w: xn.ModelCheckpoint(w.path("missing/ckpt.npz")), ValueError,
         ["ModelCheckpoint", "missing"]),
    case("ModelCheckpoint save_best_only str",
         make(xn.ModelCheckpoint, "a.npz", save_best_only="no"), ValueError,
         ["ModelCheckpoint", "save_best_only"]),
    case("ModelCheckpoint monitor int", make(xn.ModelCheckpoint, "a.npz", monitor=0),
         ValueError, ["ModelCheckpoint", "monitor"]),
    case("LearningRateScheduler fn 3", make(xn.LearningRateScheduler, 3), TypeError,
         ["fn", "callable"]),
    case("LearningRateScheduler no fn", make(xn.LearningRateScheduler), TypeError, ["fn"]),
    case("StepDecay factor 0", make(xn.StepDecay, factor=0), ValueError, ["factor"]),
    case("StepDecay factor NaN", make(xn.StepDecay, factor=NAN), ValueError, ["factor"]),
    case("StepDecay factor 1.5", make(xn.StepDecay, factor=1.5), ValueError, ["factor"]),
    case("StepDecay every 0", make(xn.StepDecay, every=0), ValueError, ["every"]),
    case("StepDecay every 2.5", make(xn.StepDecay, every=2.5), ValueError, ["every"]),
    case("StepDecay factor str", make(xn.StepDecay, factor="a"), ValueError, ["factor"]),
    case("ExponentialDecay 0", make(xn.ExponentialDecay, 0), ValueError, ["rate"]),
    case("ExponentialDecay NaN", make(xn.ExponentialDecay, NAN), ValueError, ["rate"]),
    case("ExponentialDecay 1.5", make(xn.ExponentialDecay, 1.5), ValueError, ["rate"]),
    case("ExponentialDecay str", make(xn.ExponentialDecay, "a"), ValueError, ["rate"]),
    case("ExponentialDecay bool", make(xn.ExponentialDecay, True), ValueError, ["rate"]),
    case("CosineDecay epochs 0", make(xn.CosineDecay, 0), ValueError, ["epochs"]),
    case("CosineDecay epochs 2.5", make(xn.CosineDecay, 2.5), ValueError, ["epochs"]),
    case("CosineDecay min_lr 0", make(xn.CosineDecay, 3, 0), ValueError, ["min_lr"]),
    case("CosineDecay min_lr NaN", make(xn.CosineDecay, 3, NAN), ValueError, ["min_lr"]),
    case("CosineDecay min_lr inf", make(xn.CosineDecay, 3, INF), ValueError, ["min_lr"]),
    case("CosineDecay min_lr str", make(xn.CosineDecay, 3, "a"), ValueError, ["min_lr"]),
    case("CSVLogger path int", make(xn.CSVLogger, 3), TypeError, ["CSVLogger", "path"]),
    case("CSVLogger missing folder", lambda w: xn.CSVLogger(w.path("missing/log.csv")),
         ValueError, ["CSVLogger", "missing"]),
    case("CSVLogger append str", make(xn.CSVLogger, "log.csv", append="no"), ValueError,
         ["CSVLogger", "append"]),
    case("CSVLogger path a folder's file", lambda w: xn.CSVLogger(
        os.path.join(w.checkpoint, "log.csv")), ValueError, ["CSVLogger", "not a folder"]),
    case("CSVLogger separator empty", make(xn.CSVLogger, "log.csv", separator=""),
         ValueError, ["separator"]),
    case("TerminateOnNaN raise_error str", make(xn.TerminateOnNaN, "no"), ValueError,
         ["raise_error"]),
    # --- xpnet.testing
    case("check_grads loss", lambda w: check_grads(w.model, X0, y0, loss="hinge"), ValueError,
         ["hinge"]),
    case("check_grads width", lambda w: check_grads(w.model, X0[:, :2], y0,
                                                    loss="cross_entropy"),
         DataError, ["2 features", "expects 3"]),
    case("check_grads labels", lambda w: check_grads(w.model, X0, y0 + 9, loss="cross_entropy"),
         DataError, ["labels"]),
    case("check_grads eps 0", lambda w: check_grads(w.model, X0, y0, "cross_entropy", eps=0),
         ValueError, ["eps"]),
    case("check_grads eps NaN", lambda w: check_grads(w.model, X0, y0, "cross_entropy",
                                                      eps=NAN),
         ValueError, ["eps"]),
    case("check_grads max_entries 0",
         lambda w: check_grads(w.model, X0, y0, "cross_entropy", max_entries=0),
         ValueError, ["max_entries"]),
    case("check_grads not a model", lambda w: check_grads("model", X0, y0), TypeError,
         ["check_grads", "model"]),
    case("check_grads tolerance NaN", lambda w: check_grads(w.model, X0, y0, "cross_entropy",
                                                            tolerance=NAN),
         ValueError, ["check_grads", "tolerance"]),
    case("check_grads max_entries 2.5",
         lambda w: check_grads(w.model, X0, y0, "cross_entropy", max_entries=2.5),
         ValueError, ["max_entries"]),
    case("assert_parity build", lambda w: assert_parity(3, X0, y0, backends=[]), TypeError,
         ["build", "callable"]),
    case("assert_parity backend", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, loss="cross_entropy", backends=["tf"], steps=1),
        xn.BackendError, ["tf"]),
    case("assert_parity dtype", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, backends=[], dtype="float16"),
        ValueError, ["dtype", "float16"]),
    case("assert_parity tolerance NaN", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, loss="cross_entropy", backends=[], steps=1,
        tolerance=NAN),
        ValueError, ["tolerance"]),
    case("assert_parity steps -1", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, loss="cross_entropy", backends=[], steps=-1),
        ValueError, ["steps"]),
    case("assert_parity steps True", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, loss="cross_entropy", backends=[], steps=True),
        ValueError, ["assert_parity", "steps"]),
    case("assert_parity dtype a list", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, backends=[], dtype=["float32"]),
        ValueError, ["dtype"]),
    # --- xpnet.sklearn
    case("sklearn hidden 0", sklearn_fit("MLPClassifier", hidden_layer_sizes=(0,)), ValueError,
         ["hidden_layer_sizes"]),
    case("sklearn hidden str", sklearn_fit("MLPClassifier", hidden_layer_sizes="10"),
         ValueError, ["hidden_layer_sizes"]),
    case("sklearn hidden 2.5", sklearn_fit("MLPRegressor", hidden_layer_sizes=(2.5,)),
         ValueError, ["hidden_layer_sizes"]),
    case("sklearn activation", sklearn_fit("MLPClassifier", activation="swish"), ValueError,
         ["activation", "swish"]),
    case("sklearn solver", sklearn_fit("MLPClassifier", solver="lbfgs"), ValueError,
         ["solver", "lbfgs"]),
    case("sklearn alpha negative", sklearn_fit("MLPRegressor", alpha=-1), ValueError,
         ["alpha"]),
    case("sklearn max_iter 0", sklearn_fit("MLPClassifier", max_iter=0), ValueError,
         ["max_iter"]),
    case("sklearn batch_size 0", sklearn_fit("MLPClassifier", batch_size=0), ValueError,
         ["batch_size"]),
    case("sklearn validation_fraction", sklearn_fit("MLPClassifier", validation_fraction=1.0),
         ValueError, ["validation_fraction"]),
    case("sklearn n_iter_no_change", sklearn_fit("MLPClassifier", n_iter_no_change=0),
         ValueError, ["n_iter_no_change"]),
    case("sklearn backend", sklearn_fit("MLPClassifier", backend="tf"), xn.BackendError,
         ["tf"]),
    case("sklearn alpha NaN", sklearn_fit("MLPClassifier", alpha=NAN), ValueError, ["alpha"]),
    case("sklearn tol NaN", sklearn_fit("MLPClassifier", tol=NAN), ValueError, ["tol"]),
    case("sklearn learning_rate_init 0", sklearn_fit("MLPClassifier", learning_rate_init=0),
         ValueError, ["learning_rate_init"]),
    case("sklearn epsilon 0", sklearn_fit("MLPRegressor", epsilon=0.0), ValueError,
         ["epsilon"]),
    case("sklearn momentum 1", sklearn_fit("MLPClassifier", solver="sgd", momentum=1.0),
         ValueError, ["momentum"]),
    case("sklearn shuffle str", sklearn_fit("MLPClassifier", shuffle="no"), ValueError,
         ["shuffle"]),
    case("sklearn beta_1 1", sklearn_fit("MLPClassifier", beta_1=1.0), ValueError, ["beta_1"]),
]


def _param(c: Case):
    marks = [pytest.mark.xfail(reason=f"needs {c.needs}", strict=True)] if c.needs else []
    if c.library is not None and importlib.util.find_spec(c.library) is None:
        marks.append(pytest.mark.skip(reason=f"{c.library} is not installed"))
    return pytest.param(c.call, c.error, c.words, id=c.id, marks=marks)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("call, error, words", [_param(c) for c in CASES])
def test_hostile_input_is_named_and_changes_nothing(tmp_path, call, error, words):
    world = World(tmp_path)
    before = snapshot(world)
    with pytest.raises(error) as info:
        call(world)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    if world.extra.pop("setup_files", False):  # the case wrote its own input file first
        before = {k: v for k, v in before.items() if not k.startswith("file/")}
        after = {k: v for k, v in snapshot(world).items() if k in before or
                 not k.startswith("file/")}
        assert_unchanged(before, after)
    else:
        assert_unchanged(before, snapshot(world))
    estimator = world.extra.get("estimator")
    assert estimator is None or not hasattr(estimator, "model_")


def test_the_catalogue_is_large_and_its_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


# --------------------------------------------------------------------------- what must pass
# NumPy numbers are numbers: each of these is a plain, valid call.

ACCEPTED = [
    case("mlp np.int64 sizes", make(xn.mlp, [3, np.int64(8), np.int64(2)]), None, []),
    case("Dense np.uint8", make(xn.Dense, np.uint8(3), np.int32(2)), None, []),
    case("LeakyReLU np.float32", make(xn.LeakyReLU, np.float32(0.1)), None, []),
    case("Dropout np.float32", make(xn.Dropout, np.float32(0.2)), None, []),
    case("predict np.matrix", lambda w: w.model.predict(np.matrix(X0)), None, []),
    case("predict memoryview", lambda w: w.model.predict(memoryview(X0)), None, []),
    case("predict unmasked masked array", lambda w: w.model.predict(np.ma.masked_array(X0)),
         None, []),
    case("predict Python ints", lambda w: w.model.predict([[1, 2, 3]]), None, []),
    case("predict bool features", lambda w: w.model.predict(X0 > 0), None, []),
    case("fit soft labels", fit(y=np.full((N, N_OUT), 0.25), optimizer="adam"), None, []),
    case("fit float32 one-hot", fit(y=onehot.astype(np.float32)), None, []),
    case("no Dense layer predict", lambda w: xn.Sequential(xn.ReLU()).predict(X0), None, []),
    case("no Dense layer evaluate", lambda w: xn.Sequential(xn.ReLU()).evaluate(
        X0, np.maximum(X0, 0)), None, []),
    case("mlp sizes a NumPy array", make(xn.mlp, np.array([3, 4, 2])), None, []),
    case("mlp sizes a range", make(xn.mlp, range(3, 5)), None, []),
    case("fit seed np.int64", fit(seed=np.int64(3)), None, []),
    case("fit shuffle np.False_", fit(shuffle=np.False_), None, []),
    case("fit validation_split np.float32", fit(validation_split=np.float32(0.5)), None, []),
    case("predict batch_size np.int64", lambda w: w.model.predict(X0, batch_size=np.int64(2)),
         None, []),
    case("evaluate batch_size np.int64", evaluate(batch_size=np.int64(2)), None, []),
    case("fit epochs np.int64", fit(epochs=np.int64(1), batch_size=np.int64(4)), None, []),
    case("SGD lr np.float32", make(xn.SGD, lr=np.float32(0.1)), None, []),
    case("Adam betas np.float32", make(xn.Adam, betas=(np.float32(0.9), 0.999)), None, []),
    case("SGD nesterov np.True_", make(xn.SGD, momentum=np.float32(0.9), nesterov=np.True_),
         None, []),
    case("EarlyStopping patience np.int64", make(xn.EarlyStopping, patience=np.int64(2)), None,
         []),
    case("StepDecay every np.int64", make(xn.StepDecay, every=np.int64(2)), None, []),
    case("ExponentialDecay np.float32", make(xn.ExponentialDecay, np.float32(0.9)), None, []),
    case("EarlyStopping min_delta np.float32",
         make(xn.EarlyStopping, min_delta=np.float32(0.1), restore_best_weights=np.True_),
         None, []),
    case("scheduler gives np.float32", lambda w: w.model.fit(
        X0, y0, **FIT_DEFAULTS, optimizer=xn.SGD(lr=0.1),
        callbacks=[xn.LearningRateScheduler(lambda epoch, lr: np.float32(lr / 2))]), None, []),
    case("CosineDecay epochs np.int64", make(xn.CosineDecay, np.int64(3)), None, []),
    case("assert_parity one backend name", lambda w: assert_parity(
        lambda: xn.mlp([N_IN, N_OUT]), X0, y0, loss="cross_entropy", backends="numpy",
        steps=1), None, []),
]


def _accepted(c: Case):
    marks = [pytest.mark.xfail(reason=f"needs {c.needs}", strict=True)] if c.needs else []
    return pytest.param(c.call, id=c.id, marks=marks)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("call", [_accepted(c) for c in ACCEPTED])
def test_plain_valid_calls_are_accepted(tmp_path, call):
    call(World(tmp_path))


# --------------------------------------------------------------------------- other backends

BACKEND_CASES = [
    case("device X NaN", lambda w, xp, dev: w.model.predict(
        xp.asarray(_with(X0, (1, 1), NAN), dtype=xp.float32, device=dev)), DataError,
        ["X", "NaN", "row 1, column 1"]),
    case("device X overflow", lambda w, xp, dev: w.model.predict(
        xp.asarray(_with(X0, (0, 2), 1e300), dtype=xp.float64, device=dev)), DataError,
        ["X", "float32's range", "1e+300"]),
    case("device X width", lambda w, xp, dev: w.model.predict(
        xp.asarray(np.ones((2, 5)), device=dev)), DataError, ["5 features", "expects 3"]),
    case("device X complex", lambda w, xp, dev: w.model.predict(
        xp.asarray(np.ones((2, 3), complex), device=dev)), DataError, ["X", "complex"]),
    case("host masked X", lambda w, xp, dev: w.model.predict(masked_X), DataError,
         ["X", "masked"]),
    case("label 1e20", lambda w, xp, dev: w.model.fit(X0, np.full(N, 1e20), **FIT_DEFAULTS),
         DataError, ["1e+20"]),
    case("one-hot 7", lambda w, xp, dev: w.model.fit(X0, np.full((N, N_OUT), 7.0),
                                                     **FIT_DEFAULTS),
         DataError, ["sums to 28"]),
    case("device params NaN", lambda w, xp, dev: w.model.set_params(
        {**w.model.params, "2.b": xp.asarray(np.full(N_OUT, NAN), dtype=xp.float32,
                                             device=dev)}), DataError, ["2.b", "NaN"]),
    case("optimizer of another backend", lambda w, xp, dev: w.model.fit(
        X0, y0, optimizer=trained("array_api_strict" if w.backend == "numpy" else "numpy")
        .optimizer, **FIT_DEFAULTS), ValueError, ["optimizer", "backend"]),
]

OTHER_BACKENDS = ["numpy", "array_api_strict", "torch"]


@pytest.fixture(params=OTHER_BACKENDS)
def backend_name(request):
    try:
        xn.backend.get(request.param)
    except xn.BackendError as exc:
        pytest.skip(f"backend {request.param!r} unavailable here: {exc}")
    return request.param


@pytest.mark.filterwarnings("ignore:You are comparing a array_api_strict dtype")
@pytest.mark.parametrize("call, error, words", [_param(c) for c in BACKEND_CASES])
def test_hostile_input_on_other_backends(tmp_path, backend_name, call, error, words):
    world = World(tmp_path, backend=backend_name)
    backend = world.model.backend
    before = snapshot(world)
    with pytest.raises(error) as info:
        call(world, backend.xp, backend.device)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"
    assert_unchanged(before, snapshot(world))


# --------------------------------------------------------------------------- fuzzing
# data.inputs / data.targets on random shapes, dtypes and values: only DataError (or
# another ValueError) may escape, the caller's array is never written, and what comes
# back is a finite float array of the model's dtype with the promised shape.

DTYPES = ["bool", "int8", "uint8", "int64", "uint64", "float16", "float32", "float64",
          "longdouble", "complex64", "object", "U3", "S3", "datetime64[s]", "timedelta64[s]"]
SHAPES = st.one_of(st.tuples(st.integers(0, 4), st.integers(0, 4)),
                   st.lists(st.integers(0, 4), max_size=3).map(tuple))
VALUES = st.one_of(st.floats(-10, 10), st.integers(-5, 5),
                   st.sampled_from([NAN, INF, -INF, 3e38, -1e39, 1e300, 2**63, 2**70, 0.5]))


def _fuzz_array(draw) -> np.ndarray:
    shape = draw(SHAPES)
    size = int(np.prod(shape))
    values = draw(st.lists(VALUES, min_size=size, max_size=size))
    dtype = draw(st.sampled_from(DTYPES))
    base = np.empty(shape, dtype=object)
    base.reshape(-1)[:] = values
    if dtype == "object":
        return base
    with np.errstate(all="ignore"):
        try:
            return base.astype(np.float64).astype(dtype)
        except (OverflowError, ValueError, TypeError):
            return base


@st.composite
def fuzz_arrays(draw):
    return _fuzz_array(draw)


NUMPY = xn.backend.get("numpy")


def _copy_of(arr: np.ndarray):
    return arr.copy() if arr.dtype != object else arr.tolist()


def _unchanged(arr: np.ndarray, copy) -> bool:
    if arr.dtype == object:
        return arr.tolist() == copy or repr(arr.tolist()) == repr(copy)
    return arr.tobytes() == copy.tobytes()


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(X=fuzz_arrays(), n_in=st.sampled_from([None, 1, 2, 3]))
def test_fuzz_inputs_only_refuse_with_a_data_error(X, n_in):
    copy = _copy_of(X)
    try:
        out = data.inputs(NUMPY, X, n_in, "0 (Dense)")
    except ValueError as exc:
        assert isinstance(exc, DataError), repr(exc)
        assert "X" in str(exc)
    else:
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] >= 1
        assert n_in is None or out.shape[1] == n_in
        assert np.all(np.isfinite(out))
    assert _unchanged(X, copy)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(y=fuzz_arrays(), loss=st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy"]),
       n_out=st.sampled_from([1, 2, 3]))
def test_fuzz_targets_only_refuse_with_a_data_error(y, loss, n_out):
    copy = _copy_of(y)
    n = y.shape[0] if y.ndim else 1
    try:
        out = data.targets(NUMPY, y, loss, n_out, n)
    except ValueError as exc:
        assert isinstance(exc, DataError), repr(exc)
        assert "y" in str(exc)
    else:
        assert out.dtype == np.float32 and out.shape == (n, n_out)
        assert np.all(np.isfinite(out))
        if loss == "cross_entropy":
            assert np.allclose(out.sum(axis=1), 1.0, atol=1e-3) and out.min() >= 0
    assert _unchanged(y, copy)


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(X=fuzz_arrays(), y=fuzz_arrays())
def test_fuzz_fit_either_trains_or_changes_nothing(fuzz_world, X, y):
    """The boundary as fit uses it: a refused call leaves model and optimizer as they were."""
    before = snapshot(fuzz_world)
    try:
        fuzz_world.model.fit(X, y, loss="cross_entropy", optimizer=fuzz_world.opt, epochs=1)
    except ValueError as exc:
        assert isinstance(exc, DataError), repr(exc)
        assert_unchanged(before, snapshot(fuzz_world))
    except FloatingPointError:  # a DivergenceError from valid but wild data: weights kept
        assert all(math.isfinite(float(np.max(np.abs(fuzz_world.model.backend.to_numpy(v)))))
                   for v in fuzz_world.model.params.values())
