"""The traced training step, for backends that can trace (JAX): one traced call per step.

Eager JAX dispatches every array operation on its own (~20 us each), so the ~40 operations
of a small step cost far more than their arithmetic. There the whole step (forward, loss,
backward, optimizer update) is a pure function of the parameters, the optimizer state and
the batch, so ``Step`` traces it once (``backend.trace``) and replays it. The traced
function runs the very same code as the eager path (``forward``/``backward``, the loss,
``Optimizer.step`` with ``inplace=False``); ``tests/test_jit.py`` proves the two equal.

It applies by capability (``compiled_step`` returns None otherwise): a backend that can
trace (with fast paths on), the registered layers and blocks with no active Dropout (its
masks come from the host RNG), a built-in loss (``Loss.builtin``: a user's callable may
keep host-side state), a registered optimizer type (exactly: a subclass may keep
host-side state).

What may change between calls is passed as traced arguments, never baked into the trace:
the learning rate (a schedule callback may set ``optimizer.lr`` between epochs) and the
step count ``t`` (Adam's bias corrections). Everything else in the optimizer's config is
part of the cache key, as are the model structure and the loss (with its parameters); the
trace itself keys on the batch shape, so the last short batch of an epoch compiles once per
fit, not per epoch.

Buffers are not donated: ``model.params`` and ``optimizer.state_arrays()`` hand out the
live arrays, and a caller holding them across a step would find them deleted.
"""

from __future__ import annotations

import copy
import threading

from ..interrupts import atomic
from ..nn import blocks, losses, norm
from ..nn import layers as layer_types
from ..nn import optim as optimizers
from ..nn.buffers import Buffer

# structure key -> traced pure step, shared by models of one structure (a test suite or a grid
# search compiles each batch shape once); the oldest goes first past _CACHE_SIZE entries
_cache: dict = {}
_CACHE_SIZE = 64
_lock = threading.Lock()


def applies(model, loss: losses.Loss, optimizer) -> bool:
    """Whether the traced step may replace the eager one for this model, loss and optimizer."""
    return (model.backend.can_trace
            and type(optimizer) in optimizers.OPTIMIZERS.values()
            and loss.builtin
            and all(type(layer) in _BUILT_IN_LAYERS for _, layer in layer_types.walk(model.layers))
            and not any(isinstance(layer, layer_types.Dropout) and layer.p > 0.0
                        for _, layer in layer_types.walk(model.layers)))


# the layers shipped with xpnet (a registered user layer may keep host-side state)
_BUILT_IN_LAYERS = (
    layer_types.Dense, layer_types.ReLU, layer_types.LeakyReLU, layer_types.Sigmoid,
    layer_types.Tanh, layer_types.GELU, layer_types.Softmax, layer_types.Identity,
    layer_types.Dropout, blocks.Residual, norm.LayerNorm, norm.BatchNorm)


def compiled_step(model, loss, optimizer):
    """``step(X, T) -> loss`` (a 0-d device array) that trains ``model`` in place, or None.

    Each call updates ``model``'s parameters, ``optimizer.state`` and
    ``optimizer.iterations`` as the eager step does. None where ``applies`` is False: the
    caller then runs the eager step.
    """
    loss = losses.resolve(loss)
    if not applies(model, loss, optimizer):
        return None
    pure = _pure_step(model, loss, optimizer)
    xp = model.backend.xp

    def step(X, T):
        params = model.parameters.arrays
        _ensure_state(optimizer, params, xp)
        t = optimizer.iterations + 1
        new_params, state, value, layer_state = pure(params, optimizer.state, model.state, X, T,
                                                     optimizer.lr, t)
        with atomic():  # the four assignments are the update: all of them or none
            # pytrees come back with sorted keys ("10.W" before "2.W"): keep the model's order
            model.parameters = Buffer(model.layout, {k: new_params[k] for k in params})
            model.commit_state({k: layer_state[k] for k in model.state_shapes})
            optimizer.state = {k: {s: state[k][s] for s in slots}
                               for k, slots in optimizer.state.items()}
            optimizer.iterations = t
        return value

    return step


def _ensure_state(optimizer, params, xp) -> None:
    """Create missing state first, as the eager step would on its first call: the traced
    step then always sees one pytree structure (one compile, not two)."""
    for name, p in params.items():
        if name not in optimizer.state:
            optimizer.state[name] = optimizer.init_state(p, xp)


def _key(model, loss, optimizer) -> tuple:
    structure = tuple((type(layer), repr(layer.config())) for layer in model.layers)
    config = tuple((k, repr(v)) for k, v in optimizer.config().items() if k != "lr")
    backend = model.backend
    return (structure, loss.name, repr(loss.config()), type(optimizer), config,
            backend.dtype_name, str(backend.device))


def _pure_step(model, loss, optimizer):
    key = _key(model, loss, optimizer)
    with _lock:
        found = _cache.get(key)
        if found is None:
            if len(_cache) >= _CACHE_SIZE:
                del _cache[next(iter(_cache))]
            found = _cache[key] = _build(model, loss, optimizer)
        return found


def _build(model, loss, optimizer):
    opt_type, config = type(optimizer), optimizer.config()
    net = _template(model)
    backend = net.backend
    kernels = backend.kernels

    def pure(params, state, layer_state, X, T, lr, t):
        xp = backend.xp
        new_layer_state: dict = {}  # the layers' state flows through: a functional update
        Y, backprops = net.forward(X, params=params, training=True, kernels=kernels,
                                   state=layer_state, state_out=new_layer_state)
        value, dY = loss.value_and_grad(kernels, xp, Y, T)
        grads = net.backward(dY, backprops)
        opt = opt_type.from_config(config)  # a host object for this trace only
        opt.lr, opt.iterations = lr, t - 1
        opt.state = {k: dict(slots) for k, slots in state.items()}
        new_params = opt.step(params, grads, xp, False, kernels=kernels)
        return new_params, opt.state, value, new_layer_state

    return backend.trace(pure)


def _template(model):
    """A shallow copy of ``model`` without its arrays: only its layer code runs in the trace,
    on the traced parameters, and the cache must not keep a user's weights alive."""
    net = copy.copy(model)
    net.layers = list(model.layers)
    net.parameters, net.optimizer, net._state = None, None, {}
    return net


__all__ = ["applies", "compiled_step"]
