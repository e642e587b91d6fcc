"""ONNX export: the graph passes onnx.checker, and onnxruntime computes what predict does."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import xpnet as xn
from xpnet.backend import BackendError
from xpnet.cli.main import main
from xpnet.io import export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(9, 4)).astype(np.float32)


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["Y"], {"X": X})[0]


def _predict(model, X):
    return model.backend.to_numpy(model.predict(X))


def _assert_exports(model, tmp_path, X=X, **options):
    path = tmp_path / "m.onnx"
    xn.export_onnx(model, path, **options)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    np.testing.assert_allclose(_run(path, X), _predict(model, X), rtol=1e-5, atol=1e-5)
    return path


ACTIVATIONS = [xn.ReLU(), xn.LeakyReLU(0.2), xn.Sigmoid(), xn.Tanh(), xn.GELU(), xn.Softmax(),
               xn.Identity(), xn.Dropout(0.5)]


@pytest.mark.parametrize("opset", [17, 20])  # from 20, GELU is ONNX's own Gelu operator
@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda layer: type(layer).__name__)
def test_every_layer_type_matches_predict(layer, opset, tmp_path):
    for seed in range(3):
        model = xn.Sequential(xn.Dense(4, 6), layer, xn.Dense(6, 3), seed=seed)
        _assert_exports(model, tmp_path, X=X * 3, opset=opset)


def test_a_model_of_every_layer_without_bias_and_in_float64(tmp_path):
    layers = [xn.Dense(4, 8), xn.GELU(), xn.Dense(8, 8, bias=False), xn.LeakyReLU(0.1),
              xn.Dropout(0.3), xn.Dense(8, 6), xn.Tanh(), xn.Dense(6, 5), xn.Sigmoid(),
              xn.Identity(), xn.Dense(5, 3), xn.ReLU(), xn.Dense(3, 3), xn.Softmax()]
    _assert_exports(xn.Sequential(*layers, seed=1), tmp_path)
    model64 = xn.Sequential(*layers, seed=1, dtype="float64")
    path = tmp_path / "m64.onnx"
    xn.export_onnx(model64, path, dtype="float64")
    np.testing.assert_allclose(_run(path, X.astype(np.float64)), _predict(model64, X),
                               rtol=1e-9, atol=1e-9)  # onnxruntime's own tanh, exp


def test_the_batch_size_is_symbolic_and_the_names_are_x_and_y(tmp_path):
    model = xn.mlp([4, 8, 3], seed=0)
    path = _assert_exports(model, tmp_path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["X"] and [o.name for o in graph.output] == ["Y"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4]
    for n in (1, 37):
        batch = RNG.normal(size=(n, 4)).astype(np.float32)
        np.testing.assert_allclose(_run(path, batch), _predict(model, batch), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
def test_models_trained_on_each_backend_match(name, tmp_path):
    try:
        backend = xn.backend.get(name)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} unavailable here: {exc}")
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    model = xn.mlp([4, 16, 16, 3], activation="gelu", dropout=0.1, seed=0, backend=backend)
    model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.05), epochs=5, batch_size=4)
    _assert_exports(model, tmp_path)


# --------------------------------------------------------------------------- blocks
BACKENDS = ["numpy", "torch", "jax", "array_api_strict"]


def _backend(name, dtype="float32"):
    try:
        return xn.backend.get(name, dtype=dtype)
    except BackendError as exc:
        pytest.skip(f"backend {name!r} with dtype={dtype!r} unavailable here: {exc}")


def _every_block(seed, backend, dtype="float32"):
    """A model of every layer type, Residuals nested two deep, norms inside and outside."""
    return xn.Sequential(
        xn.Dense(4, 6), xn.Residual(xn.Dense(6, 6), xn.ReLU(), xn.LayerNorm(6), xn.Dense(6, 6)),
        xn.BatchNorm(6, eps=1e-3), xn.GELU(),
        xn.Residual(xn.Residual(xn.BatchNorm(6), xn.Dense(6, 6), xn.Tanh()), xn.LayerNorm(6)),
        xn.Dropout(0.2), xn.Dense(6, 5), xn.LeakyReLU(0.1), xn.Sigmoid(), xn.Identity(),
        xn.Dense(5, 3), xn.Softmax(), seed=seed, backend=backend, dtype=dtype)


def _randomise(model, seed):
    """Random gamma, beta and running statistics: the initial ones (ones, zeros) would hide
    a scale and a shift that are swapped or dropped."""
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=v.shape) if k.endswith(("gamma", "beta"))
              else model.backend.to_numpy(v) for k, v in model.params.items()}
    state = {k: rng.uniform(0.3, 3.0, size=v.shape) if k.endswith("running_var")
             else rng.normal(size=v.shape) for k, v in model.state.items()}
    return model.set_params(params).set_state(state)


@pytest.mark.parametrize("name", BACKENDS)
def test_random_blocks_and_normalisation_match_predict(name, tmp_path):
    backend = _backend(name)
    for seed in range(3):
        model = _randomise(_every_block(seed, backend), seed)
        assert "1.3.W" in model.params and "4.0.0.running_var" in model.state
        _assert_exports(model, tmp_path, X=X * 3)


@pytest.mark.parametrize("name", BACKENDS)
def test_float64_blocks_export_as_float64(name, tmp_path):
    model = _randomise(_every_block(0, _backend(name, "float64"), "float64"), 0)
    path = tmp_path / "m64.onnx"
    xn.export_onnx(model, path, dtype="float64")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    # onnxruntime's normalisation kernels round otherwise than xpnet's maths (1e-13 of the
    # output for one layer alone); this chain of norms amplifies that to about 5e-9
    np.testing.assert_allclose(_run(path, X.astype(np.float64) * 3), _predict(model, X * 3),
                               rtol=1e-7, atol=1e-7)


def _labels(X):
    return (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_trained_blocks_and_normalisation_match_predict(name, tmp_path):
    """After a few epochs the running statistics are the data's, not the initial ones."""
    model = _every_block(0, _backend(name))
    data = RNG.normal(size=(64, 4)).astype(np.float32) * 2 + 1
    model.fit(data, np.tanh(data[:, :3]), loss="mse", optimizer=xn.Adam(lr=0.02), epochs=3,
              batch_size=16)
    for key, value in model.state.items():
        initial = 1.0 if key.endswith("running_var") else 0.0
        assert np.abs(model.backend.to_numpy(value) - initial).max() > 1e-2, key
    _assert_exports(model, tmp_path, X=data)


def test_a_mixed_float16_model_exports_its_float32_weights(tmp_path):
    """The graph is the float32 model the mixed one keeps; predict computes in float16, so
    the two agree to float16's rounding (unit roundoff 2**-11 = 4.9e-4, a few of them over
    the layers), not to 1e-5."""
    model = xn.Sequential(xn.Dense(4, 16), xn.BatchNorm(16), xn.ReLU(),
                          xn.Residual(xn.Dense(16, 16), xn.LayerNorm(16)), xn.Dense(16, 3),
                          seed=0, precision="mixed-float16")
    data = RNG.normal(size=(64, 4)).astype(np.float32)
    model.fit(data, _labels(data), loss="cross_entropy", optimizer=xn.Adam(lr=0.02),
              epochs=3, batch_size=16)
    path = tmp_path / "m.onnx"
    xn.export_onnx(model, path)
    graph = onnx.load(str(path)).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    Y = _run(path, data)
    assert Y.dtype == np.float32
    predicted = _predict(model, data)
    assert predicted.dtype == np.float32
    scale = float(np.abs(predicted).max())
    np.testing.assert_allclose(Y, predicted, rtol=0, atol=1e-2 * max(scale, 1.0))
    # exactly (to float32) the same model computed in float32
    full = xn.Sequential(*model.layers, seed=0)
    full.set_params(model.params).set_state(model.state)
    np.testing.assert_allclose(Y, _predict(full, data), rtol=1e-5, atol=1e-5)
    assert np.abs(Y - predicted).max() > 0  # predict really did compute in 16 bits


# --------------------------------------------------------------------------- refusals


def test_what_cannot_be_exported_is_refused_by_name_and_nothing_is_written(tmp_path):
    class Mine(xn.Layer):
        pass

    path = tmp_path / "m.onnx"
    with pytest.raises(xn.ModelError, match=r"no ONNX emitter for layer 1 \(Mine\)"):
        xn.export_onnx(xn.Sequential(xn.Dense(4, 4), Mine(), seed=0), path)
    with pytest.raises(xn.ModelError, match=r"layer 1\.0 \(Mine\)"):
        xn.export_onnx(xn.Sequential(xn.Dense(4, 4), xn.Residual(Mine()), seed=0), path)
    with pytest.raises(xn.ModelError, match="no Dense layer"):
        xn.export_onnx(xn.Sequential(xn.ReLU()), path)
    with pytest.raises(TypeError, match="export_onnx: model must be an xpnet model"):
        xn.export_onnx({"0.W": np.ones((2, 2))}, path)
    model = xn.mlp([4, 2], seed=0)
    with pytest.raises(ValueError, match=r"opset must be an int >= 17; got 13"):
        xn.export_onnx(model, path, opset=13)
    with pytest.raises(ValueError, match=r"opset must be from 17 to \d+"):
        xn.export_onnx(model, path, opset=999)
    with pytest.raises(ValueError, match="dtype must be one of"):
        xn.export_onnx(model, path, dtype="float16")
    with pytest.raises(ValueError, match="does not exist"):
        xn.export_onnx(model, tmp_path / "no" / "m.onnx")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        xn.export_onnx(model, 3)
    with pytest.raises(OSError, match="export_onnx: cannot write"):
        xn.export_onnx(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnet\[onnx\]'"):
        xn.export_onnx(xn.mlp([2, 1], seed=0), tmp_path / "m.onnx")


def test_the_emitters_cover_every_registered_layer():
    from xpnet.nn.layers import LAYERS

    assert set(LAYERS) <= set(export.EMITTERS)


# --------------------------------------------------------------------------- command line


def test_export_command_writes_a_graph_that_predicts_like_the_model(tmp_path, capsys):
    saved, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    model = xn.mlp([4, 8, 2], activation="tanh", seed=0)
    model.save(saved)
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--opset", "20"]) == 0
    assert "input X (batch, 4), output Y (batch, 2)" in capsys.readouterr().out
    np.testing.assert_allclose(_run(out, X), _predict(model, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--onnx", "{tmp}/m.txt"], "--onnx path must end in .onnx"),
    (["--onnx", "{tmp}/no/m.onnx"], "does not exist"),
    (["--onnx", "{tmp}/m.onnx", "--opset", "12"], "--opset: must be at least 17"),
    (["--onnx", "{tmp}/m.onnx", "--dtype", "int8"], "--dtype: invalid choice"),
])
def test_export_command_refuses_bad_arguments_in_one_line(args, message, tmp_path, capsys):
    saved = tmp_path / "m.npz"
    xn.mlp([4, 2], seed=0).save(saved)
    argv = ["export", "--model", str(saved)] + [a.format(tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_export_command_refuses_a_missing_model_and_overwriting_it(tmp_path, capsys):
    saved = tmp_path / "m.npz"
    assert main(["export", "--model", str(saved), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    xn.mlp([4, 2], seed=0).save(saved)
    twin = tmp_path / "m.onnx"
    twin.hardlink_to(saved)
    assert main(["export", "--model", str(saved), "--onnx", str(twin)]) == 2
    assert "would overwrite the --model file" in capsys.readouterr().err
