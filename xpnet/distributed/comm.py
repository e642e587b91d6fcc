"""The communicator: a thin wrapper of MPI's world (or of one process, ``local()``).

mpi4py is imported only by ``init``, so ``import xpnet`` never loads MPI.
"""

from __future__ import annotations

import sys

import numpy as np

_ENGINES = ("mpi",)


class Communicator:
    """What training needs of a group of processes: rank, size, sums, broadcast, abort.

    ``allreduce_`` sums an array across processes in place: a NumPy array directly,
    anything else (a device array) through a host copy that is written back. A
    communicator of size 1 sends nothing.
    """

    def __init__(self, world=None, mpi=None):
        self._world, self._mpi = world, mpi
        self.rank = 0 if world is None else world.Get_rank()
        self.size = 1 if world is None else world.Get_size()

    def allreduce_(self, array, backend=None):
        """Sum ``array`` over all processes, in place where it can be written.

        A contiguous NumPy array is summed where it lies; any other array through a host
        copy (``backend.to_numpy``; ``backend`` may be omitted for NumPy arrays) that is
        written back. Returns the sum: ``array`` itself, or, for an array that cannot be
        written (JAX), a new one on ``backend``.
        """
        if self.size == 1:
            return array
        if isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable:
            self._world.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)
            return array
        on_host = array if isinstance(array, np.ndarray) else backend.to_numpy(array)
        host = np.require(on_host, requirements=["C", "W"])  # JAX's copies are read-only
        self._world.Allreduce(self._mpi.IN_PLACE, host, op=self._mpi.SUM)
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
        self._world.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        return float(buffer[0])

    def bcast(self, obj, root: int = 0):
        """``obj`` from ``root``, on every process (any picklable object)."""
        return obj if self.size == 1 else self._world.bcast(obj, root=root)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            self._world.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every process of the job (an error on one rank must not leave the rest
        waiting in a collective forever)."""
        if self._world is None:
            raise SystemExit(code)
        self._world.Abort(code)


def local() -> Communicator:
    """A communicator of this process alone: training with it equals training without."""
    return Communicator()


def init(engine: str = "mpi") -> Communicator:
    """The communicator of every process of this job (MPI's COMM_WORLD).

    Also installs an excepthook that aborts the whole job when one process dies of an
    uncaught exception, so the others do not hang in their next collective.
    """
    if engine not in _ENGINES:
        raise ValueError(f"distributed.init: engine must be one of {_ENGINES}; got {engine!r}")
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("distributed.init needs mpi4py and an MPI library: "
                          "pip install 'xpnet[mpi]'") from exc
    comm = Communicator(MPI.COMM_WORLD, MPI)
    if comm.size > 1:
        _abort_on_uncaught(comm)
    return comm


def _abort_on_uncaught(comm: Communicator) -> None:
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook
