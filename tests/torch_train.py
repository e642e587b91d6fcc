"""Run under torchrun by tests/test_distributed.py: many training cases in one launch.

    python -m torch.distributed.run --standalone --nproc_per_node=N tests/torch_train.py \
        OUT_DIR CASE [CASE ...]        # CASE: OPTIMIZER:BATCH:DROPOUT, e.g. adam:5:1
    ... tests/torch_train.py OUT_DIR raise    # rank 1 raises: the job must end, not hang

Starting torch.distributed costs seconds, so one launch trains every case for its
number of ranks (mpi_train.py's problem and model, float64) and tries every collective.
"""

import json
import sys

import numpy as np
import torch
from mpi_train import train

import xpnet as xn
from xpnet.backend.table import to_numpy


def collectives(comm, out):
    flat = np.arange(6.0) + comm.rank
    strided = np.arange(6.0).reshape(2, 3).T  # not contiguous: through a host copy
    frozen = np.ones(2)
    frozen.flags.writeable = False
    tensor = torch.arange(4.0, dtype=torch.float64) + comm.rank  # summed where it lies
    comm.allreduce_(flat)
    comm.allreduce_(strided)
    same = comm.allreduce_(tensor) is tensor
    record = {"flat": flat.tolist(), "strided": strided.tolist(),
              "frozen": comm.allreduce_(frozen).tolist(), "frozen_kept": frozen.tolist(),
              "tensor": tensor.tolist(), "tensor_in_place": same,
              "scalar": comm.allreduce_scalar(comm.rank + 0.5),
              "bcast": comm.bcast({"from": comm.rank}), "size": comm.size,
              "engine": comm.engine}
    with open(f"{out}/collectives{comm.rank}.json", "w") as file:
        json.dump(record, file)
    comm.barrier()


def main():
    out, cases = sys.argv[1], sys.argv[2:]
    comm = xn.distributed.init(engine="torch")
    if cases == ["raise"]:
        if comm.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        comm.barrier()  # rank 0 waits here for a rank that never comes
        return
    collectives(comm, out)
    for i, case in enumerate(cases):
        opt, batch, dropout = case.split(":")
        net, history = train(comm, opt, int(batch), dropout == "1")
        np.savez(f"{out}/case{i}-rank{comm.rank}.npz", loss=np.array(history.history["loss"]),
                 **{k: to_numpy(v) for k, v in net.params.items()})


if __name__ == "__main__":
    main()
