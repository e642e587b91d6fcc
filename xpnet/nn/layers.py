"""Layers. Each ``forward(params, X, ctx)`` returns ``(Y, backprop)``.

``backprop(dY, need_dX=True)`` returns ``(dX, grads)``: the gradient for the layer's
input (``None`` when not needed, which saves the first layer's largest GEMM) and a
dict of parameter gradients with the same names as ``params``. The closure keeps
exactly what the backward pass needs, nothing else. All math goes through ``ctx.xp``;
where the backend's kernels offer a fused version of an operation (``ctx.kernels``), the
layer takes it, and the maths written here is the reference it is proven equal to.

``LAYERS`` is the registry ``load`` rebuilds layers from; ``register_layer`` adds a user's
own Layer subclass to it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend.kernels import Portable
from . import init as initializers

__all__ = [
    "ACTIVATIONS", "Backprop", "Dense", "Dropout", "GELU", "Identity", "LAYERS", "Layer",
    "LeakyReLU", "MAX_DEPTH", "ModelError", "Pass", "RELU_FAMILY", "ReLU", "Sigmoid", "Softmax",
    "Tanh", "activation", "chain_in_width", "check_chain", "default_inits", "from_config",
    "from_spec", "register_layer", "sigmoid", "softmax", "spec_of", "unregistered", "walk",
    "width_of",
]

Backprop = Callable[..., tuple[Any, dict]]


class ModelError(ValueError):
    """A model that is built or used inconsistently (widths, names, shapes).

    Defined with the layers, below both the model and the training loop, so that each can
    raise it; ``xpnet.ModelError`` is this class.
    """


@dataclass
class Pass:
    """What one forward pass needs besides params and input."""

    xp: Any
    backend: Any
    training: bool = False
    rng: Any = None  # host numpy Generator, for dropout masks
    kernels: Any = None  # backend.kernels: the hot operations (portable when None)
    fresh: bool = False  # X is a temporary the model owns: the layer may overwrite it
    grads_out: dict | None = None  # where this layer may write its parameter gradients
    state: dict | None = None  # this layer's state (running statistics) by local name
    state_out: dict | None = None  # where a training pass puts the layer's new state

    def __post_init__(self):
        if self.kernels is None:
            self.kernels = (Portable(self.xp, inplace=False) if self.backend is None
                            else self.backend.kernels)


class Layer:
    """Base class: a parameter-free layer that is the identity."""

    def forward(self, params: dict, X, ctx: Pass) -> tuple[Any, Backprop]:
        """``(Y, backprop)``; ``backprop(dY, need_dX=True)`` returns ``(dX, grads)``."""

        def backprop(dY, need_dX=True):
            return dY, {}

        return X, backprop

    def out_width(self, width: int | None) -> int | None:
        """The output width for an input of ``width`` features (None: any)."""
        return width

    def config(self) -> dict:
        """JSON-able constructor arguments (the architecture that ``save`` writes)."""
        return {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{local name: shape}`` of the layer's parameters (empty when it has none)."""
        return {}

    def init_params(self, rng, default_init: str) -> dict:
        """Host (NumPy) initial values drawn from ``rng``; ``default_init`` names the scheme."""
        return {}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{local name: shape}`` of the layer's state: arrays a training pass changes that
        are not parameters (BatchNorm's running statistics). The model keeps them (saved,
        moved by ``to()``, never seen by the optimizer); ``forward`` reads them from
        ``ctx.state`` and, in training, writes new values into ``ctx.state_out`` when that
        is not None, so that the pass stays a pure function (the traced step threads them)."""
        return {}

    def init_state(self) -> dict:
        """Host (NumPy) initial values of the state (same names as ``state_shapes``)."""
        return {}

    def in_width(self) -> int | None:
        """The input width the layer requires (None: any)."""
        return None

    def sublayers(self) -> tuple[Layer, ...]:
        """The layers a block is made of (none for a plain layer)."""
        return ()

    def check_width(self, width: int | None, path: str) -> int | None:
        """The output width for an input of ``width``, after checking the layer accepts it;
        ``path`` ("2", or "1.0" inside a block) is what the error names."""
        need = self.in_width()
        if need is not None and width is not None and need != width:
            raise ModelError(f"layer {path} ({type(self).__name__}) expects {need} inputs but "
                             f"the layer before gives {width}")
        return self.out_width(width)

    @classmethod
    def from_config(cls, config: dict, depth: int = 0) -> Layer:
        """The layer ``config()`` describes (``load`` calls it; ``depth`` is how deeply the
        layer is nested in blocks, which a block checks against ``MAX_DEPTH``)."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Identity(Layer):
    """Y = X."""


class Dense(Layer):
    """Fully connected: ``Y = X @ W + b`` with ``W`` stored ``(n_in, n_out)``.

    ``init`` is "he", "glorot", "normal", "uniform" or a callable
    ``(rng, fan_in, fan_out) -> array``; None lets the model pick He before a ReLU-family
    activation and Glorot otherwise.
    """

    def __init__(self, n_in: int, n_out: int, init: str | Callable | None = None,
                 bias: bool = True):
        n_in, n_out = width_of("Dense", "n_in", n_in), width_of("Dense", "n_out", n_out)
        if not isinstance(bias, bool):
            raise ValueError(f"Dense: bias must be True or False; got {bias!r}")
        if init not in (None, "custom"):
            initializers.resolve(init)  # fail now, not at model build time
        self.n_in, self.n_out, self.init, self.bias = n_in, n_out, init, bias

    def config(self) -> dict:
        init = self.init if isinstance(self.init, str) or self.init is None else "custom"
        return {"n_in": self.n_in, "n_out": self.n_out, "init": init, "bias": self.bias}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"W": (self.n_in, self.n_out)}
        if self.bias:
            shapes["b"] = (self.n_out,)
        return shapes

    def init_params(self, rng, default_init: str) -> dict:
        init = self.init if self.init not in (None, "custom") else default_init
        W = initializers.resolve(init)(rng, self.n_in, self.n_out)
        params = {"W": W}
        if self.bias:
            params["b"] = initializers.zeros(self.n_out)
        return params

    def out_width(self, width):
        return self.n_out

    def in_width(self):
        return self.n_in

    def forward(self, params, X, ctx):
        kernels, W, out = ctx.kernels, params["W"], ctx.grads_out or {}
        Y = kernels.linear(X, W, params["b"] if self.bias else None)  # X @ W + b

        def backprop(dY, need_dX=True):
            grads = {"W": kernels.matmul(X.T, dY, out=out.get("W"))}  # X.T @ dY
            if self.bias:
                grads["b"] = kernels.sum_rows(dY, out=out.get("b"))  # sum of dY over the batch
            return (kernels.linear_grad(dY, W) if need_dX else None), grads  # dY @ W.T

        return Y, backprop


def width_of(owner: str, label: str, n) -> int:
    """A layer width: any integer type (NumPy's too), as a plain int for ``config()``.

    Floats are refused even when whole (2.0 is usually a width computed with ``/``), and
    so are bools, which are ints to Python but never meant as a width.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        kind = "a bool" if isinstance(n, bool) else type(n).__name__
        raise ValueError(f"{owner}: {label} must be a positive int; got {n!r} ({kind}; widths "
                         "are integers: int or a NumPy integer)")
    if n <= 0:
        raise ValueError(f"{owner}: {label} must be a positive int; got {n!r}")
    return int(n)


def _real(owner: str, label: str, value) -> float:
    """A finite real number (NumPy's too, not bools) as a plain float, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: {label} must be a finite number; got {value!r}")
    return float(value)


class ReLU(Layer):
    """max(X, 0)."""

    def forward(self, params, X, ctx):
        xp, kernels = ctx.xp, ctx.kernels
        if kernels.relu is None:
            Y = xp.maximum(X, 0.0)
        else:  # fused; in place only on the model's own temporary
            Y = kernels.relu(X, overwrite=ctx.fresh)

        def backprop(dY, need_dX=True):
            if kernels.relu_grad is None:
                return xp.where(Y > 0, dY, 0.0), {}
            return kernels.relu_grad(dY, Y), {}

        return Y, backprop


class LeakyReLU(Layer):
    """X where X > 0, else slope * X."""

    def __init__(self, slope: float = 0.01):
        self.slope = _real("LeakyReLU", "slope", slope)

    def config(self):
        return {"slope": self.slope}

    def forward(self, params, X, ctx):
        xp, slope = ctx.xp, self.slope
        positive = X > 0
        Y = xp.where(positive, X, X * slope)

        def backprop(dY, need_dX=True):
            return xp.where(positive, dY, dY * slope), {}

        return Y, backprop


def sigmoid(xp, X):
    """Logistic function without overflow: exp is only taken of -|X|."""
    E = xp.exp(-xp.abs(X))
    inv = 1.0 / (1.0 + E)
    return xp.where(X >= 0, inv, E * inv)


class Sigmoid(Layer):
    """1 / (1 + exp(-X)), computed without overflow."""

    def forward(self, params, X, ctx):
        Y = sigmoid(ctx.xp, X)

        def backprop(dY, need_dX=True):
            return dY * (Y * (1.0 - Y)), {}

        return Y, backprop


class Tanh(Layer):
    """tanh(X)."""

    def forward(self, params, X, ctx):
        Y = ctx.xp.tanh(X)

        def backprop(dY, need_dX=True):
            return dY * (1.0 - Y * Y), {}

        return Y, backprop


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


class GELU(Layer):
    """GELU, tanh approximation (the standard has no erf): 0.5 X (1 + tanh(c (X + k X^3)))."""

    def forward(self, params, X, ctx):
        xp = ctx.xp
        X2 = X * X
        T = xp.tanh(_GELU_C * (X + _GELU_K * X2 * X))
        Y = 0.5 * X * (1.0 + T)

        def backprop(dY, need_dX=True):
            dT = _GELU_C * (1.0 + 3.0 * _GELU_K * X2)
            return dY * (0.5 * (1.0 + T) + 0.5 * X * (1.0 - T * T) * dT), {}

        return Y, backprop


def softmax(xp, X):
    """Softmax over the last axis, shifted by the row maximum so exp never overflows."""
    E = xp.exp(X - xp.max(X, axis=-1, keepdims=True))
    return E / xp.sum(E, axis=-1, keepdims=True)


class Softmax(Layer):
    """Softmax over features.

    For training with cross-entropy, leave it out: the loss takes logits.
    """

    def forward(self, params, X, ctx):
        xp = ctx.xp
        S = softmax(xp, X)

        def backprop(dY, need_dX=True):
            return S * (dY - xp.sum(dY * S, axis=-1, keepdims=True)), {}

        return S, backprop


class Dropout(Layer):
    """Zeroes each input with probability ``p`` while training (scaling the rest by 1/(1-p)).

    Masks are drawn on the host from the fit seed, so they are the same on every backend.
    At predict and evaluate time it is the identity.
    """

    def __init__(self, p: float = 0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a number in [0, 1); got {p!r}")
        self.p: float = float(p)

    def config(self):
        return {"p": self.p}

    def forward(self, params, X, ctx):
        if not ctx.training or self.p == 0.0:
            return super().forward(params, X, ctx)
        if ctx.rng is None:
            raise RuntimeError("Dropout in training needs a host RNG in the forward pass")
        keep = ctx.rng.random(tuple(X.shape)) >= self.p
        scale = 1.0 / (1.0 - self.p)
        mask = ctx.backend.asarray(keep * scale, dtype=X.dtype)
        Y = X * mask

        def backprop(dY, need_dX=True):
            return dY * mask, {}

        return Y, backprop


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Dense, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, Identity, Dropout)
}
ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "softmax": Softmax,
    "identity": Identity,
    "linear": Identity,
}
RELU_FAMILY = (ReLU, LeakyReLU, GELU)


def activation(name: str | Layer) -> Layer:
    """An activation layer by name ("relu", "tanh", ...) or the layer itself."""
    if isinstance(name, Layer):
        return name
    try:
        return ACTIVATIONS[str(name).lower()]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}"
        ) from None


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Make a Layer subclass loadable by name: ``load`` rebuilds it as ``cls(**config())``.

    Use it as a decorator (``@xn.register_layer``) or call it; returns ``cls``. A name
    already registered for another class is refused, so a checkpoint always means one thing.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer takes a Layer subclass; got {cls!r}")
    known = LAYERS.get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(f"register_layer: a different layer is already registered as "
                         f"{cls.__name__!r} ({known.__module__}.{known.__qualname__})")
    LAYERS[cls.__name__] = cls
    return cls


def unregistered(layers) -> list[tuple[str, Layer]]:
    """``(path, layer)`` of every layer (blocks' too) that ``load`` could not rebuild: its
    class is not the one registered under its name."""
    return [(path, layer) for path, layer in walk(layers)
            if LAYERS.get(type(layer).__name__) is not type(layer)]


def from_config(kind: str, config: dict, depth: int = 0) -> Layer:
    """Rebuild a layer from its type name and ``config()`` (used by ``load``)."""
    if kind not in LAYERS:
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(LAYERS)}; a layer "
                         "of your own must be registered first: decorate its class with "
                         "@xn.register_layer (or call xn.register_layer(cls)) before load")
    return LAYERS[kind].from_config(config, depth)


def spec_of(layer: Layer) -> dict:
    """``{"type": name, "config": config()}``: how a checkpoint describes a layer."""
    return {"type": type(layer).__name__, "config": layer.config()}


MAX_DEPTH = 8  # blocks nested in blocks, as a checkpoint may declare them (an MLP needs 1-2)


def from_spec(spec, path: str, depth: int = 0) -> Layer:
    """A layer from ``spec_of``'s dict, checked; ``path`` ("1.0") is what errors name."""
    if (not isinstance(spec, dict) or set(spec) != {"type", "config"}
            or not isinstance(spec["type"], str) or not isinstance(spec["config"], dict)):
        raise ValueError(f"layer {path} must be {{'type': str, 'config': dict}}; got "
                         f"{_cut(repr(spec))}")
    if depth > MAX_DEPTH:
        raise ValueError(f"layer {path} is nested {depth} blocks deep; at most {MAX_DEPTH}")
    try:
        return from_config(spec["type"], spec["config"], depth)
    except TypeError as exc:
        raise ValueError(f"layer {path} ({spec['type']}): {exc}") from None


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def walk(layers, prefix: str = ""):
    """``(path, layer)`` for every layer, blocks' own layers included ("1", "1.0", ...)."""
    for i, layer in enumerate(layers):
        path = f"{prefix}{i}"
        yield path, layer
        yield from walk(layer.sublayers(), path + ".")


def check_chain(layers, width: int | None, prefix: str = "") -> int | None:
    """The output width of ``layers`` applied in order to ``width`` inputs, each checked."""
    for i, layer in enumerate(layers):
        width = layer.check_width(width, f"{prefix}{i}")
    return width


def chain_in_width(layers) -> int | None:
    """The input width the first layer that requires one asks for (None: any)."""
    for layer in layers:
        need = layer.in_width()
        if need is not None:
            return need
    return None


def default_inits(layers, after: str = "glorot") -> list[str]:
    """Each layer's default initialiser: He before a ReLU-family activation (Dropout
    skipped), Glorot otherwise; ``after`` for a layer that ends the chain."""
    out = []
    for i in range(len(layers)):
        scheme = after
        for nxt in layers[i + 1:]:
            if isinstance(nxt, Dropout):
                continue
            scheme = "he" if isinstance(nxt, RELU_FAMILY) else "glorot"
            break
        out.append(scheme)
    return out
