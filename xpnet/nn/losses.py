"""Losses with PyTorch's default reductions, one registry entry each.

A loss maps ``(xp, Y, T, weights=None) -> (loss, dY)``: ``loss`` a 0-d array (left on the
device: reading it is a synchronisation) and ``dY`` its gradient with respect to the model
output ``Y``. Targets ``T`` come already encoded (``data.targets``): one-hot rows for
cross-entropy. ``weights`` (optional, shape ``(n,)``, non-negative, summing to 1) turn the
batch mean into ``sum_i w_i l_i``, where ``l_i`` is sample i's loss (for the element-wise
losses, its mean over the outputs): the hook for per-sample weighting.

``Loss`` entries carry what the step needs beyond the maths: whether the loss is a
classification loss (accuracy is its metric, and it takes logits), and its name, under
which a backend's kernels may offer a fused variant (``backend.kernels.losses``) that a
parity test proves equal to the maths here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .layers import sigmoid

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


@dataclass(frozen=True)
class Loss:
    """A registered loss: its ``name``, its array-API maths ``fn`` and whether it is a
    ``classification`` loss (logits in, accuracy as its metric)."""

    name: str
    fn: LossFn
    classification: bool = False

    def __call__(self, xp, Y, T, weights=None):
        """``(loss, dY)`` by the portable maths."""
        return self.fn(xp, Y, T, weights)

    def value_and_grad(self, kernels, xp, Y, T, weights=None):
        """``(loss, dY)``, by the backend's fused variant when it has one for this loss."""
        fused = kernels.losses.get(self.name) if weights is None else None
        return fused(Y, T) if fused is not None else self.fn(xp, Y, T, weights)


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse),
    "cross_entropy": Loss("cross_entropy", cross_entropy, classification=True),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy,
                                 classification=True),
}
CLASSIFICATION = tuple(name for name, loss in LOSSES.items() if loss.classification)


def resolve(loss: str | Loss) -> Loss:
    """The registered Loss for a name (or the Loss itself); an unknown name lists the known."""
    if isinstance(loss, Loss):
        return loss
    for entry in LOSSES.values():  # a registered loss's own function means that entry
        if entry.fn is loss:
            return entry
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; known losses: {', '.join(LOSSES)}") from None
