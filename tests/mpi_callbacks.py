"""Run under mpiexec by tests/test_distributed.py: callbacks, validation and divergence.

    mpiexec -n 3 python tests/mpi_callbacks.py OUT_DIR LR

Trains with a validation split, ModelCheckpoint, CSVLogger and verbose=2 (only rank 0
may write or print), and writes each rank's history to OUT_DIR/historyN.json. A huge LR
diverges: TerminateOnNaN(raise_error=False) must stop every rank at the same place.
"""

import json
import sys

import numpy as np

import xpnet as xn


def train(comm, out: str, lr: float, tag: str):
    """The History of a short float64 run whose callbacks write files named by ``tag``."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4))
    y = X @ rng.normal(size=(4, 2))
    net = xn.Sequential(xn.Dense(4, 6), xn.ReLU(), xn.Dense(6, 2), seed=0, backend="numpy",
                        dtype="float64")
    callbacks = [xn.ModelCheckpoint(f"{out}/ckpt-{tag}-{{epoch}}.npz"),
                 xn.CSVLogger(f"{out}/log-{tag}.csv"), xn.TerminateOnNaN(raise_error=False)]
    return net.fit(X, y, optimizer="sgd", lr=lr, epochs=4, batch_size=9,
                   validation_split=0.25, callbacks=callbacks, verbose=2, comm=comm)


def main():
    out, lr = sys.argv[1], float(sys.argv[2])
    comm = xn.distributed.init()
    history = train(comm, out, lr, f"rank{comm.rank}")
    record = {"history": history.history, "epochs": history.epoch}
    with open(f"{out}/history{comm.rank}.json", "w") as file:
        json.dump(record, file)


if __name__ == "__main__":
    main()
