"""The "mpi" engine: mpi4py's COMM_WORLD (``mpiexec``, ``srun``, ``python -m mpi4py``)."""

from __future__ import annotations

from .comm import Communicator, writable_numpy

__all__ = ["MPICommunicator", "connect", "mpi_module"]


class MPICommunicator(Communicator):
    """MPI's world: NumPy buffers summed in place, device arrays through host copies."""

    engine = "mpi"

    def __init__(self, world, mpi):
        self._world, self._mpi = world, mpi
        self.rank, self.size = world.Get_rank(), world.Get_size()

    def _sums_in_place(self, array) -> bool:
        return writable_numpy(array)

    def _sum_(self, array) -> None:
        self._sum_host_(array)

    def _sum_host_(self, host) -> None:
        self._world.Allreduce(self._mpi.IN_PLACE, host, op=self._mpi.SUM)

    def node_rank(self) -> int:
        """This process's rank among the processes of its node (which GPU to take)."""
        return self._world.Split_type(self._mpi.COMM_TYPE_SHARED).Get_rank()

    def bcast(self, obj, root: int = 0):
        return obj if self.size == 1 else self._world.bcast(obj, root=root)

    def barrier(self) -> None:
        if self.size > 1:
            self._world.Barrier()

    def abort(self, code: int = 1) -> None:
        self._world.Abort(code)


def mpi_module():
    """mpi4py's MPI, or an ImportError that names the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("distributed.init needs mpi4py and an MPI library: "
                          "pip install 'xpnet[mpi]'") from exc
    return MPI


def connect() -> MPICommunicator:
    """The communicator of every process of this MPI job."""
    MPI = mpi_module()
    return MPICommunicator(MPI.COMM_WORLD, MPI)
