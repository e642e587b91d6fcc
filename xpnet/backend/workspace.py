"""The arrays a training step makes, handed out again once nothing uses them.

A step's temporaries (each layer's output, the input gradients, the ReLU mask, the loss's
exponentials) have the same shapes every step, so on NumPy they can be written into
arrays of earlier steps instead of new ones. ``Workspace.take`` returns a kept array of
the shape and dtype asked for that nothing but the workspace refers to (CPython's
reference count: a closure, a local name or a NumPy view, which holds its base, all
count), else a new one that it keeps. So a temporary that backward has finished with is
reused later in the same step too, and the workspace holds no more than what a step
with fresh arrays would hold at its peak, while a steady step allocates nothing large.

That test is only sound where every view holds a reference to its base array, as NumPy's
do; torch's views do not hold their base's Python object, so only NumPy's kernels make a
workspace (``kernels.py``). Arrays are handed out only between ``start`` and ``stop`` (the
step that owns the workspace), so what ``predict`` and ``evaluate`` return is never one.
The arrays of the last ``KEEP`` batch keys are kept: a full batch and an epoch's ragged
last batch.

Reuse saves memory more than time: after warm-up the C allocator hands a freed block
back cheaply, while a lookup costs about a microsecond of Python per array. So a step
whose activations are small (``MIN_ELEMENTS``) does not start the workspace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Empty = Callable[[tuple, Any, Any], Any]  # (shape, dtype, like) -> a new array like ``like``


def _free_count() -> int:
    """The reference count ``take`` sees for a kept array nothing else refers to: measured
    through the same loop as ``take``'s, so it holds on any CPython version."""
    pool = [object()]
    for found in pool:
        return sys.getrefcount(found)
    raise AssertionError("unreachable")


_FREE = _free_count()
# A free-threaded CPython (3.13t) counts references per thread and merges them lazily, so a
# count could read as free while another thread still holds the array: no reuse there.
SOUND = getattr(sys, "_is_gil_enabled", lambda: True)()


class Workspace:
    """Arrays reused across steps; see the module docstring. ``empty(shape, dtype, like)``
    makes a new array on ``like``'s device."""

    KEEP = 2  # batch keys whose arrays are kept: the full batch and the ragged last one
    # A batch whose widest activation is smaller allocates fresh arrays: 128 KiB of float32
    # is glibc's default mmap threshold; below it a new array is a cheap heap block, and
    # the lookups cost more than they save (measured: 4-5 % slower on a 64x128 step).
    MIN_ELEMENTS = 32768

    def __init__(self, empty: Empty):
        self._empty = empty
        self._pools: dict[Any, list] = {}  # batch key -> kept arrays, newest key last
        self._pool: list = []  # the pool of the step in progress
        self.active = False  # between start and stop: what kernels check before take

    def start(self, key) -> None:
        """Begin a step whose batch is described by ``key`` (its shape and dtype)."""
        pool = self._pools.pop(key, None)
        self._pools[key] = self._pool = [] if pool is None else pool
        while len(self._pools) > self.KEEP:  # drop the least recently used batch key
            del self._pools[next(iter(self._pools))]
        self.active = True

    def stop(self) -> None:
        """End the step: until the next ``start``, kernels hand out fresh arrays."""
        self.active = False

    def take(self, shape: tuple, dtype, like):
        """An array of ``shape`` and ``dtype`` on ``like``'s device that nothing else uses,
        with unspecified contents."""
        pool = self._pool
        for found in pool:
            if found.shape == shape and found.dtype == dtype \
                    and sys.getrefcount(found) == _FREE:
                return found
        found = self._empty(shape, dtype, like)
        pool.append(found)
        return found

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept arrays (for tests and benchmarks)."""
        return sum(a.nbytes for pool in self._pools.values() for a in pool)


__all__ = ["Workspace"]
