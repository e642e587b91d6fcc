"""The communicator: what training needs of a group of processes, whatever the engine.

``Communicator`` itself is one process alone (``local()``); each engine (``mpi.py``,
``torchdist.py``, ``nccl.py``) subclasses it with its own sums, broadcast, barrier and
abort. The engine's library is imported only when its communicator is made, so
``import xpnet`` never loads MPI, torch.distributed or NCCL.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["Communicator", "abort_on_uncaught", "local", "writable_numpy"]


class Communicator:
    """What training needs of a group of processes: rank, size, sums, broadcast, abort.

    ``allreduce_`` sums an array across processes in place: where the engine can sum it
    where it lies (a NumPy array for MPI, a tensor for torch.distributed, a CuPy array
    for NCCL), directly; anything else through a host copy that is written back. A
    communicator of size 1 sends nothing. ``device`` is the GPU the engine bound this
    process to (None for the host engines): put the model there.
    """

    engine = "local"
    rank, size = 0, 1
    device: int | None = None

    def allreduce_(self, array, backend=None):
        """Sum ``array`` over all processes, in place where it can be written.

        An array the engine sums natively is summed where it lies; any other through a
        host copy (``backend.to_numpy``; ``backend`` may be omitted for NumPy arrays)
        that is written back. Returns the sum: ``array`` itself, or, for an array that
        cannot be written (JAX, a read-only NumPy array), a new one.
        """
        if self.size == 1:
            return array
        if self._sums_in_place(array):
            self._sum_(array)
            return array
        on_host = array if isinstance(array, np.ndarray) else backend.to_numpy(array)
        host = np.require(on_host, requirements=["C", "W"])  # JAX's copies are read-only
        self._sum_host_(host)
        if isinstance(array, np.ndarray):
            if not array.flags.writeable:
                return host
            array[...] = host
            return array
        if backend.inplace:
            array[...] = backend.asarray(host, dtype=array.dtype)
            return array
        return backend.asarray(host, dtype=array.dtype)

    def allreduce_scalar(self, value: float) -> float:
        """The sum of ``value`` over all processes."""
        if self.size == 1:
            return float(value)
        buffer = np.array([float(value)])
        self._sum_host_(buffer)
        return float(buffer[0])

    def bcast(self, obj, root: int = 0):
        """``obj`` from ``root``, on every process (any picklable object)."""
        return obj

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def abort(self, code: int = 1) -> None:
        """End every process of the job (an error on one rank must not leave the rest
        waiting in a collective forever)."""
        raise SystemExit(code)

    # what an engine provides
    def _sums_in_place(self, array) -> bool:
        """Whether ``_sum_`` can sum ``array`` where it lies."""
        return False

    def _sum_(self, array) -> None:
        raise NotImplementedError

    def _sum_host_(self, host: np.ndarray) -> None:
        """Sum a C-contiguous, writable NumPy array in place."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} engine={self.engine!r} rank={self.rank} size={self.size}>"


def writable_numpy(array) -> bool:
    """A NumPy array an engine may sum where it lies (contiguous and writable)."""
    return (isinstance(array, np.ndarray) and array.flags.c_contiguous
            and array.flags.writeable)


def local() -> Communicator:
    """A communicator of this process alone: training with it equals training without."""
    return Communicator()


def abort_on_uncaught(comm: Communicator) -> None:
    """Abort the whole job when this process dies of an uncaught exception (Ctrl-C
    included), after printing it, so the other processes do not hang in their next
    collective."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook
