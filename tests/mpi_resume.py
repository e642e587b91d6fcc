"""Run under mpiexec by tests/test_distributed.py: stop after 2 epochs, resume elsewhere.

    mpiexec -n 2 python tests/mpi_resume.py OUT_DIR first    # epochs 0-1, rank 0 checkpoints
    mpiexec -n 3 python tests/mpi_resume.py OUT_DIR resume   # epochs 2-3 from ckpt-1.npz

mpi_train.py's float64 problem with Dropout and Adam, so the continuation needs the
optimizer's moments and step count (from the checkpoint) and epoch 2's shuffle and masks
(from the seed: every epoch has its own stream).
"""

import sys

import numpy as np
from mpi_train import model, optimizer, problem

import xpnet as xn
from xpnet.backend.table import to_numpy

SETTINGS = {"loss": "cross_entropy", "batch_size": 5, "seed": 3}


def first(comm, out: str, epochs: int = 2):
    """Train epochs 0 to ``epochs - 1`` from scratch, checkpointing every epoch."""
    X, y = problem()
    net = model(True, "numpy")
    net.fit(X, y, optimizer=optimizer("adam"), epochs=epochs, comm=comm,
            callbacks=[xn.ModelCheckpoint(f"{out}/ckpt-{{epoch}}.npz")], **SETTINGS)
    return net


def resume(comm, out: str):
    """Epochs 2 and 3, from the checkpoint rank 0 wrote after epoch 1."""
    X, y = problem()
    net = xn.load(f"{out}/ckpt-1.npz", backend="numpy")
    history = net.fit(X, y, optimizer=net.optimizer, epochs=4, initial_epoch=2, comm=comm,
                      **SETTINGS)
    return net, history


def main():
    out, phase = sys.argv[1:3]
    comm = xn.distributed.init()
    if phase == "first":
        first(comm, out)
        return
    net, history = resume(comm, out)
    np.savez(f"{out}/resumed-rank{comm.rank}.npz", epochs=np.array(history.epoch),
             **{k: to_numpy(v) for k, v in net.params.items()})


if __name__ == "__main__":
    main()
