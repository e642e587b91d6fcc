"""Optimizers, as ``torch.optim`` defines them, and their registry.

``update(p, g, state, xp, inplace)`` is each optimizer's maths for one array. It is
elementwise, so the same call updates one parameter or, on backends with views, the flat
buffer of all of them at once (``step_flat``: a few array operations per step whatever
the number of parameters). On JAX arrays are immutable and ``x -= y`` only rebinds a local
name, so there the same maths runs functionally (``step`` with ``inplace=False``) and the
caller keeps the returned dict.

An optimizer's state is bound to the parameters it was created for (``bind``): the first
model that trains with it owns it, and another model is refused instead of silently
sharing its moments. State is created with the parameters' dtype and device (a float32
model keeps float32 state).

``OPTIMIZERS`` is the one registry: names for ``fit(optimizer="adam")`` and the command
line, ``from_config``/``config()`` for checkpoints, ``slot_names()`` for the state a
checkpoint holds, and the exact types the traced step knows to be pure.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from .. import checks
from .buffers import Buffer, Layout

__all__ = [
    "Adagrad", "Adam", "AdamW", "OPTIMIZERS", "Optimizer", "RMSprop", "SGD", "by_type", "resolve",
]


class Optimizer:
    """Shared parts: learning rate, state per parameter name, global-norm clipping, binding."""

    name: ClassVar[str] = ""  # the registry key ("sgd", "adam", ...)

    def __init__(self, lr: float, weight_decay: float = 0.0, clipnorm: float | None = None):
        owner = type(self).__name__
        self.lr = checks.real(owner, "lr", lr, 0.0, low_open=True)
        self.weight_decay = checks.real(owner, "weight_decay", weight_decay, 0.0)
        if clipnorm is not None:
            clipnorm = checks.real(owner, "clipnorm", clipnorm, 0.0, low_open=True)
        self.clipnorm = clipnorm
        self.state: dict[str, dict[str, Any]] = {}
        self.iterations = 0
        self._slots: dict[str, Buffer] | None = None  # flat state, views behind self.state
        self._owner: Any = None  # weakref to what the state belongs to

    # ------------------------------------------------------------------ config
    def config(self) -> dict:
        """Constructor arguments, for saving and for ``repr``."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        """A new optimizer from ``config()`` (what a checkpoint stores)."""
        return cls(**config)

    def slot_names(self) -> tuple[str, ...]:
        """The state slots each parameter gets with this configuration."""
        return ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __getstate__(self) -> dict:
        """Pickle and deep-copy without the owner (a weak reference): a copy is unbound, and
        the first model that trains with it owns it."""
        state = dict(self.__dict__)
        state["_owner"] = None
        state["_slots"] = None  # the flat slots are made again from the per-name state
        if self._slots:  # which then holds copies, not views of the dropped buffers
            state["state"] = {p: dict(slots) for p, slots in self.state.items()}
        return state

    # ------------------------------------------------------------------ binding
    def bind(self, owner, layout: Layout, backend) -> None:
        """Make this optimizer's state belong to ``owner``'s parameters (``layout`` on
        ``backend``). Raises ValueError, changing nothing, when it belongs to another live
        owner or its state does not fit."""
        for key, a in self.state_arrays().items():
            name = key.rpartition("/")[0]
            if tuple(a.shape) != layout.shapes.get(name):
                raise ValueError(
                    f"the optimizer holds state for {name!r} with shape {tuple(a.shape)}, but "
                    f"this model's {name!r} is {layout.shapes.get(name)}: it was used with "
                    "another model; pass a new optimizer")
            if a.dtype != backend.dtype or not backend.owns(a):
                raise ValueError(
                    f"the optimizer's state is not {backend.dtype_name} on the model's backend "
                    f"{backend.name} ({backend.device}); move model and optimizer together "
                    "with model.to(...), or pass a new optimizer")
        bound = self._owner() if self._owner is not None else None
        if bound is not None and bound is not owner:
            raise ValueError(
                f"the optimizer ({type(self).__name__}) is already bound to the parameters of "
                "another model; its moments would be shared between the two: pass a new "
                "optimizer (or copy.deepcopy(optimizer) for one with the same settings)")
        self._owner = weakref.ref(owner)

    def release(self) -> None:
        """Forget the owner (its state stays): ``bind`` accepts a new one."""
        self._owner = None

    # ------------------------------------------------------------------ steps
    def clip(self, grads: dict, xp) -> dict:
        """Scale all gradients together so their global L2 norm is at most ``clipnorm``."""
        if self.clipnorm is None:
            return grads
        scale = self._clip_scale([xp.sum(g * g) for g in grads.values()], xp)
        return {k: g * scale for k, g in grads.items()}

    def _clip_scale(self, squares: list, xp):
        norm = xp.sqrt(sum(squares[1:], squares[0]))
        # min(1, c / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_, without a host round
        # trip: no device sync per step.
        return xp.minimum(self.clipnorm / (norm + 1e-6), 1.0)

    def step(self, params: dict, grads: dict, xp, inplace: bool, kernels=None) -> dict:
        """Apply one update, one parameter at a time; returns the params dict to keep (the
        same one when in place). ``kernels`` (``backend.kernels``, optional) supplies the
        backend's fused in-place updates; without it the portable array API update runs."""
        grads = self.clip(grads, xp)
        self.iterations += 1
        out = params if inplace else dict(params)
        for name, g in grads.items():
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = self.init_state(params[name], xp)
            out[name] = self.update(params[name], g, state, xp, inplace, kernels)
        return out

    def step_flat(self, params: Buffer, grads: Buffer, backend, kernels=None) -> None:
        """Apply one update to every parameter at once, in place, on flat buffers.

        ``params`` and ``grads`` are views of one buffer each (``Buffer.flat``); the state
        lives the same way. The gradient buffer is the step's own and may be scaled in place.
        """
        xp = backend.xp
        slots = self._flat_slots(params.layout, backend)
        g = grads.flat
        if self.clipnorm is not None:
            g *= self._clip_scale([xp.sum(g * g)], xp)
        self.iterations += 1
        self.update(params.flat, g, {k: b.flat for k, b in slots.items()}, xp, True, kernels)

    def _flat_slots(self, layout: Layout, backend) -> dict[str, Buffer]:
        """The state as flat buffers, made (or re-made after ``load_state_arrays``) once."""
        if self._slots is None:
            per_slot = {slot: {p: s[slot] for p, s in self.state.items()}
                        for slot in self.slot_names()}
            self._slots = {slot: (Buffer.of(layout, values, backend) if values
                                  else self._fresh_slot(slot, layout, backend))
                           for slot, values in per_slot.items()}
            self.state = {p: {slot: b.arrays[p] for slot, b in self._slots.items()}
                          for p in layout.shapes} if self._slots else {}
        return self._slots

    def slot_start(self, slot: str) -> float:
        """The value a state slot starts from (zero, but for Adagrad's accumulator)."""
        return 0.0

    def _fresh_slot(self, slot: str, layout: Layout, backend) -> Buffer:
        buffer = Buffer.zeros(layout, backend)
        start = self.slot_start(slot)
        if start:
            buffer.flat[...] = start
        return buffer

    def init_state(self, p, xp) -> dict:
        """The per-parameter state slots, created on the first step like ``p``."""
        return {slot: xp.full_like(p, self.slot_start(slot)) for slot in self.slot_names()}

    def update(self, p, g, state: dict, xp, inplace: bool, kernels=None):
        """One array's update from gradient ``g``; returns the new ``p``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_arrays(self) -> dict[str, Any]:
        """Flat ``{"<param>/<slot>": array}`` view of the state (for ``to`` and ``save``)."""
        return {f"{p}/{slot}": a for p, slots in self.state.items() for slot, a in slots.items()}

    def load_state_arrays(self, flat: dict[str, Any], iterations: int) -> None:
        """Replace the state from a ``state_arrays()``-shaped mapping."""
        state: dict[str, dict[str, Any]] = {}
        for key, a in flat.items():
            p, _, slot = key.rpartition("/")
            state.setdefault(p, {})[slot] = a
        self.state, self.iterations, self._slots = state, int(iterations), None


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, dampening and coupled
    L2 weight decay, exactly as ``torch.optim.SGD`` (defaults and argument order included).

    ``g += weight_decay p``; with momentum, ``buf = g`` on the first step and
    ``buf = momentum buf + (1 - dampening) g`` after; the step is ``g + momentum buf`` with
    Nesterov, else ``buf``. Plain SGD is momentum 0.
    """

    name = "sgd"

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False,
                 clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        self.momentum = checks.real("SGD", "momentum", momentum, 0.0, 1.0, high_open=True)
        self.dampening = checks.real("SGD", "dampening", dampening, 0.0, 1.0)
        self.nesterov = checks.boolean("SGD", "nesterov", nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening 0 (as "
                             f"torch.optim.SGD); got momentum={self.momentum!r}, "
                             f"dampening={self.dampening!r}")

    def config(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov,
                "clipnorm": self.clipnorm}

    def slot_names(self):
        return ("momentum",) if self.momentum else ()

    def update(self, p, g, state, xp, inplace, kernels=None):
        m = self.momentum
        if self.weight_decay:
            g = g + self.weight_decay * p
        if m:
            # torch starts the buffer at g itself, undamped: from zeros, the first step's
            # gradient scale is 1, then 1 - dampening. 0 ** (t - 1) is 1 only at t = 1, and
            # stays arithmetic when t is traced (JAX).
            scale = 1.0
            if self.dampening:
                scale = 1.0 - self.dampening * (1 - 0 ** (self.iterations - 1))
            buf = state["momentum"] = _average(state["momentum"], g, m, scale, inplace)
            g = g + m * buf if self.nesterov else buf
        return _descend(p, g, self.lr, inplace, kernels)


class Adam(Optimizer):
    """Adam with coupled L2 weight decay (``g += weight_decay p``) and optional AMSGrad,
    exactly as ``torch.optim.Adam``. ``AdamW`` is the decoupled variant."""

    name = "adam"
    decoupled: ClassVar[bool] = False  # weight decay: coupled L2 (Adam) or decoupled (AdamW)

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        owner = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair of numbers in [0, 1); "
                             f"got {betas!r}")
        self.betas = tuple(checks.real(owner, f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
                           for i, beta in enumerate(betas))
        self.eps = checks.real(owner, "eps", eps, 0.0, low_open=True)
        self.amsgrad = checks.boolean(owner, "amsgrad", amsgrad)

    def config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad,
                "clipnorm": self.clipnorm}

    def slot_names(self):
        return ("m", "v", "v_max") if self.amsgrad else ("m", "v")

    def update(self, p, g, state, xp, inplace, kernels=None):
        b1, b2 = self.betas
        t = self.iterations
        step = self.lr / (1.0 - b1**t)
        root_correction = (1.0 - b2**t) ** 0.5  # not math.sqrt: t may be traced (xpnet.jit)
        decay = 1.0
        if self.weight_decay and self.decoupled:
            decay = 1.0 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m, v = state["m"], state["v"]
        if inplace and not self.amsgrad and kernels is not None and kernels.adam_ is not None:
            return kernels.adam_(p, g, m, v, b1, b2, step, root_correction, self.eps, decay)
        m = state["m"] = _average(m, g, b1, 1.0 - b1, inplace)
        v = state["v"] = _square_average(v, g, b2, 1.0 - b2, inplace, kernels)
        if self.amsgrad:
            v = state["v_max"] = _maximum(state["v_max"], v, xp, inplace)
        if self.weight_decay and self.decoupled:  # decay itself may be traced: no comparison
            p = _scale(p, decay, inplace)
        return _divide_descend(p, m, _root(xp, v, self.eps, inplace, root_correction), step,
                               inplace, kernels)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr weight_decay`` before the step) and
    optional AMSGrad, exactly as ``torch.optim.AdamW``, whose default decay is 1e-2."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 clipnorm: float | None = None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, clipnorm)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum, with coupled L2 weight decay, exactly
    as ``torch.optim.RMSprop``: ``s = alpha s + (1 - alpha) g^2``; the step divides ``g`` by
    ``sqrt(s) + eps`` (centered: ``sqrt(s - a^2) + eps``, ``a`` the running mean of ``g``)."""

    name = "rmsprop"

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        self.alpha = checks.real("RMSprop", "alpha", alpha, 0.0, 1.0)
        self.eps = checks.real("RMSprop", "eps", eps, 0.0, low_open=True)
        self.momentum = checks.real("RMSprop", "momentum", momentum, 0.0, 1.0,
                                    high_open=True)
        self.centered = checks.boolean("RMSprop", "centered", centered)

    def config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered, "clipnorm": self.clipnorm}

    def slot_names(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum",) if self.momentum else ()))

    def update(self, p, g, state, xp, inplace, kernels=None):
        a = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = state["square_avg"] = _square_average(state["square_avg"], g, a, 1.0 - a, inplace,
                                                  kernels)
        if self.centered:  # the variance estimate s - mean^2, in one temporary when in place
            mean = state["grad_avg"] = _average(state["grad_avg"], g, a, 1.0 - a, inplace)
            s = _average(mean * mean, s, -1.0, 1.0, inplace)
        denominator = _root(xp, s, self.eps, inplace)
        if not self.momentum:
            return _divide_descend(p, g, denominator, self.lr, inplace, kernels)
        buf = state["momentum"] = _average(state["momentum"], g / denominator, self.momentum,
                                           1.0, inplace, own=True)
        return _descend(p, buf, self.lr, inplace, kernels)


class Adagrad(Optimizer):
    """Adagrad with learning-rate decay and coupled L2 weight decay, exactly as
    ``torch.optim.Adagrad``: ``s += g^2``; ``p -= lr / (1 + (t - 1) lr_decay) g /
    (sqrt(s) + eps)``, with ``s`` starting at ``initial_accumulator_value``."""

    name = "adagrad"

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        self.lr_decay = checks.real("Adagrad", "lr_decay", lr_decay, 0.0)
        self.initial_accumulator_value = checks.real(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0)
        self.eps = checks.real("Adagrad", "eps", eps, 0.0, low_open=True)

    def config(self):
        return {"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps,
                "clipnorm": self.clipnorm}

    def slot_names(self):
        return ("sum",)

    def slot_start(self, slot: str) -> float:
        return self.initial_accumulator_value

    def update(self, p, g, state, xp, inplace, kernels=None):
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = state["sum"] = _square_average(state["sum"], g, 1.0, 1.0, inplace, kernels)
        lr = self.lr / (1.0 + (self.iterations - 1) * self.lr_decay)
        return _divide_descend(p, g, _root(xp, s, self.eps, inplace), lr, inplace, kernels)


# ---------------------------------------------------------------------- shared array steps
# Each returns the new array: the same object, changed, when ``inplace``; a new one otherwise
# (JAX), which the caller stores back. In place, a temporary the update made itself is
# reused rather than joined by another full-size one (the same values, rounded alike).


def _average(x, y, keep: float, take, inplace: bool, own: bool = False):
    """``keep x + take y``: a running average (or sum) of ``y``; ``own``: ``y`` is a
    temporary of the update's, which may be scaled in place."""
    if not inplace:
        return keep * x + take * y
    if keep != 1.0:
        x *= keep
    if take != 1.0 and own:
        y *= take
    x += y if take == 1.0 or own else take * y
    return x


def _square_average(s, g, keep: float, take: float, inplace: bool, kernels=None):
    """``keep s + take g^2``; in place through the backend's fused update where given."""
    if inplace and kernels is not None:
        return kernels.square_average_(s, g, keep, take)
    return _average(s, g * g, keep, take, inplace, own=True)


def _divide_descend(p, g, d, lr, inplace: bool, kernels=None):
    """``p - lr g / d``; in place through the backend's fused update where given."""
    if inplace and kernels is not None:
        return kernels.divide_step_(p, g, d, lr)
    return _descend(p, g / d, lr, inplace)


def _root(xp, v, eps: float, inplace: bool, correction=1.0):
    """``sqrt(v) / correction + eps``: the denominator of the adaptive steps."""
    d = xp.sqrt(v)
    if not inplace:
        return d / correction + eps
    d /= correction
    d += eps
    return d


def _scale(x, factor: float, inplace: bool):
    if not inplace:
        return x * factor
    x *= factor
    return x


def _maximum(x, y, xp, inplace: bool):
    if not inplace:
        return xp.maximum(x, y)
    x[...] = xp.maximum(x, y)
    return x


def _descend(p, direction, lr, inplace: bool, kernels=None):
    """``p - lr direction``; in place through the backend's fused update where given."""
    if not inplace:
        return p - lr * direction
    if kernels is not None:  # fused p -= lr * d: no full-size temporary
        return kernels.sgd_(p, direction, lr)
    p -= lr * direction
    return p


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)}


def by_type(type_name: str) -> type[Optimizer]:
    """The registered class whose ``__name__`` is ``type_name`` (what a checkpoint records)."""
    for cls in OPTIMIZERS.values():
        if cls.__name__ == type_name:
            return cls
    raise ValueError(f"unknown optimizer type {type_name!r}; known: "
                     f"{', '.join(cls.__name__ for cls in OPTIMIZERS.values())}")


def resolve(optimizer, lr: float | None = None) -> Optimizer:
    """An Optimizer instance from an instance, or a registered name ("sgd", "adam", "adamw",
    "rmsprop", "adagrad") and a learning rate."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise ValueError(f"optimizer {optimizer.__name__} is a class, not an optimizer: pass "
                         f"an instance: {optimizer.__name__}(), or its name {optimizer.name!r}")
    cls = OPTIMIZERS.get(optimizer.lower()) if isinstance(optimizer, str) else None
    if cls is None:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)} or an Optimizer"
        )
    # every registered optimizer gives lr torch.optim's default; the base class has none
    return cls() if lr is None else cls(lr=lr)  # type: ignore[call-arg]
