"""``init``: the communicator of an existing distributed engine, chosen from a table."""

from __future__ import annotations

from . import mpi, nccl, torchdist
from .comm import Communicator, abort_on_uncaught

__all__ = ["ENGINES", "init"]

# engine name -> what connects this process to the job's other processes
ENGINES = {
    "mpi": mpi.connect,          # mpi4py: mpiexec, srun, python -m mpi4py
    "nccl": nccl.connect,        # CuPy's NCCL, its id shared over MPI: one GPU per process
    "torch": torchdist.connect,  # torch.distributed (gloo; NCCL for CUDA): torchrun
}


def init(engine: str = "mpi") -> Communicator:
    """The communicator of every process of this job, over ``engine`` ("mpi", the
    default, "nccl" or "torch"; see ``ENGINES``).

    Also installs an excepthook that aborts the whole job when one process dies of an
    uncaught exception (Ctrl-C included), so the others do not hang in their next
    collective. A missing engine library is an ImportError that says what to install.
    """
    connect = ENGINES.get(engine) if isinstance(engine, str) else None
    if connect is None:
        raise ValueError(f"distributed.init: engine must be one of {tuple(ENGINES)}; "
                         f"got {engine!r}")
    comm = connect()
    if comm.size > 1:
        abort_on_uncaught(comm)
    return comm
