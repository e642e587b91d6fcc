"""Optimizers. ``step(params, grads, xp, inplace)`` returns the updated params dict.

On mutable backends (NumPy, CuPy, torch, array-api-strict) parameters and state are
updated in place, so no array is allocated for them per step. JAX arrays are immutable
and ``x -= y`` there only rebinds a local name, so the same maths runs functionally and
the caller keeps the returned dict. State is created on the first step, with the
parameters' dtype and device (a float32 model keeps float32 state).
"""

from __future__ import annotations

import math
from typing import Any


def _check_number(owner: str, name: str, value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number; got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"{owner}: {name} must be {bound} {low}; got {value!r}")
    if high is not None and value >= high:
        raise ValueError(f"{owner}: {name} must be < {high}; got {value!r}")
    return float(value)


class Optimizer:
    """Shared parts: learning rate, state per parameter name, global-norm clipping."""

    def __init__(self, lr: float, weight_decay: float = 0.0, clipnorm: float | None = None):
        name = type(self).__name__
        self.lr = _check_number(name, "lr", lr, 0.0, low_open=True)
        self.weight_decay = _check_number(name, "weight_decay", weight_decay, 0.0)
        if clipnorm is not None:
            clipnorm = _check_number(name, "clipnorm", clipnorm, 0.0, low_open=True)
        self.clipnorm = clipnorm
        self.state: dict[str, dict[str, Any]] = {}
        self.iterations = 0

    def config(self) -> dict:
        """Constructor arguments, for saving and for ``repr``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def clip(self, grads: dict, xp) -> dict:
        """Scale all gradients together so their global L2 norm is at most ``clipnorm``."""
        if self.clipnorm is None:
            return grads
        squares = [xp.sum(g * g) for g in grads.values()]
        norm = xp.sqrt(sum(squares[1:], squares[0]))
        # min(1, c / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_, without a host round
        # trip: no device sync per step.
        scale = xp.minimum(self.clipnorm / (norm + 1e-6), 1.0)
        return {k: g * scale for k, g in grads.items()}

    def step(self, params: dict, grads: dict, xp, inplace: bool, kernels=None) -> dict:
        """Apply one update; returns the params dict to keep (the same one when in place).

        ``kernels`` (``fast.kernels(backend)``, optional) supplies the backend's fused
        in-place update; without it the portable array API update runs.
        """
        grads = self.clip(grads, xp)
        self.iterations += 1
        out = params if inplace else dict(params)
        # held only during the step: kernels reference modules, which copy.deepcopy refuses
        self._kernels = kernels
        try:
            for name, g in grads.items():
                state = self.state.get(name)
                if state is None:
                    state = self.state[name] = self.init_state(params[name], xp)
                out[name] = self.update(params[name], g, state, xp, inplace)
        finally:
            self._kernels = None
        return out

    def init_state(self, p, xp) -> dict:
        """The per-parameter state slots, created on the first step like ``p``."""
        return {}

    def update(self, p, g, state: dict, xp, inplace: bool):
        """One parameter's update from gradient ``g``; returns the new ``p``."""
        raise NotImplementedError

    def state_arrays(self) -> dict[str, Any]:
        """Flat ``{"<param>/<slot>": array}`` view of the state (for ``to`` and ``save``)."""
        return {f"{p}/{slot}": a for p, slots in self.state.items() for slot, a in slots.items()}

    def load_state_arrays(self, flat: dict[str, Any], iterations: int) -> None:
        """Replace the state from a ``state_arrays()``-shaped mapping."""
        state: dict[str, dict[str, Any]] = {}
        for key, a in flat.items():
            p, _, slot = key.rpartition("/")
            state.setdefault(p, {})[slot] = a
        self.state, self.iterations = state, int(iterations)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Same update as ``torch.optim.SGD`` (dampening 0): ``buf = m buf + g``; the step is
    ``g + m buf`` with Nesterov, else ``buf``. Plain SGD is momentum 0.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        self.momentum = _check_number("SGD", "momentum", momentum, 0.0, 1.0)
        if nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    def config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm}

    def init_state(self, p, xp):
        return {"momentum": xp.zeros_like(p)} if self.momentum else {}

    def update(self, p, g, state, xp, inplace):
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
            kernels = getattr(self, "_kernels", None)
            if kernels is not None:  # fused p -= lr * g: no full-size temporary
                return kernels.sgd_(p, g, lr)
            p -= lr * g
            return p
        return p - lr * g


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW when ``weight_decay`` > 0), as torch.optim.AdamW."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, clipnorm: float | None = None):
        super().__init__(lr, weight_decay, clipnorm)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair of numbers in [0, 1); got {betas!r}")
        self.betas = (_check_number("Adam", "betas[0]", betas[0], 0.0, 1.0),
                      _check_number("Adam", "betas[1]", betas[1], 0.0, 1.0))
        self.eps = _check_number("Adam", "eps", eps, 0.0, low_open=True)

    def config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm}

    def init_state(self, p, xp):
        return {"m": xp.zeros_like(p), "v": xp.zeros_like(p)}

    def update(self, p, g, state, xp, inplace):
        b1, b2 = self.betas
        t = self.iterations
        step = self.lr / (1.0 - b1**t)
        root_correction = (1.0 - b2**t) ** 0.5  # not math.sqrt: t may be traced (xpnet.jit)
        decay = 1.0 - self.lr * self.weight_decay
        m, v = state["m"], state["v"]
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


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def resolve(optimizer, lr: float | None = None) -> Optimizer:
    """An Optimizer instance from an instance, or a name ("sgd", "adam") and a learning rate."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    cls = OPTIMIZERS.get(str(optimizer).lower()) if isinstance(optimizer, str) else None
    if cls is None:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)} or an Optimizer"
        )
    return cls() if lr is None else cls(lr=lr)
