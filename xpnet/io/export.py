"""ONNX export: a model's inference graph, built node by node with ``onnx.helper``.

The graph has one input ``"X"`` of shape ``("batch", n_in)`` and one output ``"Y"`` of shape
``("batch", n_out)``, the batch size symbolic, so one file serves every batch size. It is the
graph of ``model.predict``: Dropout is the identity and normalisation uses its running
statistics. Parameters are stored in the graph's dtype (float32 unless asked otherwise).

Each layer type has one emitter in ``EMITTERS``, keyed by its registry name (the class
name, as in ``nn.layers.LAYERS``): ``emit(graph, layer, path, values, x) -> y`` adds the
layer's nodes reading the tensor named ``x`` and returns the name of its output. ``values``
holds the layer's parameters and state by local name ("W", "b"; "0.W" inside a block) as
host arrays. A layer type without an emitter is refused by name before anything is built.

This module reads a model through the network protocol only (``layers``, ``params``,
``state``, ``backend``, ``n_in``, ``output_width``), so it sits with the other files, below
the model.
``onnx`` is imported when an export runs; it comes with the ``onnx`` extra.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import checks
from ..interrupts import protected
from ..nn.layers import ModelError
from ..version import __version__
from .checkpoint import _write_atomically

__all__ = ["EMITTERS", "INPUT", "OUTPUT", "build_onnx", "export_onnx"]

INPUT, OUTPUT = "X", "Y"  # the graph's input and output names, a documented contract
MIN_OPSET = 17  # LayerNormalization, and Softmax over one axis, as xpnet computes them
GELU_OPSET = 20  # the first opset with a Gelu operator (its "tanh" approximation included)
_DTYPES = ("float32", "float64")


def _onnx():
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise ImportError(f"export_onnx needs the onnx package, which is not installed "
                          f"({exc}); install the onnx extra: pip install 'xpnet[onnx]'") from None


class Graph:
    """The graph being built: nodes, initializers (parameters and constants), its dtype."""

    def __init__(self, onnx, dtype: str, opset: int):
        self.onnx, self.opset = onnx, opset
        self.dtype = np.dtype(dtype)
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = {INPUT}

    def _fresh(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._names:
            n += 1
            candidate = f"{name}_{n}"
        self._names.add(candidate)
        return candidate

    def tensor(self, name: str, value) -> str:
        """An initializer holding ``value`` in the graph's dtype; returns its name."""
        name = self._fresh(name)
        array = np.asarray(value, dtype=self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        """One node of ``op`` on ``inputs``; returns the name of its (only) output."""
        out = self._fresh(name)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out


Emitter = Callable[[Graph, Any, str, dict, str], str]


def _dense(g: Graph, layer, path: str, values: dict, x: str) -> str:
    # Gemm computes X @ W + b with W as xpnet stores it, (n_in, n_out): no transpose
    inputs = [x, g.tensor(f"{path}.W", values["W"])]
    if getattr(layer, "bias", True) and "b" in values:
        inputs.append(g.tensor(f"{path}.b", values["b"]))
    return g.node("Gemm", inputs, f"{path}.Gemm")


def _unary(op: str, **attributes) -> Emitter:
    def emit(g: Graph, layer, path: str, values: dict, x: str) -> str:
        return g.node(op, [x], f"{path}.{op}", **attributes)

    return emit


def _leaky_relu(g: Graph, layer, path: str, values: dict, x: str) -> str:
    return g.node("LeakyRelu", [x], f"{path}.LeakyRelu", alpha=float(layer.slope))


def _softmax(g: Graph, layer, path: str, values: dict, x: str) -> str:
    return g.node("Softmax", [x], f"{path}.Softmax", axis=-1)


# xpnet's GELU is the tanh approximation (the array API standard has no erf)
_GELU_C, _GELU_K = math.sqrt(2.0 / math.pi), 0.044715


def _gelu(g: Graph, layer, path: str, values: dict, x: str) -> str:
    if g.opset >= GELU_OPSET:
        return g.node("Gelu", [x], f"{path}.Gelu", approximate="tanh")
    # 0.5 X (1 + tanh(c (X + k X^3))), in the order xpnet computes it
    x2 = g.node("Mul", [x, x], f"{path}.X2")
    x3 = g.node("Mul", [x2, x], f"{path}.X3")
    inner = g.node("Add", [x, g.node("Mul", [x3, g.tensor(f"{path}.k", _GELU_K)], f"{path}.kX3")],
                   f"{path}.inner")
    t = g.node("Tanh", [g.node("Mul", [inner, g.tensor(f"{path}.c", _GELU_C)], f"{path}.cX")],
               f"{path}.T")
    one_plus = g.node("Add", [t, g.tensor(f"{path}.one", 1.0)], f"{path}.1pT")
    half_x = g.node("Mul", [x, g.tensor(f"{path}.half", 0.5)], f"{path}.halfX")
    return g.node("Mul", [half_x, one_plus], f"{path}.Gelu")


def _identity(g: Graph, layer, path: str, values: dict, x: str) -> str:
    # Dropout too: predict never drops (ONNX's Dropout in inference mode is the same)
    return g.node("Identity", [x], f"{path}.Identity")


def _layer_norm(g: Graph, layer, path: str, values: dict, x: str) -> str:
    # over the last axis with the biased variance, as nn/norm.py computes it
    return g.node("LayerNormalization",
                  [x, g.tensor(f"{path}.gamma", values["gamma"]),
                   g.tensor(f"{path}.beta", values["beta"])],
                  f"{path}.LayerNormalization", axis=-1, epsilon=float(layer.eps))


def _batch_norm(g: Graph, layer, path: str, values: dict, x: str) -> str:
    # eval mode: normalised with the running statistics (the layer's state), as predict
    # does; momentum only matters in training, so the graph has none
    inputs = [x] + [g.tensor(f"{path}.{name}", values[name])
                    for name in ("gamma", "beta", "running_mean", "running_var")]
    return g.node("BatchNormalization", inputs, f"{path}.BatchNormalization",
                  epsilon=float(layer.eps))


def _residual(g: Graph, layer, path: str, values: dict, x: str) -> str:
    # Y = X + f(X), f the block's own layers, their values named "0.W", "1.b", ...
    y = _chain(g, layer.sublayers(), values, x, prefix=f"{path}.")
    return g.node("Add", [x, y], f"{path}.Add")


EMITTERS: dict[str, Emitter] = {
    "Dense": _dense,
    "ReLU": _unary("Relu"),
    "LeakyReLU": _leaky_relu,
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "GELU": _gelu,
    "Softmax": _softmax,
    "Identity": _identity,
    "Dropout": _identity,
    "LayerNorm": _layer_norm,
    "BatchNorm": _batch_norm,
    "Residual": _residual,
}


def _local(values: Mapping[str, Any], index: int) -> dict:
    """The values of layer ``index`` under their local names ("3.W" -> "W", "1.0.W" -> "0.W")."""
    head = f"{index}."
    return {name[len(head):]: value for name, value in values.items() if name.startswith(head)}


def _chain(g: Graph, layers, values: Mapping[str, Any], x: str, prefix: str = "") -> str:
    for i, layer in enumerate(layers):
        x = EMITTERS[type(layer).__name__](g, layer, f"{prefix}{i}", _local(values, i), x)
    return x


def _unsupported(layers, prefix: str = "") -> list[str]:
    """'layer 2 (MyLayer)' for every layer, nested ones too, that has no emitter."""
    found = []
    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        if kind not in EMITTERS:
            found.append(f"layer {prefix}{i} ({kind})")
        sublayers = getattr(layer, "sublayers", None)
        if callable(sublayers):
            found.extend(_unsupported(sublayers(), f"{prefix}{i}."))
    return found


def _host_values(model) -> dict[str, np.ndarray]:
    """Every parameter, and the state of layers that keep one (running statistics), as host
    arrays named as the model names them."""
    backend = model.backend
    arrays = {**model.params, **model.state}
    return {name: backend.to_numpy(value) for name, value in arrays.items()}


def _check_arguments(model, opset, dtype) -> tuple[int, str]:
    if not (hasattr(model, "layers") and hasattr(model, "params")):
        raise TypeError(f"export_onnx: model must be an xpnet model (xn.Sequential, xn.mlp, "
                        f"xn.load); got {type(model).__name__}")
    opset = checks.integer("export_onnx", "opset", opset, MIN_OPSET)
    if dtype not in _DTYPES:
        raise ValueError(f"export_onnx: dtype must be one of {_DTYPES}; got {dtype!r}")
    unsupported = _unsupported(model.layers)
    if unsupported:
        raise ModelError(f"export_onnx: no ONNX emitter for {', '.join(unsupported)}; layers "
                         f"that export: {', '.join(EMITTERS)}")
    if model.n_in is None:
        raise ModelError("export_onnx: the model has no Dense layer, so the width of its "
                         "input X is not fixed; add a Dense layer")
    return opset, dtype


def build_onnx(model, opset: int = MIN_OPSET, dtype: str = "float32"):
    """The checked ``onnx.ModelProto`` of ``model`` (what ``export_onnx`` writes)."""
    opset, dtype = _check_arguments(model, opset, dtype)
    onnx = _onnx()
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"export_onnx: opset must be from {MIN_OPSET} to {newest} (the "
                         f"newest this onnx {onnx.__version__} knows); got {opset}")
    g = Graph(onnx, dtype, opset)
    y = _chain(g, model.layers, _host_values(model), INPUT)
    g.nodes.append(onnx.helper.make_node("Identity", [y], [OUTPUT], name=OUTPUT))
    element = onnx.helper.np_dtype_to_tensor_dtype(g.dtype)
    n_out = model.output_width(model.n_in)
    graph = onnx.helper.make_graph(
        g.nodes, "xpnet", [onnx.helper.make_tensor_value_info(INPUT, element, ["batch",
                                                                             model.n_in])],
        [onnx.helper.make_tensor_value_info(OUTPUT, element, ["batch", n_out])],
        initializer=g.initializers)
    imports = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(
        graph, opset_imports=imports, producer_name="xpnet",
        ir_version=onnx.helper.find_min_ir_version_for(imports),
        doc_string=f"{model!r}: input {INPUT} ({dtype}, batch x {model.n_in}), output "
                   f"{OUTPUT} ({dtype}, batch x {n_out}), as model.predict(X)")
    proto.producer_version = __version__
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, opset: int = MIN_OPSET, dtype: str = "float32"):
    """Write ``model``'s inference graph to ``path`` as ONNX; returns the ``onnx.ModelProto``.

    The graph's input is named ``"X"``, shape ``("batch", n_in)``, and its output ``"Y"``,
    shape ``("batch", n_out)``: ``Y`` is ``model.predict(X)`` for any batch size. Its
    tensors are ``dtype`` ("float32" or "float64"), the parameters cast to it. ``opset``
    is the ONNX operator set, 17 or newer (from 20 GELU is ONNX's own Gelu operator).
    Every layer type is exported (Dropout as the identity, BatchNorm with its running
    statistics, Residual blocks as an ``Add`` of their input); the graph passes
    ``onnx.checker`` (full check) before the file is written, atomically. Needs the
    ``onnx`` extra (``pip install 'xpnet[onnx]'``).

    A mixed-precision model exports its float32 parameters as a float32 graph, which
    computes in float32 where ``predict`` computes in 16 bits: the two agree to 16-bit
    rounding (about 1e-3 of the outputs' scale for float16), not to 1e-5.

        import onnxruntime
        xn.export_onnx(model, "model.onnx")
        session = onnxruntime.InferenceSession("model.onnx")
        Y = session.run(["Y"], {"X": X.astype("float32")})[0]
    """
    path = checks.path("export_onnx", "path", path)
    checks.existing_folder("export_onnx", path)
    proto = build_onnx(model, opset, dtype)
    raw = proto.SerializeToString()
    try:
        with protected():  # Ctrl-C waits for the rename or the clean-up
            _write_atomically(path, raw)
    except OSError as exc:
        raise OSError(exc.errno, f"export_onnx: cannot write {path!r}: {exc.strerror}") from exc
    return proto
