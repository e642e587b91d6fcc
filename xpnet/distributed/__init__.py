"""Data-parallel training over many processes (``fit(..., comm=...)``).

    import xpnet as xn
    comm = xn.distributed.init()          # under ``mpiexec -n 4 python train.py``
    # or init(engine="torch") under torchrun, init(engine="nccl") for one GPU per process
    model.fit(X, y, batch_size=256, comm=comm)

Every process holds the same data, seed and model; each trains on its contiguous part of
every global batch and the gradients are summed across processes before each update, so
the run follows the single-process one with the same global ``batch_size``.
"""

from .comm import Communicator, local
from .engines import ENGINES, init
from .shards import GradientAllReduce, ShardedRNG, shard

__all__ = ["ENGINES", "Communicator", "GradientAllReduce", "ShardedRNG", "init", "local",
           "shard"]
