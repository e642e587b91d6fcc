"""Metrics: accuracy, mse, mae and r2, computed with ``xp`` where the arrays live.

The public functions take ``(y_true, y_pred)`` as arrays of any backend (or lists) and
return Python floats: one read of one device scalar each. When the two arrays come from
different libraries both are copied to the host first, since no namespace holds both.

``device_metrics`` is what ``fit`` and ``evaluate`` use on already-encoded device arrays.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from ..nn.losses import CLASSIFICATION

__all__ = ["REGRESSION_METRICS", "accuracy", "device_metrics", "mae", "mse", "r2", "unread_metrics"]

REGRESSION_METRICS = ("mse", "mae", "r2")


def _pair(y_true, y_pred):
    """``(xp, y_true, y_pred)`` in one namespace (the host NumPy one when they differ)."""
    try:
        xp = array_api_compat.array_namespace(y_true, y_pred)
    except TypeError:
        from ..backend import to_numpy

        y_true, y_pred = (np.asarray(to_numpy(a) if not isinstance(a, (list, tuple)) else a)
                          for a in (y_true, y_pred))
        xp = array_api_compat.array_namespace(y_true, y_pred)
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"metrics: y_true has {y_true.shape[0]} rows but y_pred has "
                         f"{y_pred.shape[0]}")
    return xp, y_true, y_pred


def _floating(xp, a):
    return a if xp.isdtype(a.dtype, "real floating") else xp.astype(a, xp.float64)


def _class_ids(xp, a, logit_column: bool):
    """Class indices from labels (1-D), scores/one-hot rows (argmax) or one column: a
    binary logit (positive means class 1) when ``logit_column``, else a column of labels."""
    if a.ndim == 2 and a.shape[1] > 1:
        return xp.argmax(a, axis=1)
    if a.ndim == 2:
        a = a[:, 0]
        if logit_column and xp.isdtype(a.dtype, "real floating"):
            return xp.astype(a >= 0, xp.int64)
    return xp.astype(a, xp.int64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of rows whose predicted class equals the true class.

    ``y_pred``: class labels (n,), scores or logits (n, k) (argmax taken), or one binary
    logit column (n, 1) (positive means class 1). ``y_true``: labels (n,) or (n, 1), or
    one-hot rows (n, k).
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    hits = _class_ids(xp, y_true, False) == _class_ids(xp, y_pred, True)
    return _fraction(xp, hits)


def _fraction(xp, hits) -> float:
    # count_nonzero is exact for any n; a float32 mean of 0/1 values would round.
    return float(xp.count_nonzero(hits)) / math.prod(hits.shape)


def _regression_pair(y_true, y_pred):
    xp, y_true, y_pred = _pair(y_true, y_pred)
    y_true, y_pred = _floating(xp, y_true), _floating(xp, y_pred)
    if y_true.ndim == 1:
        y_true = xp.reshape(y_true, (-1, 1))
    if y_pred.ndim == 1:
        y_pred = xp.reshape(y_pred, (-1, 1))
    if y_true.shape != y_pred.shape:
        raise ValueError(f"metrics: y_true shape {tuple(y_true.shape)} does not match y_pred "
                         f"shape {tuple(y_pred.shape)}")
    if y_true.dtype != y_pred.dtype:
        dtype = xp.result_type(y_true.dtype, y_pred.dtype)
        y_true, y_pred = xp.astype(y_true, dtype), xp.astype(y_pred, dtype)
    return xp, y_true, y_pred


def mse(y_true, y_pred) -> float:
    """Mean squared error over all elements."""
    xp, T, Y = _regression_pair(y_true, y_pred)
    return float(_mse(xp, Y, T))


def mae(y_true, y_pred) -> float:
    """Mean absolute error over all elements."""
    xp, T, Y = _regression_pair(y_true, y_pred)
    return float(_mae(xp, Y, T))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination, averaged over output columns (scikit-learn's r2_score).

    A constant target column scores 1.0 when predicted exactly and 0.0 otherwise, as
    scikit-learn does, instead of dividing by zero.
    """
    xp, T, Y = _regression_pair(y_true, y_pred)
    return float(_r2(xp, Y, T))


def _mse(xp, Y, T):
    D = Y - T
    return xp.mean(D * D)


def _mae(xp, Y, T):
    return xp.mean(xp.abs(Y - T))


def _r2(xp, Y, T):
    D = Y - T
    residual = xp.sum(D * D, axis=0)
    C = T - xp.mean(T, axis=0, keepdims=True)
    total = xp.sum(C * C, axis=0)
    zero, one = xp.zeros_like(total), xp.ones_like(total)
    constant = total == zero
    safe_total = xp.where(constant, one, total)
    per_column = xp.where(constant, xp.where(residual == zero, one, zero),
                          one - residual / safe_total)
    return xp.mean(per_column)


def device_metrics(xp, Y, T, loss: str) -> dict:
    """Metrics of model outputs ``Y`` against encoded targets ``T`` (both on the device).

    Classification losses give ``accuracy``; regression gives ``mse``, ``mae`` and ``r2``.
    Values are Python floats (one device read each; ``unread_metrics`` for none).
    """
    return {name: float(value) / divisor
            for name, (value, divisor) in unread_metrics(xp, Y, T, loss).items()}


def unread_metrics(xp, Y, T, loss: str, weights=None) -> dict:
    """``device_metrics`` left on the device: name -> (0-d array, divisor), the metric
    being the array's value over the divisor, so that a caller can read them all (and the
    loss) in one host copy. Accuracy is the count of hits over the rows: exact in the
    model's float dtype up to 2**24 rows in float32. ``weights`` (one per row, summing to
    1) weight each row, as scikit-learn's metrics take ``sample_weight``."""
    if weights is not None:
        return _weighted_metrics(xp, Y, T, loss, weights)
    if loss == "cross_entropy":
        return {"accuracy": _hits(xp, xp.argmax(Y, axis=1) == xp.argmax(T, axis=1))}
    if loss in CLASSIFICATION:  # binary: logits against {0, 1} targets
        return {"accuracy": _hits(xp, (Y >= 0) == (T >= 0.5))}
    return {"mse": (_mse(xp, Y, T), 1), "mae": (_mae(xp, Y, T), 1), "r2": (_r2(xp, Y, T), 1)}


def _weighted_metrics(xp, Y, T, loss: str, w) -> dict:
    """``unread_metrics`` with each row weighted by ``w`` (summing to 1)."""
    if loss in CLASSIFICATION:
        if loss == "cross_entropy":
            per_row = xp.astype(xp.argmax(Y, axis=1) == xp.argmax(T, axis=1), w.dtype)
        else:  # each row's share of its outputs that are right, as unweighted counts them
            per_row = xp.mean(xp.astype((Y >= 0) == (T >= 0.5), w.dtype), axis=1)
        return {"accuracy": (xp.sum(w * per_row), 1)}
    D = Y - T
    wc = w[:, None]
    residual = xp.sum(wc * D * D, axis=0)
    C = T - xp.sum(wc * T, axis=0, keepdims=True)
    total = xp.sum(wc * C * C, axis=0)
    zero, one = xp.zeros_like(total), xp.ones_like(total)
    constant = total == zero
    per_column = xp.where(constant, xp.where(residual == zero, one, zero),
                          one - residual / xp.where(constant, one, total))
    return {"mse": (xp.mean(residual), 1), "mae": (xp.mean(xp.sum(wc * xp.abs(D), axis=0)), 1),
            "r2": (xp.mean(per_column), 1)}


def _hits(xp, hits) -> tuple:
    # count_nonzero is exact for any n; a float32 mean of 0/1 values would round.
    return xp.count_nonzero(hits), math.prod(hits.shape)
