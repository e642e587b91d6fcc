"""Host side of the data: validation, target encoding, the host RNG, batching.

Inputs may be lists, NumPy arrays or arrays of any backend. Arrays that already live on
the model's backend and device stay there (validated with the model's ``xp``); anything
else is checked on the host with NumPy and copied to the device once. Every check runs
before training touches any state, and every message names what was wrong.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend, to_numpy


class DataError(ValueError):
    """Input data that does not fit the model or the loss."""


def host_rng(seed) -> np.random.Generator:
    """The one source of randomness: a NumPy Generator (same stream on every backend)."""
    return np.random.default_rng(seed)


def batch_bounds(n: int, batch_size: int | None):
    """(start, stop) pairs covering range(n); the last batch may be short."""
    size = n if not batch_size else min(batch_size, n)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _describe(data) -> str:
    """'a torch array on device meta' (for messages about arrays that cannot be moved)."""
    library = type(data).__module__.split(".")[0]
    device = getattr(data, "device", None)
    return f"a {library} {type(data).__name__}" + (f" on device {device}" if device else "")


def _to_host(name: str, data, backend: Backend | None = None) -> np.ndarray:
    try:
        arr = to_numpy(data) if not isinstance(data, (list, tuple)) else np.asarray(data)
    except Exception as exc:
        target = f" to the model's backend {backend.name} ({backend.device})" if backend else ""
        raise DataError(
            f"{name} is {_describe(data)} and could not be moved{target} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if np.iscomplexobj(arr):
        raise DataError(f"{name} must be real, not complex; got dtype {arr.dtype}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def _check_features(X_shape, n_in: int, first_layer: str, name: str) -> None:
    if len(X_shape) != 2:
        hint = " (one feature per column: use X.reshape(-1, 1))" if len(X_shape) == 1 else ""
        raise DataError(f"{name} must be 2-D (samples, features); got shape {tuple(X_shape)}{hint}")
    if X_shape[0] == 0:
        raise DataError(f"{name} is empty: shape {tuple(X_shape)}")
    if n_in is not None and X_shape[1] != n_in:
        raise DataError(
            f"{name} has {X_shape[1]} features but layer {first_layer} expects {n_in} "
            f"(shape {tuple(X_shape)})"
        )


def inputs(backend: Backend, X, n_in: int | None, first_layer: str, name: str = "X"):
    """X as a validated 2-D float array on ``backend``."""
    X = _same_library_to_device(backend, X)
    if backend.owns(X):
        _check_features(tuple(X.shape), n_in, first_layer, name)
        X = backend.plain(X)
        xp = backend.xp
        if X.dtype != backend.dtype:
            if not xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
                raise DataError(f"{name} must be numeric and real; got dtype {X.dtype}")
            X = xp.astype(X, backend.dtype)
        if not bool(xp.all(xp.isfinite(X))):
            raise DataError(f"{name} contains NaN or Inf values")
        return X
    host = _to_host(name, X, backend)
    _check_features(host.shape, n_in, first_layer, name)
    host = host.astype(backend.dtype_name, copy=False)
    if not np.all(np.isfinite(host)):
        bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
        raise DataError(f"{name} contains {bad} NaN or Inf value(s)")
    return backend.asarray(host)


def _same_library_to_device(backend: Backend, X):
    """An array of the model's library on another device, moved with the library's own copy.

    A host round trip is not always possible (array-api-strict's fake devices refuse it),
    and a direct device-to-device copy is cheaper anyway. Anything else is left as it is.
    """
    import array_api_compat as compat

    if isinstance(X, (np.ndarray, list, tuple)) or backend.owns(X):
        return X
    try:
        xp = compat.array_namespace(X)
    except TypeError:
        return X
    if xp is not backend.xp:
        return X
    try:
        return compat.to_device(X, backend.device)
    except Exception:  # left to the host path, whose error names both sides
        return X


def parameter(backend: Backend, value, name: str):
    """A parameter value (host or any backend) checked numeric and finite, copied to ``backend``."""
    value = _same_library_to_device(backend, value)
    if backend.owns(value):
        xp, value = backend.xp, backend.plain(value)
        if not xp.isdtype(value.dtype, ("real floating", "integral")):
            raise DataError(f"{name} must be numeric and real; got dtype {value.dtype}")
        value = xp.astype(value, backend.dtype, copy=True)
        if not bool(xp.all(xp.isfinite(value))):
            raise DataError(f"{name} contains NaN or Inf values")
        return value
    host = _to_host(name, value, backend)
    if host.dtype == bool:
        raise DataError(f"{name} must be numeric and real; got dtype bool")
    if not np.all(np.isfinite(host)):
        raise DataError(f"{name} contains NaN or Inf values")
    return backend.asarray(host.astype(backend.dtype_name, copy=False))


def targets(backend: Backend, y, loss: str, n_out: int, n_samples: int, name: str = "y"):
    """y validated for ``loss`` and encoded as float rows of width ``n_out`` on ``backend``.

    cross_entropy takes integer labels in [0, n_out) or one-hot rows; the others take
    values shaped (n,) (when the model has one output) or (n, n_out).
    """
    host = _to_host(name, _same_library_to_device(backend, y), backend)
    if host.shape[:1] != (n_samples,):
        got = host.shape[0] if host.ndim else "a scalar"
        raise DataError(f"X has {n_samples} samples but {name} has {got}: they must match")
    if not np.all(np.isfinite(host)):
        raise DataError(f"{name} contains NaN or Inf values")
    if loss == "cross_entropy":
        host = _class_targets(host, n_out, name)
    else:
        if host.ndim == 1 and n_out == 1:
            host = host.reshape(-1, 1)
        if host.ndim != 2 or host.shape[1] != n_out:
            raise DataError(
                f"{name} shape {host.shape} does not fit loss {loss!r} for a model with "
                f"{n_out} output(s): expected ({n_samples}, {n_out})"
                + (" or (n,)" if n_out == 1 else "")
            )
        if loss == "binary_cross_entropy" and (host.min() < 0 or host.max() > 1):
            raise DataError(f"{name} for binary_cross_entropy must lie in [0, 1]; "
                            f"got values from {host.min()} to {host.max()}")
    return backend.asarray(host.astype(backend.dtype_name, copy=False))


def _class_targets(host: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    if host.ndim == 2 and host.shape[1] == 1:
        host = host[:, 0]
    if host.ndim == 2:
        if host.shape[1] != n_classes:
            raise DataError(f"{name} is one-hot with {host.shape[1]} columns but the model "
                            f"has {n_classes} outputs")
        if host.min() < 0:
            raise DataError(f"one-hot {name} has negative entries")
        return host
    if host.ndim != 1:
        raise DataError(f"{name} for cross_entropy must be labels (n,) or one-hot "
                        f"(n, {n_classes}); got shape {host.shape}")
    if not np.all(np.equal(np.mod(host, 1), 0)):
        raise DataError(f"{name} for cross_entropy must hold integer class labels; "
                        "found non-integer values")
    labels = host.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        raise DataError(f"{name} holds class labels from {low} to {high}, but the model has "
                        f"{n_classes} outputs: labels must lie in [0, {n_classes - 1}]")
    onehot = np.zeros((labels.shape[0], n_classes))
    onehot[np.arange(labels.shape[0]), labels] = 1.0
    return onehot


def labels_of(backend: Backend, T, loss: str):
    """Class indices from encoded targets (for accuracy), on the device."""
    xp = backend.xp
    if loss == "cross_entropy":
        return xp.argmax(T, axis=1)
    return T >= 0.5
