"""The arrays one training step makes, kept for the next step of the same batch shape.

A step's temporaries (each layer's output, the input gradients, the loss's exponentials,
an optimizer's denominator) have the same shapes every step, so on a library that writes
in place they can be written into the arrays of the step before instead of new ones.
``Workspace`` hands them out: the n-th array a step asks for is the n-th array the last
step with the same batch key asked for, when its shape and dtype agree (else a new one
takes its place). A model's passes ask in the same order every step, so the arrays line
up; a model that asks differently is still right, it only reuses less. Within one step
every request gets an array of its own, so nothing a step still needs is overwritten.

Only the step that owns a workspace writes into it, and only between ``start`` and
``stop``; outside a step ``take`` returns None (a fresh array), so what ``predict`` and
``evaluate`` hand out is never a buffer the next step overwrites. The sets of the last
``KEEP`` batch keys are kept: a full batch and an epoch's ragged last batch.

Reuse saves memory (a step's peak) more than time: after warm-up the C allocator hands a
freed block back cheaply, while a lookup costs about a microsecond per array in Python.
So a step whose activations are small (``MIN_ELEMENTS``) does not start the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Empty = Callable[[tuple, Any, Any], Any]  # (shape, dtype, like) -> a new array like ``like``


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
        self._sets: dict[Any, list] = {}  # batch key -> arrays in request order, newest last
        self._current: list | None = None  # the set of the step in progress
        self._next = 0  # index of the next request in it
        self.active = False  # between start and stop: what kernels check before take

    def start(self, key) -> None:
        """Begin a step whose batch is described by ``key`` (its shape and dtype)."""
        arrays = self._sets.pop(key, None)
        self._sets[key] = arrays = [] if arrays is None else arrays
        while len(self._sets) > self.KEEP:  # drop the least recently used batch key
            del self._sets[next(iter(self._sets))]
        self._current, self._next, self.active = arrays, 0, True

    def stop(self) -> None:
        """End the step: until the next ``start``, ``take`` hands out nothing."""
        self._current, self.active = None, False

    def take(self, shape: tuple, dtype, like):
        """An array of ``shape`` and ``dtype`` on ``like``'s device that this step may
        overwrite, with unspecified contents; None outside a step."""
        arrays = self._current
        if arrays is None:
            return None
        n = self._next
        self._next = n + 1
        if n < len(arrays):
            found = arrays[n]
            if found.shape == shape and found.dtype == dtype:  # torch.Size is a tuple
                return found
            arrays[n] = found = self._empty(shape, dtype, like)
            return found
        found = self._empty(shape, dtype, like)
        arrays.append(found)
        return found

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept arrays (for tests and benchmarks)."""
        return sum(a.nbytes if hasattr(a, "nbytes") else a.element_size() * a.numel()
                   for arrays in self._sets.values() for a in arrays)


__all__ = ["Workspace"]
