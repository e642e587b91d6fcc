"""Sequential: an ordered list of layers, its parameters on one backend, and its passes.

Parameters are drawn on the host from ``seed`` (bit-identical on every backend), named
``"<layer index>.<name>"`` ("0.W", "0.b", "2.W", ...) and copied onto the backend, where
they live as views of one flat buffer when the backend has views (``nn.buffers``).

This module sits above ``train/``: ``fit`` and ``evaluate`` are methods of the model (the
public contract), so the model imports the loop, and the loop works on any object with
the network protocol documented in ``docs/architecture.md`` without importing this one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from . import checks, data
from .backend import memory
from .backend import table as backends
from .io import checkpoint
from .io import state_dict as torch_layout
from .nn import losses
from .nn import optim as optimizers
from .nn.blocks import Residual
from .nn.buffers import Buffer, Layout
from .nn.layers import (
    Dense,
    Dropout,
    Layer,
    ModelError,
    Pass,
    activation,
    chain_in_width,
    check_chain,
    default_inits,
    walk,
    width_of,
)
from .train import loop


class Sequential:
    """Layers applied in order. ``Sequential(Dense(4, 8), ReLU(), Dense(8, 1), seed=0)``.

    ``backend`` (a name or Backend; default ``xn.current()``) and ``dtype`` ("float32"
    or "float64") choose where the parameters live. ``precision`` ("float32", "float64",
    "mixed-bfloat16" or "mixed-float16"; default what ``use()`` set, else the dtype's)
    chooses what the passes compute in: the mixed ones keep float32 parameters, optimizer
    state and ``params``, and run forward and backward in 16 bits. ``params`` (a mapping of
    every parameter name to an array) starts from those values instead of drawing from
    ``seed``.
    """

    def __init__(self, *layers: Layer, seed: int | None = 0, backend=None,
                 dtype: str | None = None, params: Mapping | None = None,
                 precision: str | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ModelError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            _check_layer(i, layer)
        self.layers: list[Layer] = list(layers)
        check_chain(self.layers, None)
        self.seed = checks.integer("Sequential", "seed", seed, 0, allow_none=True)
        if precision is None and dtype is None and backend is None:
            precision = backends.default_precision()
        self.backend = backends.resolve(
            backend, dtype=backends.precision_dtype("Sequential", precision, dtype))
        self.precision = _precision(self.backend, precision)
        if params is None:  # drawing weights too large to hold fails here, not half-way
            memory.check_init_fits(self.backend, self._layers_with_parameters(), "Sequential")
        self.optimizer: optimizers.Optimizer | None = None
        self.stop_training = False
        self.history = None  # the History of the last fit, also when it was interrupted
        # (layer-local name, model name) pairs per layer: no string work per step.
        self._keys = [[(k, f"{i}.{k}") for k in layer.param_shapes()]
                      for i, layer in enumerate(self.layers)]
        self._first_param_layer = next((i for i, keys in enumerate(self._keys) if keys), 0)
        self.layout = Layout(self.param_shapes())
        source = self._init_host() if params is None else params
        self.parameters = self._stage(source, "Sequential(params=...)")
        # layer state (BatchNorm's running statistics): one array per name, never flat
        self._state_keys = [[(k, f"{i}.{k}") for k in layer.state_shapes()]
                            for i, layer in enumerate(self.layers)]
        self.state_shapes = {full: self.layers[i].state_shapes()[k]
                             for i, keys in enumerate(self._state_keys) for k, full in keys}
        self._state = self._stage_state(
            {f"{i}.{k}": v.astype(self.backend.dtype_name)
             for i, layer in enumerate(self.layers) for k, v in layer.init_state().items()},
            "Sequential")

    # ------------------------------------------------------------------ structure
    @property
    def n_in(self) -> int | None:
        """Input width (from the first layer that requires one, such as a Dense)."""
        return chain_in_width(self.layers)

    @property
    def n_out(self) -> int | None:
        """Output width (from the last Dense layer); None for a model without one."""
        return self.output_width()

    def output_width(self, n_features: int | None = None) -> int | None:
        """The output width for inputs of ``n_features`` (a parameter-free model keeps the
        input's width; None when unknown)."""
        width = n_features
        for layer in self.layers:
            width = layer.out_width(width)
        return width

    @property
    def dense_widths(self) -> list[int]:
        """The inputs, then each Dense layer's output width: the MLP whose training
        ``backend.memory.check_fits`` estimates (empty without a Dense layer)."""
        dense = [layer for _, layer in walk(self.layers) if isinstance(layer, Dense)]
        return [dense[0].n_in, *(layer.n_out for layer in dense)] if dense else []

    @property
    def widths(self) -> list[int]:
        """The width entering each layer and the output width (unknown widths as 0)."""
        widths, width = [self.n_in or 0], self.n_in
        for layer in self.layers:
            width = layer.out_width(width)
            widths.append(width or 0)
        return widths

    def _first_layer_name(self) -> str:
        i = next((i for i, layer in enumerate(self.layers) if layer.in_width() is not None), 0)
        return f"{i} ({type(self.layers[i]).__name__})"

    def _layers_with_parameters(self) -> list[tuple[str, int]]:
        """(the layer named with its index, type and widths, its number of parameters)."""
        widths = self.widths
        out = []
        for i, layer in enumerate(self.layers):
            count = sum(math.prod(shape) for shape in layer.param_shapes().values())
            if count:
                out.append((f"layer {i} ({type(layer).__name__} {widths[i]} -> "
                            f"{widths[i + 1]}, {count:,} parameters)", count))
        return out

    def _init_host(self) -> dict:
        rng = data.host_rng(self.seed)
        out = {}
        for i, (layer, scheme) in enumerate(zip(self.layers, default_inits(self.layers),
                                                strict=True)):
            for name, value in layer.init_params(rng, scheme).items():
                out[f"{i}.{name}"] = value.astype(self.backend.dtype_name)
        return out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"0.W": (n_in, n_out), ...}`` as the architecture defines them."""
        return {f"{i}.{k}": s for i, layer in enumerate(self.layers)
                for k, s in layer.param_shapes().items()}

    def __getstate__(self) -> dict:
        """State for pickle and copy.deepcopy, without the per-layer split cache (it holds
        the arrays it split by identity, which a copy does not keep)."""
        state = dict(self.__dict__)
        state.pop("_split_cache", None)
        return state

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        mixed = f", precision={self.precision.name}" if self.precision.mixed else ""
        return (f"Sequential({inner}; backend={self.backend.name}, "
                f"dtype={self.backend.dtype_name}{mixed})")

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> dict:
        """Ordered ``{"0.W": array, "0.b": array, ...}`` on the model's backend (live arrays)."""
        return dict(self.parameters.arrays)

    def _stage(self, mapping, what: str) -> Buffer:
        """A new parameter buffer from ``mapping``, every name and shape validated first."""
        # no copy here: Buffer.of copies every value into the parameter buffer
        staged = self._checked(mapping, self.layout.shapes, what, "parameters", "params",
                               copy=False)
        return Buffer.of(self.layout, staged, self.backend)

    def _checked(self, mapping, expected: dict, what: str, kind: str, example: str,
                 copy: bool) -> dict:
        """``mapping`` on the model's backend, its names exactly ``expected``'s and each
        array of its shape (``kind`` and ``example`` name them in errors)."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"{what}: {kind} must be a mapping of names to arrays "
                            f"(such as model.{example}); got {type(mapping).__name__}")
        mapping = dict(mapping)
        names = "names" if kind == "parameters" else f"{kind} names"
        unknown = sorted(set(mapping) - set(expected))
        missing = sorted(set(expected) - set(mapping))
        if unknown or missing:
            raise ModelError(f"{what}: unknown {names} {unknown}, missing {names} {missing}; "
                             f"expected {list(expected)}")
        staged = {}
        for name, shape in expected.items():
            value = data.parameter(self.backend, mapping[name], f"{what}: {name}", copy=copy)
            got = tuple(value.shape)
            if got != shape:
                raise ModelError(f"{what}: {name} has shape {got}, expected {shape}")
            staged[name] = value
        return staged

    def set_params(self, mapping) -> Sequential:
        """Replace parameters from NumPy or backend arrays; names and shapes are validated first."""
        self.parameters = self._stage(mapping, "set_params")
        if self.optimizer is not None:  # moments of other weights would be meaningless
            self.optimizer.load_state_arrays({}, self.optimizer.iterations)
        return self

    def state_dict(self, format: str = "torch") -> dict:
        """The parameters and layer state (BatchNorm's running statistics) as torch tensors
        under PyTorch's names and layout ("0.weight" as (out_features, in_features),
        "0.bias", "1.running_mean"), for the ``torch.nn.Sequential`` of the same layers;
        they share memory with the model where DLPack allows (``xpnet.io.state_dict``)."""
        return torch_layout.state_dict(self, format)

    def load_state_dict(self, state_dict, format: str = "torch") -> Sequential:
        """Replace parameters from a PyTorch-style ``state_dict``; every key, shape and value
        is checked first, and the error names the key (``xpnet.io.state_dict``)."""
        torch_layout.load_state_dict(self, state_dict, format)
        return self

    @property
    def state(self) -> dict:
        """Ordered ``{"2.running_mean": array, ...}``: the layers' state (not parameters: no
        optimizer sees it), on the model's backend (live arrays; empty for most models)."""
        return dict(self._state)

    def set_state(self, mapping) -> Sequential:
        """Replace the layers' state from NumPy or backend arrays; names and shapes are
        validated first."""
        self._state = self._stage_state(mapping, "set_state")
        return self

    def _stage_state(self, mapping, what: str) -> dict:
        """Copies of ``mapping`` on the model's backend, every name and shape validated."""
        return self._checked(mapping, self.state_shapes, what, "state", "state", copy=True)

    def commit_state(self, new_state: dict) -> None:
        """Take the state a training pass computed (``forward(state_out=...)``): what the
        training step calls once its update is made."""
        if new_state:
            self._state = {**self._state, **new_state}

    def snapshot(self, optimizer: bool = False) -> dict:
        """Device copies of the parameters and layer state (and optimizer state): a restore
        point."""
        xp = self.backend.xp
        snap: dict[str, Any] = {"params": self.parameters.copy(self.backend),
                                "state": {k: xp.asarray(v, copy=True)
                                          for k, v in self._state.items()}}
        if optimizer and self.optimizer is not None:
            xp = self.backend.xp
            snap["optimizer"] = ({k: xp.asarray(v, copy=True)
                                  for k, v in self.optimizer.state_arrays().items()},
                                 self.optimizer.iterations)
        return snap

    def restore(self, snap: dict) -> None:
        """Return to a ``snapshot()`` (copied again, so the snapshot can be reused)."""
        self.parameters = snap["params"].copy(self.backend)
        xp = self.backend.xp
        if "state" in snap:
            self._state = {k: xp.asarray(v, copy=True) for k, v in snap["state"].items()}
        if "optimizer" in snap and self.optimizer is not None:
            xp = self.backend.xp
            state, iterations = snap["optimizer"]
            self.optimizer.load_state_arrays({k: xp.asarray(v, copy=True)
                                              for k, v in state.items()}, iterations)

    def to(self, name=None, device: Any = None, dtype: str | None = None,
           precision: str | None = None) -> Sequential:
        """Move parameters, layer state and optimizer state to another backend/device/dtype,
        or change the precision (default: keep it, where the target can compute in it);
        returns self."""
        if precision is None and dtype is None:
            precision = self.precision.name if self.precision.mixed else None
        target = backends.resolve(self.backend if name is None else name, device,
                                  backends.precision_dtype("to", precision, dtype))
        new_precision = _precision(target, precision)  # refused before anything moves
        if target is self.backend:
            self.precision = new_precision
            return self
        move = lambda a: target.asarray(a)  # noqa: E731  (by DLPack where it can)
        parameters = Buffer.of(self.layout, {k: move(v) for k, v in self.params.items()},
                               target)
        if self.optimizer is not None:
            state = {k: move(v) for k, v in self.optimizer.state_arrays().items()}
            self.optimizer.load_state_arrays(state, self.optimizer.iterations)
        state = {k: move(v) for k, v in self._state.items()}
        self.parameters, self._state, self.backend = parameters, state, target
        self.precision = new_precision
        return self

    # ------------------------------------------------------------------ passes
    @property
    def kernels(self):
        """The backend's fast paths as the current setting selects them (``xn.fast_paths``)."""
        return self.backend.kernels

    def forward(self, X, params: dict | None = None, training: bool = False, rng=None,
                grads_out: dict | None = None, kernels=None, state: dict | None = None,
                state_out: dict | None = None):
        """Run every layer; returns ``(Y, backprops)`` (one closure per layer).

        ``grads_out`` (name -> array) is where the backward pass may write each parameter's
        gradient (the training step's flat gradient buffer). ``state`` (default: the
        model's) is the layers' state the pass reads; a training pass puts the new state
        into ``state_out`` when given (the model's own is never changed here: the training
        step commits it with ``commit_state`` after the update).
        """
        state = self._state if state is None else state
        per_layer = self._per_layer(self.parameters.arrays if params is None else params)
        grads_per_layer = None if grads_out is None else self._per_layer(grads_out)
        ctx = Pass(self.backend.xp, self.backend, training, rng,
                   self.backend.kernels if kernels is None else kernels)
        backprops = []
        for i, layer in enumerate(self.layers):
            # a Dense output is a temporary nothing else holds: the next layer may overwrite it
            ctx.fresh = i > 0 and type(self.layers[i - 1]) is Dense
            ctx.grads_out = None if grads_per_layer is None else grads_per_layer[i]
            keys = self._state_keys[i]
            ctx.state = {k: state[full] for k, full in keys} if keys else None
            ctx.state_out = {} if keys and state_out is not None else None
            X, back = layer.forward(per_layer[i], X, ctx)
            if ctx.state_out and state_out is not None:  # a caller that asked for state
                state_out.update({full: ctx.state_out[k] for k, full in keys
                                  if k in ctx.state_out})
            backprops.append(back)
        return X, backprops

    def _per_layer(self, mapping: dict) -> list[dict]:
        """``mapping`` (model name -> array) split into each layer's local names. The step
        hands over the same dicts every call (the parameter views, the gradient buffer), so
        the last two splits are kept: no dict building per layer per step."""
        cache = self.__dict__.setdefault("_split_cache", [])
        for source, split in cache:
            if source is mapping:
                return split
        split = [{k: mapping[full] for k, full in keys} for keys in self._keys]
        cache.insert(0, (mapping, split))
        del cache[4:]  # parameters and gradients, and their 16-bit copies when mixed
        return split

    def backward(self, dY, backprops, grads_out: dict | None = None) -> dict:
        """Gradients of every parameter from the loss gradient ``dY`` (input grad not formed).

        With ``grads_out`` every gradient ends up in its array there (a layer that did not
        write it in place is copied in), and those arrays are returned.
        """
        per_layer: list = [None] * len(self.layers)
        first = self._first_param_layer
        for i in range(len(self.layers) - 1, first - 1, -1):
            dY, per_layer[i] = backprops[i](dY, need_dX=i > first)
        grads = {full: per_layer[i][k] for i, keys in enumerate(self._keys) for k, full in keys}
        if grads_out is not None:
            for name, g in grads.items():
                if g is not grads_out[name]:
                    grads_out[name][...] = g
            return dict(grads_out)
        return grads

    def device_inputs(self, X, name: str = "X"):
        """``X`` validated (2-D, numeric, finite, this model's width) on the model's device."""
        return data.inputs(self.backend, X, self.n_in, self._first_layer_name(), name)

    def device_targets(self, y, loss, X, name: str = "y"):
        """``y`` validated for ``loss`` and the device inputs ``X`` (one row per sample; a
        parameter-free model's output is as wide as ``X``), encoded as float rows on the
        model's device."""
        entry = losses.resolve(loss)
        n_samples, n_features = X.shape
        return data.targets(self.backend, y, entry.name, self.output_width(n_features),
                            n_samples, name)

    def predict(self, X, batch_size: int | None = None):
        """Model output for ``X`` (inputs are converted) as an array on the model's backend;
        a memory-mapped ``X`` is read a chunk of rows at a time."""
        return loop.predict(self, X, batch_size)

    def predict_device(self, X, batch_size: int | None = None):
        """``predict`` on an already validated device array (computed in the model's
        precision, returned in its dtype)."""
        n = X.shape[0]
        forward = self._forward_in_precision()
        if not batch_size or batch_size >= n:
            return forward(X)
        parts = [forward(X[a:b, ...]) for a, b in data.batch_bounds(n, batch_size)]
        return self.backend.xp.concat(parts, axis=0)

    def _forward_in_precision(self):
        """Inference as training computes it: in 16 bits for a mixed model."""
        if not self.precision.mixed:
            return lambda X: self.forward(X)[0]
        xp = self.backend.xp
        low = backends.compute(self.backend, self.precision.compute_dtype)
        params = {k: xp.astype(v, low.dtype) for k, v in self.parameters.arrays.items()}
        state = {k: xp.astype(v, low.dtype) for k, v in self._state.items()}
        return lambda X: xp.astype(self.forward(xp.astype(X, low.dtype), params=params,
                                                kernels=low.kernels, state=state)[0],
                                   self.backend.dtype)

    def loss_and_grads(self, X, y, loss: str = "mse") -> tuple[float, dict]:
        """The loss and the gradient of every parameter on one batch, without updating."""
        entry = losses.resolve(loss)
        X = self.device_inputs(X)
        T = self.device_targets(y, entry, X)
        Y, backprops = self.forward(X)
        value, dY = entry.value_and_grad(self.kernels, self.backend.xp, Y, T)
        return float(value), self.backward(dY, backprops)

    # ------------------------------------------------------------------ training API
    def fit(self, X, y=None, loss: str = "mse", optimizer="sgd", epochs: int = 1,
            batch_size: int | None = 32, validation_data=None, callbacks: Iterable = (),
            seed: int | None = 0, verbose: int = 0, shuffle: bool = True, lr: float | None = None,
            **kwargs):
        """Train; returns a History whose ``.history`` maps metric names to per-epoch floats.

        ``X``, ``y`` are arrays (memory-mapped ones are read a batch at a time), or ``X``
        alone is an iterable of ``(X, y)`` batches.
        See ``xpnet.train.loop.fit`` for every argument.
        """
        return loop.fit(self, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                        batch_size=batch_size, validation_data=validation_data,
                        callbacks=callbacks, seed=seed, verbose=verbose, shuffle=shuffle, lr=lr,
                        **kwargs)

    def evaluate(self, X, y, loss: str = "mse", batch_size: int | None = None,
                 sample_weight=None) -> dict:
        """``{"loss": ..., "accuracy": ...}`` (accuracy for classification losses only;
        ``sample_weight`` weights the loss and every metric)."""
        return loop.evaluate(self, X, y, loss=loss, batch_size=batch_size,
                             sample_weight=sample_weight)

    def save(self, path) -> None:
        """Write architecture, parameters and optimizer state to ``path`` (.npz), atomically."""
        checkpoint.save(self, path)


def load(path, backend=None, device=None, dtype: str | None = None,
         precision: str | None = None) -> Sequential:
    """Read a checkpoint onto ``backend`` (default: the current one) with its saved dtype
    and precision (``precision`` or ``dtype`` loads it into another one).

    Safe on untrusted files: the file is read and checked whole (``io.checkpoint.read``:
    nothing unpickled, nothing allocated beyond a small multiple of the declared model)
    before the model is built from its arrays, without drawing initial weights.
    """
    # a bad backend or precision is the caller's error, not the file's
    target = backends.resolve(backend, device,
                              backends.precision_dtype("load", precision, dtype))
    path = checks.path("load", "path", path)
    contents = checkpoint.read(path)
    if precision is None and dtype is None:
        precision = contents.precision
    if precision is not None:
        _precision(backends.resolve(target, dtype=backends.precision_dtype(
            "load", precision, None)), precision, f"load: {path!r} was saved in")
    try:
        model = Sequential(*contents.layers, seed=contents.seed, backend=target,
                           dtype=None if precision else dtype or contents.dtype,
                           params=contents.params, precision=precision)
        model.set_state(contents.layer_state)
        if contents.optimizer is not None:
            state = {k: model.backend.asarray(v) for k, v in contents.state.items()}
            contents.optimizer.load_state_arrays(state, contents.iterations)
            model.optimizer = contents.optimizer
    except MemoryError:
        raise checkpoint.CheckpointError(
            f"{path!r}: not enough memory to build the model it declares "
            f"({checkpoint.size_text(contents.nbytes)} of arrays)") from None
    except (ModelError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise checkpoint.CheckpointError(
            f"{path!r} has an invalid architecture or parameters: {exc}") from None
    return model


def mlp(sizes, activation: str = "relu", output_activation: str | None = None,
        dropout: float = 0.0, seed: int | None = 0, backend=None, dtype: str | None = None,
        init: str | None = None, residual: bool = False,
        precision: str | None = None) -> Sequential:
    """A multilayer perceptron: Dense layers of ``sizes`` with ``activation`` between them.

    The output is linear (logits) unless ``output_activation`` is given. ``dropout`` > 0
    adds a Dropout after every hidden activation. ``residual=True`` makes every hidden
    layer as wide as its input a block ``Residual(Dense, activation[, Dropout])``: ``h +
    act(Dense(h))``, the residual MLP of MNIST-1D. ``precision`` as for ``Sequential``.
    """
    sizes = _mlp_sizes(sizes)
    residual = checks.boolean("mlp", "residual", residual)
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i < len(sizes) - 2:
            hidden = [Dense(n_in, n_out, init=init), _activation(activation)]
            if dropout:
                hidden.append(Dropout(dropout))
            layers += [Residual(*hidden)] if residual and n_in == n_out else hidden
            continue
        layers.append(Dense(n_in, n_out, init=init))
        if output_activation is not None:
            layers.append(_activation(output_activation))
    return Sequential(*layers, seed=seed, backend=backend, dtype=dtype, precision=precision)


def _precision(backend, name: str | None, what: str = "precision"):
    """The Precision ``name`` (None: the backend dtype's own) on ``backend``, refused with
    the backend's own 16-bit dtypes named where it cannot compute in it."""
    chosen = backends.Precision.named(name or backend.dtype_name)
    if chosen.mixed:
        try:
            backends.compute(backend, chosen.compute_dtype)
        except backends.BackendError as exc:
            raise backends.UnknownBackendError(f"{what} {chosen.name}: {exc}") from None
    return chosen


def _mlp_sizes(sizes) -> list[int]:
    """``sizes`` as a list of at least two widths, each checked and named ``sizes[i]``."""
    if isinstance(sizes, (str, bytes, Mapping)) or not isinstance(sizes, Iterable):
        raise ModelError(f"mlp: sizes must be a sequence of layer widths, inputs first and "
                         f"outputs last, such as [2, 32, 1]; got {type(sizes).__name__} "
                         f"{sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ModelError(f"mlp needs at least two sizes (inputs and outputs); got {sizes}")
    n_dense = len(sizes) - 1
    return [width_of("mlp", f"sizes[{i}] (n_in of Dense layer 1 of {n_dense})" if i == 0 else
                     f"sizes[{i}] (n_out of Dense layer {i} of {n_dense})", size)
            for i, size in enumerate(sizes)]


def _check_layer(i: int, layer) -> None:
    if isinstance(layer, type) and issubclass(layer, Layer):
        raise ModelError(f"layer {i} is the class {layer.__name__}, not a layer: pass an "
                         f"instance: {layer.__name__}()")
    if not isinstance(layer, Layer):
        raise ModelError(f"layer {i} is {type(layer).__name__}, not an xpnet Layer")


def _activation(name):
    try:
        return activation(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


__all__ = ["ModelError", "Sequential", "load", "mlp"]
