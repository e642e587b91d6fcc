"""Losses with PyTorch's default reductions. Each maps ``(xp, Y, T) -> (loss, dY)``.

``loss`` is a 0-d array (left on the device: reading it is a synchronisation) and
``dY`` the gradient of that loss with respect to the model output ``Y``. Targets ``T``
come already encoded (``data.encode_targets``): one-hot rows for cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .layers import sigmoid

LossFn = Callable[[Any, Any, Any], tuple[Any, Any]]


def mse(xp, Y, T):
    """Mean over all elements of (Y - T)^2."""
    D = Y - T
    n = math.prod(D.shape)
    return xp.sum(D * D) / n, D * (2.0 / n)


def cross_entropy(xp, Z, T):
    """Batch mean of -sum(T * log softmax(Z)); Z are logits, T one-hot (or probability) rows.

    log-sum-exp is shifted by the row maximum, so logits of any size stay finite.
    """
    n = Z.shape[0]
    S = Z - xp.max(Z, axis=1, keepdims=True)
    E = xp.exp(S)
    total = xp.sum(E, axis=1, keepdims=True)
    log_p = S - xp.log(total)
    loss = -xp.sum(T * log_p) / n
    return loss, (E / total - T) * (1.0 / n)


def binary_cross_entropy(xp, Z, T):
    """Mean over all elements of the logistic loss of logits Z against targets T in [0, 1].

    Written as max(Z, 0) - Z T + log(1 + exp(-|Z|)), which never overflows.
    """
    n = math.prod(Z.shape)
    per = xp.maximum(Z, 0.0) - Z * T + xp.log1p(xp.exp(-xp.abs(Z)))
    return xp.sum(per) / n, (sigmoid(xp, Z) - T) * (1.0 / n)


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
}
CLASSIFICATION = ("cross_entropy", "binary_cross_entropy")


def resolve(name: str) -> LossFn:
    """The loss function for ``name``; an unknown name lists the known ones."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}") from None
