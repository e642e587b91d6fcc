"""Run under mpiexec by tests/test_distributed.py on CUDA machines: the nccl engine.

    mpiexec -n N python tests/nccl_train.py OUT_DIR [CASE ...]   # CASE: adam:5:1

Sums CuPy arrays through NCCL (and host values through MPI), then trains each case on
CuPy in float64 on the GPU the engine picked, saving every rank's parameters. Alone (N
1) the engine still runs NCCL's all-reduce, so its call is checked on one GPU too.
"""

import json
import sys

import cupy
import numpy as np
from mpi_train import train

import xpnet as xn
from xpnet.backend.table import to_numpy


def collectives(comm, out):
    device = cupy.arange(4.0) + comm.rank
    ints = cupy.arange(3, dtype=cupy.int64)
    same = comm.allreduce_(device) is device
    comm.allreduce_(ints)
    if comm.size == 1:  # allreduce_ sends nothing alone: call NCCL itself
        comm._sum_(device)
    cupy.cuda.get_current_stream().synchronize()
    host = np.arange(2.0)
    comm.allreduce_(host)  # through MPI
    record = {"device": cupy.asnumpy(device).tolist(), "in_place": same,
              "ints": cupy.asnumpy(ints).tolist(), "host": host.tolist(),
              "scalar": comm.allreduce_scalar(1.5), "size": comm.size,
              "gpu": comm.device, "engine": comm.engine}
    with open(f"{out}/collectives{comm.rank}.json", "w") as file:
        json.dump(record, file)
    comm.barrier()


def main():
    out, cases = sys.argv[1], sys.argv[2:]
    comm = xn.distributed.init(engine="nccl")
    collectives(comm, out)
    backend = xn.backend.get("cupy", comm.device, "float64")  # the GPU NCCL was bound to
    for i, case in enumerate(cases):
        opt, batch, dropout = case.split(":")
        net, history = train(comm, opt, int(batch), dropout == "1", backend)
        np.savez(f"{out}/case{i}-rank{comm.rank}.npz", loss=np.array(history.history["loss"]),
                 **{k: to_numpy(v) for k, v in net.params.items()})


if __name__ == "__main__":
    main()
