"""Normalisation layers: LayerNorm (over each sample's features) and BatchNorm (over the
batch, with running statistics), as ``torch.nn.LayerNorm`` and ``torch.nn.BatchNorm1d``.

Both normalise ``Xhat = (X - mean) / sqrt(var + eps)`` with the biased variance and give
``Y = gamma * Xhat + beta``. Their backward is the one of that normalisation: with
``dXhat = dY * gamma``, ``dX = (dXhat - mean(dXhat) - Xhat * mean(dXhat * Xhat)) / sqrt(var +
eps)``, the means over the axis the statistics were taken on.
"""

from __future__ import annotations

import math
import numbers

from . import init as initializers
from .layers import LAYERS, Layer, ModelError, width_of


def _eps(owner: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) \
            or eps <= 0:
        raise ValueError(f"{owner}: eps must be a finite number > 0; got {eps!r}")
    return float(eps)


class _Normalisation(Layer):
    """What both share: ``n`` features, ``gamma`` (ones) and ``beta`` (zeros), ``eps``."""

    def __init__(self, n: int, eps: float = 1e-5):
        owner = type(self).__name__
        self.n = width_of(owner, "n", n)
        self.eps = _eps(owner, eps)

    def config(self) -> dict:
        return {"n": self.n, "eps": self.eps}

    def in_width(self):
        return self.n

    def out_width(self, width):
        return self.n

    def param_shapes(self):
        return {"gamma": (self.n,), "beta": (self.n,)}

    def init_params(self, rng, default_init):
        return {"gamma": initializers.zeros(self.n) + 1.0, "beta": initializers.zeros(self.n)}


def _affine_backprop(xp, gamma, Xhat, inv, axis):
    """The backprop of ``gamma * Xhat + beta`` where ``Xhat`` was normalised with
    statistics over ``axis`` (``inv`` = 1 / sqrt(var + eps)); None: fixed statistics."""

    def backprop(dY, need_dX=True):
        grads = {"gamma": xp.sum(dY * Xhat, axis=0), "beta": xp.sum(dY, axis=0)}
        if not need_dX:
            return None, grads
        dXhat = dY * gamma
        if axis is None:  # statistics are constants (BatchNorm in eval mode)
            return dXhat * inv, grads
        dX = inv * (dXhat - xp.mean(dXhat, axis=axis, keepdims=True)
                    - Xhat * xp.mean(dXhat * Xhat, axis=axis, keepdims=True))
        return dX, grads

    return backprop


class LayerNorm(_Normalisation):
    """Normalises each sample over its ``n`` features, as ``torch.nn.LayerNorm(n, eps)``:
    ``Y = gamma * (X - mean) / sqrt(var + eps) + beta``, biased variance; the same in
    training and in inference."""

    def forward(self, params, X, ctx):
        xp = ctx.xp
        mean = xp.mean(X, axis=-1, keepdims=True)
        centred = X - mean
        inv = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=-1, keepdims=True) + self.eps)
        Xhat = centred * inv
        gamma = params["gamma"]
        return gamma * Xhat + params["beta"], _affine_backprop(xp, gamma, Xhat, inv, -1)


class BatchNorm(_Normalisation):
    """Normalises each of ``n`` features over the batch, as ``torch.nn.BatchNorm1d(n, eps,
    momentum)``.

    In training it uses the batch's mean and biased variance and updates the running
    statistics (state, not parameters: saved, moved by ``to()``, never updated by the
    optimizer) as ``running = (1 - momentum) * running + momentum * batch``, with the
    unbiased variance; ``predict`` and ``evaluate`` use the running statistics.
    """

    def __init__(self, n: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(n, eps)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm: momentum must be a number in [0, 1]; got "
                             f"{momentum!r}")
        self.momentum: float = float(momentum)

    def config(self) -> dict:
        return {"n": self.n, "momentum": self.momentum, "eps": self.eps}

    def state_shapes(self):
        return {"running_mean": (self.n,), "running_var": (self.n,)}

    def init_state(self):
        return {"running_mean": initializers.zeros(self.n),
                "running_var": initializers.zeros(self.n) + 1.0}

    def forward(self, params, X, ctx):
        xp, gamma = ctx.xp, params["gamma"]
        if not ctx.training:
            inv = 1.0 / xp.sqrt(ctx.state["running_var"] + self.eps)
            Xhat = (X - ctx.state["running_mean"]) * inv
            return gamma * Xhat + params["beta"], _affine_backprop(xp, gamma, Xhat, inv, None)
        n = X.shape[0]
        if n < 2:  # torch refuses too: one sample has no variance to normalise by
            raise ModelError(f"BatchNorm({self.n}): a training batch of {n} sample has no "
                             "batch variance; use batches of 2 or more (a last batch of 1 "
                             "comes from a sample count that is 1 more than a multiple of "
                             "batch_size)")
        mean = xp.mean(X, axis=0)
        centred = X - mean
        var = xp.mean(centred * centred, axis=0)
        inv = 1.0 / xp.sqrt(var + self.eps)
        Xhat = centred * inv
        if ctx.state_out is not None:
            m, state = self.momentum, ctx.state
            ctx.state_out["running_mean"] = (1.0 - m) * state["running_mean"] + m * mean
            ctx.state_out["running_var"] = ((1.0 - m) * state["running_var"]
                                            + (m * n / (n - 1)) * var)
        return gamma * Xhat + params["beta"], _affine_backprop(xp, gamma, Xhat, inv, 0)


LAYERS[LayerNorm.__name__] = LayerNorm
LAYERS[BatchNorm.__name__] = BatchNorm

__all__ = ["BatchNorm", "LayerNorm"]
