"""The "nccl" engine: CuPy's NCCL bindings for device arrays, MPI for everything else.

Rank 0 makes NCCL's unique id and broadcasts it over MPI; each process then joins the
NCCL communicator on the GPU its node-local rank picks. A CuPy array on that GPU is
summed in place on CuPy's current stream, so the sum is ordered with the kernels around
it and nothing waits for it on the host. Host values (the loss, broadcasts, barriers)
and arrays NCCL cannot take go through MPI, which need not be CUDA-aware.
"""

from __future__ import annotations

import numpy as np

from .comm import Communicator
from .mpi import MPICommunicator
from .mpi import connect as connect_mpi

__all__ = ["NCCLCommunicator", "connect"]

_INSTALL = "pip install 'xpnet[nccl]' (CuPy for CUDA 12, NCCL, mpi4py and MPICH)"


class NCCLCommunicator(Communicator):
    """NCCL for CuPy arrays on this process's GPU, MPI (``host``) for the rest."""

    engine = "nccl"

    def __init__(self, host: MPICommunicator, cupy, nccl, device: int):
        self._host, self._cupy, self._nccl = host, cupy, nccl
        self.rank, self.size, self.device = host.rank, host.size, device
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16,
                       np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64}
        with cupy.cuda.Device(device):
            uid = host.bcast(nccl.get_unique_id() if host.rank == 0 else None)
            self._nccl_comm = nccl.NcclCommunicator(host.size, uid, host.rank)

    def _sums_in_place(self, array) -> bool:
        return (isinstance(array, self._cupy.ndarray) and array.flags.c_contiguous
                and array.device.id == self.device and array.dtype in self._types)

    def _sum_(self, array) -> None:
        with self._cupy.cuda.Device(self.device):
            stream = self._cupy.cuda.get_current_stream()
            self._nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size,
                                      self._types[array.dtype], self._nccl.NCCL_SUM,
                                      stream.ptr)

    def _sum_host_(self, host) -> None:
        self._host._sum_host_(host)

    def bcast(self, obj, root: int = 0):
        return self._host.bcast(obj, root)

    def barrier(self) -> None:
        self._host.barrier()

    def abort(self, code: int = 1) -> None:
        try:  # free the GPU side first; MPI's abort ends every process regardless
            self._nccl_comm.abort()
        finally:
            self._host.abort(code)


def connect() -> NCCLCommunicator:
    """The NCCL communicator of every process of this MPI job, one GPU per process."""
    cupy, nccl = _cupy_with_nccl()
    count = _gpu_count(cupy)
    host = connect_mpi()
    device = host.node_rank() % count
    cupy.cuda.Device(device).use()
    return NCCLCommunicator(host, cupy, nccl, device)


def _cupy_with_nccl():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"distributed.init(engine='nccl') needs CuPy: {_INSTALL}") from exc
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError(f"distributed.init(engine='nccl'): CuPy has no NCCL bindings "
                          f"({exc}): {_INSTALL}") from exc
    if not getattr(nccl, "available", False):
        raise ImportError("distributed.init(engine='nccl'): CuPy finds no NCCL library: "
                          "pip install nvidia-nccl-cu12 (in the nccl extra)")
    return cupy, nccl


def _gpu_count(cupy) -> int:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise RuntimeError(f"distributed.init(engine='nccl') needs a CUDA GPU; CUDA says: "
                           f"{exc}") from None
    if count < 1:
        raise RuntimeError("distributed.init(engine='nccl') needs a CUDA GPU; none is "
                           "visible (check CUDA_VISIBLE_DEVICES); engine='mpi' trains on "
                           "the host")
    return count
