"""Where the estimators' arrays live: the host, or under scikit-learn's array API dispatch,
the input's own library and device.

Without dispatch (scikit-learn's default) inputs are validated into NumPy, training runs on
the estimator's ``backend`` and results come back as NumPy arrays. Under
``sklearn.config_context(array_api_dispatch=True)`` a non-NumPy ``X`` (torch on CPU or CUDA,
CuPy, array-api-strict, ...) decides where training runs, ``y`` and ``sample_weight`` follow
it, and predictions are arrays of ``X``'s namespace on its device.
"""

from __future__ import annotations

import array_api_compat as compat
import numpy as np
from sklearn import get_config

from ..backend import table as _backend

__all__ = [
    "dispatching", "float_dtype_name", "float_dtypes", "follows_input", "host", "numpy_probe",
    "to_device",
]


def dispatching() -> bool:
    """Whether scikit-learn's array API dispatch is switched on here."""
    return bool(get_config()["array_api_dispatch"])


def follows_input(X) -> bool:
    """Whether ``X`` decides where training runs: dispatch on and ``X`` not a host array
    (NumPy arrays, lists and frames train on the estimator's ``backend`` as before)."""
    return dispatching() and compat.is_array_api_obj(X) and not compat.is_numpy_array(X)


def host(a):
    """``a`` (any backend's array, or anything NumPy takes) as a host NumPy array."""
    return None if a is None else _backend.to_numpy(a) if compat.is_array_api_obj(a) else a


def to_device(backend: _backend.Backend, a):
    """``a`` on ``backend`` in its dtype, without a host round trip where it already lives
    there."""
    if backend.owns(a):
        return backend.xp.asarray(a, dtype=backend.dtype, device=backend.device)
    return backend.asarray(host(a))


def float_dtypes(X) -> tuple:
    """The float dtypes ``X`` may be validated into, in its own namespace under dispatch
    (scikit-learn's validation compares dtypes of that namespace), else NumPy's."""
    if follows_input(X):
        xp = compat.array_namespace(X)
        return (xp.float64, xp.float32)
    return (np.float64, np.float32)


def float_dtype_name(X) -> str:
    """``"float32"`` for a float32 ``X`` of any library, else ``"float64"`` (scikit-learn's
    MLP computes in its input's float dtype)."""
    return "float32" if str(X.dtype).rpartition(".")[2] == "float32" else "float64"


def numpy_probe() -> np.ndarray:
    """A host array: the namespace of a fit that ran on the host, for the namespace check."""
    return np.empty(0)
