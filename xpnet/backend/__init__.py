"""Ground floor: the backend table and what is chosen by its columns.

``table`` holds one row per array library (the only place where libraries differ by name),
``kernels`` the optional fast paths a row selects, ``memory`` the out-of-memory message and
``info`` the report of what is usable here. Nothing here imports from the floors above.
"""

from .memory import OutOfMemoryError, explaining_out_of_memory, is_out_of_memory
from .table import (
    NAMES,
    REFERENCE,
    Backend,
    BackendError,
    MissingBackendError,
    UnknownBackendError,
    available,
    canonical_name,
    current,
    fast_paths,
    get,
    resolve,
    to_numpy,
    use,
)

__all__ = ["NAMES", "REFERENCE", "Backend", "BackendError", "MissingBackendError",
           "OutOfMemoryError", "UnknownBackendError", "available", "canonical_name", "current",
           "explaining_out_of_memory", "fast_paths", "get", "is_out_of_memory", "resolve",
           "to_numpy", "use"]
