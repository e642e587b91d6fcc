"""Sequential: an ordered list of layers, its parameters on one backend, and the step.

Parameters are drawn on the host from ``seed`` (bit-identical on every backend), named
``"<layer index>.<name>"`` ("0.W", "0.b", "2.W", ...) and copied onto the backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .backend import table as backends
from . import data
from .backend import kernels as fast
from .nn import losses
from .nn import optim as optimizers
from .nn.layers import RELU_FAMILY, Dense, Dropout, Layer, Pass, activation


class ModelError(ValueError):
    """A model that is built or used inconsistently (widths, names, shapes)."""


class Sequential:
    """Layers applied in order. ``Sequential(Dense(4, 8), ReLU(), Dense(8, 1), seed=0)``.

    ``backend`` (a name or Backend; default ``xn.current()``) and ``dtype`` ("float32"
    or "float64") choose where the parameters live.
    """

    def __init__(self, *layers: Layer, seed: int | None = 0, backend=None,
                 dtype: str | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ModelError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ModelError(f"layer {i} is {type(layer).__name__}, not an xpnet Layer")
        self.layers: list[Layer] = list(layers)
        self._check_widths()
        self.seed = seed
        self.backend = _resolve_backend(backend, dtype)
        self.optimizer: optimizers.Optimizer | None = None
        self.stop_training = False
        # (layer-local name, model name) pairs per layer: no string work per step.
        self._keys = [[(k, f"{i}.{k}") for k in layer.param_shapes()]
                      for i, layer in enumerate(self.layers)]
        self._first_param_layer = next((i for i, keys in enumerate(self._keys) if keys), 0)
        self._params = {k: self.backend.asarray(v) for k, v in self._init_host().items()}

    # ------------------------------------------------------------------ structure
    def _check_widths(self) -> None:
        width = None
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense) and width is not None and layer.n_in != width:
                raise ModelError(
                    f"layer {i} (Dense) expects {layer.n_in} inputs but the layer before "
                    f"gives {width}"
                )
            width = layer.out_width(width)

    @property
    def n_in(self) -> int | None:
        """Input width (from the first Dense layer)."""
        first = next((layer for layer in self.layers if isinstance(layer, Dense)), None)
        return None if first is None else first.n_in

    @property
    def n_out(self) -> int | None:
        """Output width (from the last Dense layer)."""
        width = None
        for layer in self.layers:
            width = layer.out_width(width)
        return width

    def _first_layer_name(self) -> str:
        i = next((i for i, layer in enumerate(self.layers) if isinstance(layer, Dense)), 0)
        return f"{i} ({type(self.layers[i]).__name__})"

    def _default_init(self, i: int) -> str:
        for nxt in self.layers[i + 1:]:
            if isinstance(nxt, Dropout):
                continue
            return "he" if isinstance(nxt, RELU_FAMILY) else "glorot"
        return "glorot"

    def _init_host(self) -> dict:
        rng = data.host_rng(self.seed)
        out = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.init_params(rng, self._default_init(i)).items():
                out[f"{i}.{name}"] = value.astype(self.backend.dtype_name)
        return out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"0.W": (n_in, n_out), ...}`` as the architecture defines them."""
        return {f"{i}.{k}": s for i, layer in enumerate(self.layers)
                for k, s in layer.param_shapes().items()}

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}; backend={self.backend.name}, dtype={self.backend.dtype_name})"

    def __getstate__(self) -> dict:
        """State for pickle and copy.deepcopy: the kernels cache is left out (kernels hold
        library modules and thread-locals); ``_kernels()`` looks them up again."""
        state = dict(self.__dict__)
        state.pop("_kernels_cache", None)
        return state

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> dict:
        """Ordered ``{"0.W": array, "0.b": array, ...}`` on the model's backend (live arrays)."""
        return dict(self._params)

    def set_params(self, mapping) -> Sequential:
        """Replace parameters from NumPy or backend arrays; names and shapes are validated first."""
        expected = self.param_shapes()
        mapping = dict(mapping)
        unknown = sorted(set(mapping) - set(expected))
        missing = sorted(set(expected) - set(mapping))
        if unknown or missing:
            raise ModelError(f"set_params: unknown names {unknown}, missing names {missing}; "
                             f"expected {list(expected)}")
        staged = {}
        for name, shape in expected.items():
            value = data.parameter(self.backend, mapping[name], f"set_params: {name}")
            got = tuple(value.shape)
            if got != shape:
                raise ModelError(f"set_params: {name} has shape {got}, expected {shape}")
            staged[name] = value
        self._params = staged
        if self.optimizer is not None:
            self.optimizer.state.clear()  # moments of other weights would be meaningless
        return self

    def snapshot(self, optimizer: bool = False) -> dict:
        """Device copies of the parameters (and optimizer state): a restore point."""
        xp = self.backend.xp
        snap = {"params": {k: xp.asarray(v, copy=True) for k, v in self._params.items()}}
        if optimizer and self.optimizer is not None:
            snap["optimizer"] = ({k: xp.asarray(v, copy=True)
                                  for k, v in self.optimizer.state_arrays().items()},
                                 self.optimizer.iterations)
        return snap

    def restore(self, snap: dict) -> None:
        """Return to a ``snapshot()`` (copied again, so the snapshot can be reused)."""
        xp = self.backend.xp
        self._params = {k: xp.asarray(v, copy=True) for k, v in snap["params"].items()}
        if "optimizer" in snap and self.optimizer is not None:
            state, iterations = snap["optimizer"]
            self.optimizer.load_state_arrays({k: xp.asarray(v, copy=True)
                                              for k, v in state.items()}, iterations)

    def to(self, name=None, device: Any = None, dtype: str | None = None) -> Sequential:
        """Move parameters and optimizer state to another backend/device/dtype; returns self."""
        target = _resolve_backend(name, dtype, device)
        if target is self.backend:
            return self
        move = lambda a: target.asarray(self.backend.to_numpy(a))  # noqa: E731
        params = {k: move(v) for k, v in self._params.items()}
        if self.optimizer is not None:
            state = {k: move(v) for k, v in self.optimizer.state_arrays().items()}
            self.optimizer.load_state_arrays(state, self.optimizer.iterations)
        self._params, self.backend = params, target
        return self

    # ------------------------------------------------------------------ passes
    def forward(self, X, params: dict | None = None, training: bool = False, rng=None):
        """Run every layer; returns ``(Y, backprops)`` (one closure per layer)."""
        params = self._params if params is None else params
        ctx = Pass(self.backend.xp, self.backend, training, rng, self._kernels())
        backprops = []
        for i, layer in enumerate(self.layers):
            # a Dense output is a temporary nothing else holds: the next layer may overwrite it
            ctx.fresh = i > 0 and type(self.layers[i - 1]) is Dense
            X, back = layer.forward({k: params[full] for k, full in self._keys[i]}, X, ctx)
            backprops.append(back)
        return X, backprops

    def _kernels(self):
        """The backend's fast paths, looked up once per backend (``to`` may change it)."""
        cached = self.__dict__.get("_kernels_cache")
        if cached is None or cached[0] is not self.backend:
            cached = self._kernels_cache = (self.backend, fast.kernels(self.backend))
        return cached[1]

    def backward(self, dY, backprops) -> dict:
        """Gradients of every parameter from the loss gradient ``dY`` (input grad not formed)."""
        per_layer = [None] * len(self.layers)
        first = self._first_param_layer
        for i in range(len(self.layers) - 1, first - 1, -1):
            dY, per_layer[i] = backprops[i](dY, need_dX=i > first)
        return {full: per_layer[i][k] for i, keys in enumerate(self._keys) for k, full in keys}

    def _inputs(self, X, name="X"):
        return data.inputs(self.backend, X, self.n_in, self._first_layer_name(), name)

    def _targets(self, y, loss: str, n: int, name="y"):
        losses.resolve(loss)
        return data.targets(self.backend, y, loss, self.n_out, n, name)

    def predict(self, X, batch_size: int | None = None):
        """Model output for ``X`` (inputs are converted) as an array on the model's backend."""
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"predict: batch_size must be None or an int >= 1; got {batch_size!r}")
        X = self._inputs(X)
        return self._predict_device(X, batch_size)

    def _predict_device(self, X, batch_size=None):
        n = X.shape[0]
        if not batch_size or batch_size >= n:
            return self.forward(X)[0]
        parts = [self.forward(X[a:b, ...])[0] for a, b in data.batch_bounds(n, batch_size)]
        return self.backend.xp.concat(parts, axis=0)

    def loss_and_grads(self, X, y, loss: str = "mse") -> tuple[float, dict]:
        """The loss and the gradient of every parameter on one batch, without updating."""
        loss_fn = losses.resolve(loss)
        X = self._inputs(X)
        T = self._targets(y, loss, X.shape[0])
        value, grads = self._loss_and_grads_device(X, T, loss_fn)
        return float(value), grads

    def _loss_and_grads_device(self, X, T, loss_fn, training=False, rng=None):
        Y, backprops = self.forward(X, training=training, rng=rng)
        if loss_fn is losses.cross_entropy:  # the fused softmax-CE gradient of this backend
            value, dY = self._kernels().cross_entropy(Y, T)
        else:
            value, dY = loss_fn(self.backend.xp, Y, T)
        return value, self.backward(dY, backprops)

    def train_step(self, X, T, loss_fn, optimizer, rng=None):
        """One forward, backward and update on device arrays; returns the loss (0-d array)."""
        value, grads = self._loss_and_grads_device(X, T, loss_fn, training=True, rng=rng)
        self._params = optimizer.step(self._params, grads, self.backend.xp, self.backend.inplace,
                                      kernels=self._kernels())
        return value

    # ------------------------------------------------------------------ training API
    def fit(self, X, y, loss: str = "mse", optimizer="sgd", epochs: int = 1,
            batch_size: int | None = 32, validation_data=None, callbacks: Iterable = (),
            seed: int | None = 0, verbose: int = 0, shuffle: bool = True, lr: float | None = None,
            **kwargs):
        """Train; returns a History whose ``.history`` maps metric names to per-epoch floats.

        See ``xpnet.training.fit`` for every argument.
        """
        from .train.loop import fit

        return fit(self, X, y, loss=loss, optimizer=optimizer, epochs=epochs,
                   batch_size=batch_size, validation_data=validation_data, callbacks=callbacks,
                   seed=seed, verbose=verbose, shuffle=shuffle, lr=lr, **kwargs)

    def evaluate(self, X, y, loss: str = "mse", batch_size: int | None = None) -> dict:
        """``{"loss": ..., "accuracy": ...}`` (accuracy for classification losses only)."""
        from .train.loop import evaluate

        return evaluate(self, X, y, loss=loss, batch_size=batch_size)

    def save(self, path) -> None:
        """Write architecture, parameters and optimizer state to ``path`` (.npz), atomically."""
        from .io.checkpoint import save

        save(self, path)


def _resolve_backend(backend, dtype=None, device=None) -> backends.Backend:
    if backend is None:
        cur = backends.current()
        if dtype is None and device is None:
            return cur
        return backends.get(cur.name, cur.device if device is None else device,
                            dtype or cur.dtype_name)
    if isinstance(backend, backends.Backend):
        if dtype is None and device is None:
            return backend
        return backends.get(backend.name, device or backend.device, dtype or backend.dtype_name)
    if isinstance(backend, backends._Using):
        return _resolve_backend(backend.backend, dtype, device)
    return backends.get(backend, device, dtype)


def mlp(sizes, activation: str = "relu", output_activation: str | None = None,
        dropout: float = 0.0, seed: int | None = 0, backend=None, dtype: str | None = None,
        init: str | None = None) -> Sequential:
    """A multilayer perceptron: Dense layers of ``sizes`` with ``activation`` between them.

    The output is linear (logits) unless ``output_activation`` is given. ``dropout`` > 0
    adds a Dropout after every hidden activation.
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ModelError(f"mlp needs at least two sizes (inputs and outputs); got {sizes}")
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Dense(n_in, n_out, init=init))
        if i < len(sizes) - 2:
            layers.append(_activation(activation))
            if dropout:
                layers.append(Dropout(dropout))
        elif output_activation is not None:
            layers.append(_activation(output_activation))
    return Sequential(*layers, seed=seed, backend=backend, dtype=dtype)


def _activation(name):
    try:
        return activation(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
