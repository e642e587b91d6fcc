"""The "torch" engine: torch.distributed, for processes launched by ``torchrun``.

gloo sums host tensors (and NumPy arrays, through ``torch.from_numpy``, which shares
their memory); where CUDA and NCCL are present, CUDA tensors go through NCCL on torch's
current stream (one process group with a backend per device: ``"cpu:gloo,cuda:nccl"``).
"""

from __future__ import annotations

import os
import sys

from .comm import Communicator, writable_numpy

__all__ = ["LAUNCH_VARIABLES", "TorchCommunicator", "connect"]

# what torchrun (python -m torch.distributed.run) sets for every process it starts
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class TorchCommunicator(Communicator):
    """The default process group of torch.distributed."""

    engine = "torch"

    def __init__(self, torch, dist, device=None):
        self._torch, self._dist = torch, dist
        self.rank, self.size, self.device = dist.get_rank(), dist.get_world_size(), device

    def _sums_in_place(self, array) -> bool:
        if isinstance(array, self._torch.Tensor):
            return array.is_contiguous()
        return writable_numpy(array)

    def _sum_(self, array) -> None:
        tensor = array if isinstance(array, self._torch.Tensor) else self._torch.from_numpy(array)
        self._dist.all_reduce(tensor)

    def _sum_host_(self, host) -> None:
        self._dist.all_reduce(self._torch.from_numpy(host))

    def bcast(self, obj, root: int = 0):
        if self.size == 1:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src=root, device=self._torch.device("cpu"))
        return box[0]

    def barrier(self) -> None:
        # a one-element host sum: no rank leaves it before every rank has joined, and it
        # goes through gloo whatever device the group would guess for dist.barrier()
        if self.size > 1:
            self._dist.all_reduce(self._torch.zeros(1))

    def abort(self, code: int = 1) -> None:
        # gloo has no abort: this process ends, and torchrun stops the others when one
        # of its workers fails (other launchers: they wait for the group's timeout)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def connect() -> TorchCommunicator:
    """The default process group, made from torchrun's environment unless it exists."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        raise ImportError("distributed.init(engine='torch') needs PyTorch: "
                          "pip install 'xpnet[torch]'") from exc
    if not dist.is_available():
        raise ImportError("distributed.init(engine='torch'): this PyTorch build has no "
                          "torch.distributed")
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing and not dist.is_initialized():  # refused before a GPU is bound
        raise RuntimeError(
            f"distributed.init(engine='torch'): {', '.join(missing)} not set; launch "
            "with torchrun (python -m torch.distributed.run --nproc_per_node=N "
            "script.py), or use engine='mpi' under mpiexec")
    device = _bind_gpu(torch)
    if not dist.is_initialized():
        nccl = device is not None and dist.is_nccl_available()
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if nccl else "gloo")
    return TorchCommunicator(torch, dist, device)


def _bind_gpu(torch) -> int | None:
    """This process's GPU (its LOCAL_RANK among the GPUs here), made torch's current one."""
    if not torch.cuda.is_available():
        return None
    device = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(device)
    return device
