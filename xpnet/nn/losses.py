"""Losses with PyTorch's default reductions, one registry entry each.

A loss maps ``(xp, Y, T, weights=None) -> (loss, dY)``: ``loss`` a 0-d array (left on the
device: reading it is a synchronisation) and ``dY`` its gradient with respect to the model
output ``Y``. Targets ``T`` come already encoded (``data.targets``): one-hot rows for
cross-entropy. ``weights`` (optional, shape ``(n,)``, non-negative, summing to 1) turn the
batch mean into ``sum_i w_i l_i``, where ``l_i`` is sample i's loss (for the element-wise
losses, its mean over the outputs): the hook for per-sample weighting.

``Loss`` entries carry what the step needs beyond the maths: whether the loss is a
classification loss (accuracy is its metric, and it takes logits), its parameters (Huber's
``delta``), and its name, under which a backend's kernels may offer a fused variant
(``backend.kernels.losses``) that a parity test proves equal to the maths here.

``loss=`` takes a registered name, a ``Loss`` (``Huber(delta=2.0)``) or a user's callable
``(xp, Y, T) -> (loss, dY)``; ``resolve`` wraps the callable in a ``Loss`` that checks
what it returns (a 0-d loss, a ``dY`` shaped as ``Y``) on every call, naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import checks
from .layers import sigmoid

__all__ = [
    "CLASSIFICATION", "Huber", "LOSSES", "Loss", "LossFn", "binary_cross_entropy", "cross_entropy",
    "huber", "l1", "mse", "resolve",
]

LossFn = Callable[..., tuple[Any, Any]]


def mse(xp, Y, T, weights=None):
    """Mean over all elements of (Y - T)^2."""
    D = Y - T
    if weights is None:
        n = math.prod(D.shape)
        return xp.sum(D * D) / n, D * (2.0 / n)
    w = weights[:, None] * (1.0 / D.shape[1])
    return xp.sum(D * D * w), D * w * 2.0


def cross_entropy(xp, Z, T, weights=None):
    """Batch mean of -sum(T * log softmax(Z)); Z are logits, T one-hot (or probability) rows.

    log-sum-exp is shifted by the row maximum, so logits of any size stay finite.
    """
    S = Z - xp.max(Z, axis=1, keepdims=True)
    E = xp.exp(S)
    total = xp.sum(E, axis=1, keepdims=True)
    log_p = S - xp.log(total)
    scale = 1.0 / Z.shape[0] if weights is None else weights[:, None]
    return -xp.sum(T * log_p * scale), (E / total - T) * scale


def binary_cross_entropy(xp, Z, T, weights=None):
    """Mean over all elements of the logistic loss of logits Z against targets T in [0, 1].

    Written as max(Z, 0) - Z T + log(1 + exp(-|Z|)), which never overflows.
    """
    per = xp.maximum(Z, 0.0) - Z * T + xp.log1p(xp.exp(-xp.abs(Z)))
    if weights is None:
        n = math.prod(Z.shape)
        return xp.sum(per) / n, (sigmoid(xp, Z) - T) * (1.0 / n)
    w = weights[:, None] * (1.0 / Z.shape[1])
    return xp.sum(per * w), (sigmoid(xp, Z) - T) * w


def huber(xp, Y, T, weights=None, delta: float = 1.0):
    """Mean over all elements of Huber's loss, as ``torch.nn.HuberLoss``: ``d^2 / 2`` where
    ``|d| <= delta``, else ``delta (|d| - delta / 2)``, for ``d = Y - T``."""
    D = Y - T
    A = xp.abs(D)
    per = xp.where(A <= delta, 0.5 * (D * D), delta * (A - 0.5 * delta))
    dper = xp.clip(D, min=-delta, max=delta)  # d inside, delta sign(d) outside
    return _elementwise_mean(xp, per, dper, weights)


def l1(xp, Y, T, weights=None):
    """Mean over all elements of |Y - T|, as ``torch.nn.L1Loss`` (gradient 0 where equal)."""
    D = Y - T
    return _elementwise_mean(xp, xp.abs(D), xp.sign(D), weights)


def _elementwise_mean(xp, per, dper, weights):
    """The mean of the per-element losses ``per`` (or their per-sample weighted mean, each
    sample's loss the mean over its outputs) and its gradient from ``dper = d per / d Y``."""
    if weights is None:
        n = math.prod(per.shape)
        return xp.sum(per) / n, dper * (1.0 / n)
    w = weights[:, None] * (1.0 / per.shape[1])
    return xp.sum(per * w), dper * w


@dataclass(frozen=True)
class Loss:
    """A loss: its ``name``, its array-API maths ``fn``, whether it is a ``classification``
    loss (logits in, accuracy as its metric) and the keyword ``params`` ``fn`` takes."""

    name: str
    fn: LossFn
    classification: bool = False
    params: tuple[tuple[str, Any], ...] = ()

    def __call__(self, xp, Y, T, weights=None):
        """``(loss, dY)`` by the portable maths."""
        return self.fn(xp, Y, T, weights, **dict(self.params))

    def config(self) -> dict:
        """The loss's parameters by name (``{"delta": 2.0}``; empty for most)."""
        return dict(self.params)

    @property
    def builtin(self) -> bool:
        """Whether this is xpnet's own maths (a registered loss, perhaps with other
        parameters), not a user's: only then may a fused kernel or a trace stand in for it."""
        entry = LOSSES.get(self.name)
        return entry is not None and entry.fn is self.fn and type(entry) is type(self)

    def value_and_grad(self, kernels, xp, Y, T, weights=None):
        """``(loss, dY)``, by the backend's fused variant when it has one for this loss."""
        fused = None
        if weights is None and self.builtin and not self.params:
            fused = kernels.losses.get(self.name)
        return fused(Y, T) if fused is not None else self(xp, Y, T, weights)


class Huber(Loss):
    """Huber's loss with threshold ``delta`` (> 0), as ``torch.nn.HuberLoss(delta=...)``:
    quadratic within ``delta`` of the target, linear beyond. ``loss="huber"`` is delta 1."""

    def __init__(self, delta: float = 1.0):
        delta = checks.real("Huber", "delta", delta, 0.0, low_open=True)
        super().__init__("huber", huber, params=(("delta", delta),))

    def __repr__(self) -> str:
        return f"Huber(delta={self.config()['delta']!r})"


class _Custom(Loss):
    """A user's ``(xp, Y, T) -> (loss, dY)`` callable, checked on every call."""

    def __init__(self, fn):
        name = getattr(fn, "__name__", None) or type(fn).__name__
        super().__init__(f"custom loss {name!r}", fn)

    def __call__(self, xp, Y, T, weights=None):
        if weights is not None:
            raise ValueError(f"{self.name} takes no per-sample weights: write the weighting "
                             "into the loss, or train without sample weights")
        out = self.fn(xp, Y, T)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ValueError(f"{self.name} must return a pair (loss, dY); got "
                             f"{type(out).__name__}")
        value, dY = out
        if tuple(getattr(value, "shape", (None,))) != ():
            raise ValueError(f"{self.name} must return a 0-d array as its loss; got "
                             f"{_shape_of(value)}")
        if tuple(getattr(dY, "shape", (None,))) != tuple(Y.shape):
            raise ValueError(f"{self.name} must return dY shaped as the model output Y "
                             f"{tuple(Y.shape)}; got {_shape_of(dY)}")
        if dY.dtype != Y.dtype:
            raise ValueError(f"{self.name} must return dY of Y's dtype {Y.dtype}; got "
                             f"{dY.dtype} (nothing is upcast silently)")
        return value, dY

    def __repr__(self) -> str:
        return self.name


def _shape_of(value) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(value).__name__


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse),
    "cross_entropy": Loss("cross_entropy", cross_entropy, classification=True),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy,
                                 classification=True),
    "huber": Huber(),
    "l1": Loss("l1", l1),
}
CLASSIFICATION = tuple(name for name, loss in LOSSES.items() if loss.classification)


def resolve(loss: str | Loss | LossFn) -> Loss:
    """The registered Loss for a name, the Loss itself, or a user's callable ``(xp, Y, T)
    -> (loss, dY)`` wrapped to be checked; an unknown name lists the known."""
    if isinstance(loss, Loss):
        return loss
    for entry in LOSSES.values():  # a registered loss's own function means that entry
        if entry.fn is loss:
            return entry
    if isinstance(loss, type) and issubclass(loss, Loss):
        raise ValueError(f"loss {loss.__name__} is a class, not a loss: pass an instance: "
                         f"{loss.__name__}()")
    if callable(loss):
        return _Custom(loss)
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(LOSSES)}, a Loss "
                         "or a callable (xp, Y, T) -> (loss, dY)") from None
