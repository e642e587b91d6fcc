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


class Optimizer:
    """Shared parts: learning rate, state per parameter name, global-norm clipping, binding."""

    name: ClassVar[str] = ""  # the registry key ("sgd", "adam")

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
                                  else Buffer.zeros(layout, backend))
                           for slot, values in per_slot.items()}
            self.state = {p: {slot: b.arrays[p] for slot, b in self._slots.items()}
                          for p in layout.shapes} if self._slots else {}
        return self._slots

    def init_state(self, p, xp) -> dict:
        """The per-parameter state slots, created on the first step like ``p``."""
        return {slot: xp.zeros_like(p) for slot in self.slot_names()}

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
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Same update as ``torch.optim.SGD`` (dampening 0): ``buf = m buf + g``; the step is
    ``g + m buf`` with Nesterov, else ``buf``. Plain SGD is momentum 0.
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        self.momentum = checks.real("SGD", "momentum", momentum, 0.0, 1.0, high_open=True)
        self.nesterov = checks.boolean("SGD", "nesterov", nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")

    def config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm}

    def slot_names(self):
        return ("momentum",) if self.momentum else ()

    def update(self, p, g, state, xp, inplace, kernels=None):
        lr, m = self.lr, self.momentum
        if self.weight_decay:
            g = g + self.weight_decay * p
        if m:
            buf = state["momentum"]
            if inplace:
                buf *= m
                buf += g
            else:
                buf = state["momentum"] = m * buf + g
            g = g + m * buf if self.nesterov else buf
        if inplace:
            if kernels is not None:  # fused p -= lr * g: no full-size temporary
                return kernels.sgd_(p, g, lr)
            p -= lr * g
            return p
        return p - lr * g


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW when ``weight_decay`` > 0), as torch.optim.AdamW."""

    name = "adam"

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair of numbers in [0, 1); got {betas!r}")
        self.betas = tuple(checks.real("Adam", f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
                           for i, beta in enumerate(betas))
        self.eps = checks.real("Adam", "eps", eps, 0.0, low_open=True)

    def config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm}

    def slot_names(self):
        return ("m", "v")

    def update(self, p, g, state, xp, inplace, kernels=None):
        b1, b2 = self.betas
        t = self.iterations
        step = self.lr / (1.0 - b1**t)
        root_correction = (1.0 - b2**t) ** 0.5  # not math.sqrt: t may be traced (xpnet.jit)
        decay = 1.0 - self.lr * self.weight_decay
        m, v = state["m"], state["v"]
        if inplace and kernels is not None and kernels.adam_ is not None:
            return kernels.adam_(p, g, m, v, b1, b2, step, root_correction, self.eps, decay)
        if inplace:
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if self.weight_decay:
                p *= decay
            p -= step * (m / (xp.sqrt(v) / root_correction + self.eps))
            return p
        m = state["m"] = b1 * m + (1.0 - b1) * g
        v = state["v"] = b2 * v + (1.0 - b2) * (g * g)
        if self.weight_decay:
            p = p * decay
        return p - step * (m / (xp.sqrt(v) / root_correction + self.eps))


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam)}


def by_type(type_name: str) -> type[Optimizer]:
    """The registered class whose ``__name__`` is ``type_name`` (what a checkpoint records)."""
    for cls in OPTIMIZERS.values():
        if cls.__name__ == type_name:
            return cls
    raise ValueError(f"unknown optimizer type {type_name!r}; known: "
                     f"{', '.join(cls.__name__ for cls in OPTIMIZERS.values())}")


def resolve(optimizer, lr: float | None = None) -> Optimizer:
    """An Optimizer instance from an instance, or a name ("sgd", "adam") and a learning rate."""
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
    return cls() if lr is None else cls(lr=lr)
