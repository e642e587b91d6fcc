"""Run under mpiexec by tests/test_distributed.py: train in float64, save this rank's parameters.

    mpiexec -n 2 python tests/mpi_train.py OUT_DIR OPTIMIZER BATCH DROPOUT BACKEND [raise]

With a sixth argument, rank 1 raises before training (the job must end, not hang).
"""

import sys

import numpy as np

import xpnet as xn
from xpnet.backend.table import to_numpy


def problem():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 5))
    y = rng.integers(0, 3, size=23)
    return X, y


def model(dropout: bool, backend: str):
    layers = [xn.Dense(5, 8), xn.Tanh()]
    if dropout:
        layers.append(xn.Dropout(0.3))
    return xn.Sequential(*layers, xn.Dense(8, 3), seed=0, backend=backend, dtype="float64")


def optimizer(name: str):
    return xn.SGD(lr=0.1, momentum=0.9) if name == "sgd" else xn.Adam(lr=0.01)


def train(comm, opt: str, batch: int, dropout: bool, backend: str = "numpy"):
    """The model and History of a short float64 run (``comm`` None: one process)."""
    X, y = problem()
    net = model(dropout, backend)
    history = net.fit(X, y, loss="cross_entropy", optimizer=optimizer(opt), epochs=3,
                      batch_size=batch, seed=3, comm=comm)
    return net, history


def main():
    out, opt, batch, dropout, backend = sys.argv[1:6]
    comm = xn.distributed.init()
    if len(sys.argv) > 6 and comm.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    net, history = train(comm, opt, int(batch), dropout == "1", backend)
    np.savez(f"{out}/rank{comm.rank}.npz", loss=np.array(history.history["loss"]),
             **{k: to_numpy(v) for k, v in net.params.items()})


if __name__ == "__main__":
    main()
