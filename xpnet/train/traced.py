"""A traced training step for the JAX backend: one ``jax.jit`` call per step.

Eager JAX dispatches every array operation on its own (~20 us each), so the ~40 operations
of a small step cost far more than their arithmetic. On JAX the whole step (forward, loss,
backward, optimizer update) is a pure function of the parameters, the optimizer state and
the batch, so it is traced once and replayed. The traced function runs the very same code
as the eager path (``Sequential.forward``/``backward``, the loss, ``Optimizer.step`` with
``inplace=False``); ``tests/test_jit.py`` proves the two equal.

It applies by capability (``compiled_step`` returns None otherwise): the JAX backend, the
built-in layers with no active Dropout (its masks come from the host RNG), a built-in loss,
SGD or Adam (exact types: a subclass may keep host-side state), and ``XPNET_FAST`` not "0".

What may change between calls is passed as traced arguments, never baked into the trace:
the learning rate (a schedule callback may set ``optimizer.lr`` between epochs) and the
step count ``t`` (Adam's bias corrections). Everything else in the optimizer's config is
part of the cache key, as are the model structure and the loss; ``jax.jit`` itself keys on
the batch shape, so the last short batch of an epoch compiles once per fit, not per epoch.

Buffers are not donated: ``model.params`` and ``optimizer.state_arrays()`` hand out the
live arrays, and a caller holding them across a step would find them deleted.
"""

from __future__ import annotations

import copy
import os
import threading

from ..nn import layers as layer_types
from ..nn import losses
from ..nn import optim as optimizers

_PURE_OPTIMIZERS = (optimizers.SGD, optimizers.Adam)
_PURE_LAYERS = tuple(layer_types.LAYERS.values())
_PURE_LOSSES = tuple(losses.LOSSES.values())

# structure key -> jitted pure step, shared by models of one structure (a test suite or a grid
# search compiles each batch shape once); the oldest goes first past _CACHE_SIZE entries
_cache: dict = {}
_CACHE_SIZE = 64
_lock = threading.Lock()


def applies(model, loss_fn, optimizer) -> bool:
    """Whether the traced step may replace the eager one for this model, loss and optimizer."""
    return (model.backend.name == "jax"
            and os.environ.get("XPNET_FAST", "1") != "0"
            and type(optimizer) in _PURE_OPTIMIZERS
            and loss_fn in _PURE_LOSSES
            and all(type(layer) in _PURE_LAYERS for layer in model.layers)
            and not any(isinstance(layer, layer_types.Dropout) and layer.p > 0.0
                        for layer in model.layers))


def compiled_step(model, loss_fn, optimizer):
    """``step(X, T) -> loss`` (a 0-d device array) that trains ``model`` in place, or None.

    Each call updates ``model``'s parameters, ``optimizer.state`` and
    ``optimizer.iterations`` as ``Sequential.train_step`` does. None where ``applies`` is
    False: the caller then runs the eager step.
    """
    if not applies(model, loss_fn, optimizer):
        return None
    pure = _pure_step(model, loss_fn, optimizer)
    xp = model.backend.xp

    def step(X, T):
        _ensure_state(optimizer, model._params, xp)
        t = optimizer.iterations + 1
        params, state, value = pure(model._params, optimizer.state, X, T, optimizer.lr, t)
        # pytrees come back with sorted keys ("10.W" before "2.W"): keep the model's order
        model._params = {k: params[k] for k in model._params}
        optimizer.state = {k: {s: state[k][s] for s in slots}
                           for k, slots in optimizer.state.items()}
        optimizer.iterations = t
        return value

    return step


def _ensure_state(optimizer, params, xp) -> None:
    """Create missing state on the host first, as the eager step would on its first call:
    the traced step then always sees one pytree structure (one compile, not two)."""
    for name, p in params.items():
        if name not in optimizer.state:
            optimizer.state[name] = optimizer.init_state(p, xp)


def _key(model, loss_fn, optimizer) -> tuple:
    structure = tuple((type(layer), repr(layer.config())) for layer in model.layers)
    config = tuple((k, repr(v)) for k, v in optimizer.config().items() if k != "lr")
    backend = model.backend
    return (structure, loss_fn, type(optimizer), config, backend.dtype_name, str(backend.device))


def _pure_step(model, loss_fn, optimizer):
    key = _key(model, loss_fn, optimizer)
    with _lock:
        found = _cache.get(key)
        if found is None:
            if len(_cache) >= _CACHE_SIZE:
                del _cache[next(iter(_cache))]
            found = _cache[key] = _build(model, loss_fn, optimizer)
        return found


def _build(model, loss_fn, optimizer):
    jax = model.backend.lib  # the library comes from the backend table, not an import here
    opt_type, config = type(optimizer), optimizer.config()
    net = _template(model)

    def pure(params, state, X, T, lr, t):
        xp = net.backend.xp
        value, grads = _loss_and_grads(net, params, X, T, loss_fn)
        opt = opt_type(**config)  # a host object for this trace only: nothing of it leaks
        opt.lr, opt.iterations = lr, t - 1
        opt.state = {k: dict(slots) for k, slots in state.items()}
        new_params = opt.step(params, grads, xp, False, kernels=net._kernels())
        return new_params, opt.state, value

    return jax.jit(pure)


def _template(model):
    """A shallow copy of ``model`` without its arrays: only its layer code runs in the trace,
    on the traced parameters, and the cache must not keep a user's weights alive."""
    net = copy.copy(model)
    net.layers = list(model.layers)
    net._params, net.optimizer = {}, None
    return net


def _loss_and_grads(model, params, X, T, loss_fn):
    """``Sequential._loss_and_grads_device`` on explicit (traced) parameters."""
    Y, backprops = model.forward(X, params=params, training=True)
    if loss_fn is losses.cross_entropy:  # the same fused softmax-CE as the eager path
        value, dY = model._kernels().cross_entropy(Y, T)
    else:
        value, dY = loss_fn(model.backend.xp, Y, T)
    return value, model.backward(dY, backprops)


__all__ = ["applies", "compiled_step"]
