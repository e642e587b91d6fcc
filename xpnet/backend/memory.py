"""Device out-of-memory errors, translated into one that says what to lower.

CuPy, torch and XLA each raise their own out-of-memory error. ``explaining_out_of_memory``
wraps a training or evaluation loop and re-raises any of them as ``OutOfMemoryError`` (a
MemoryError) naming the batch size, the data and model sizes, and what to lower first. The
library's types are looked up in ``sys.modules`` by name, so this module imports none of them.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .table import Backend

__all__ = ["OutOfMemoryError", "explaining_out_of_memory", "is_out_of_memory",
           "out_of_memory_error"]


class OutOfMemoryError(MemoryError):
    """The device ran out of memory; the message names the batch and model sizes and what to lower.

    The library's own error (CuPy's, torch's or XLA's) is kept as ``__cause__``.
    """


# Each library's out-of-memory exception, as (module, attribute path). Only libraries that
# are already imported are consulted: an exception can only come from one of those.
_OOM_TYPES = (
    ("cupy", "cuda.memory.OutOfMemoryError"),
    ("torch", "OutOfMemoryError"),
    ("torch", "cuda.OutOfMemoryError"),
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CuPy's and torch's out-of-memory errors and XLA's RESOURCE_EXHAUSTED."""
    for module, path in _OOM_TYPES:
        cls = sys.modules.get(module)
        for part in path.split("."):
            cls = getattr(cls, part, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return "RESOURCE_EXHAUSTED" in str(exc) and type(exc).__name__.endswith("RuntimeError")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""  # unreachable


def out_of_memory_error(exc: BaseException, backend: Backend, what: str, batch_size,
                        n_samples: int, n_params: int, widths) -> OutOfMemoryError:
    """An OutOfMemoryError for ``exc`` that names the sizes involved and what to lower.

    ``widths`` are the layer widths: activations for a batch take about
    ``batch * sum(widths)`` numbers, kept for the backward pass while training.
    """
    item = 8 if backend.dtype_name == "float64" else 4
    batch = n_samples if batch_size is None else min(batch_size, n_samples)
    params = n_params * item
    activations = batch * sum(widths) * item
    return OutOfMemoryError(
        f"{backend.name} ran out of memory on {backend.device} during {what} with "
        f"batch_size={batch_size} ({n_samples} samples held on the device) and a model of "
        f"{n_params:,} parameters ({_size(params)} in {backend.dtype_name}; training adds "
        f"gradients and optimizer state of up to 3x that, and about {_size(activations)} of "
        f"activations per batch). Lower batch_size first, then the layer widths; use "
        f"float32 rather than float64, or pass the data in smaller parts.{backend.oom_hint} "
        f"({type(exc).__name__}: {exc})"
    )


@contextlib.contextmanager
def explaining_out_of_memory(model, what: str, batch_size, n_samples: int):
    """Re-raise an out-of-memory error from the block as OutOfMemoryError about ``model``."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        n_params = sum(math.prod(shape) for shape in model.layout.shapes.values())
        widths = model.widths
        raise out_of_memory_error(exc, model.backend, what, batch_size, n_samples, n_params,
                                  widths) from exc
