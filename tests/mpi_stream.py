"""Run under mpiexec by tests/test_streaming.py: train in float64 on streamed data.

    mpiexec -n 3 python tests/mpi_stream.py OUT_DIR KIND

KIND "mapped" trains on a memory-mapped X (OUT_DIR/X.npy, written by the test), "batches"
on a list of (X, y) batches; each rank saves its parameters and loss history.
"""

import sys

import numpy as np

import xpnet as xn
from xpnet.backend.table import to_numpy


def problem():
    rng = np.random.default_rng(1)
    return rng.normal(size=(23, 5)), rng.integers(0, 3, size=23)


def train(comm, X, y=None, shuffle=True):
    """A short float64 run with dropout, global batch 7 (a short last batch)."""
    net = xn.Sequential(xn.Dense(5, 8), xn.Tanh(), xn.Dropout(0.3), xn.Dense(8, 3), seed=0,
                        dtype="float64")
    history = net.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=3,
                      batch_size=7, seed=3, shuffle=shuffle, comm=comm)
    return {k: to_numpy(v) for k, v in net.params.items()}, history.history["loss"]


def batches():
    X, y = problem()
    return [(X[lo:hi], y[lo:hi]) for lo, hi in xn.data.batch_bounds(len(X), 7)]


def main():
    out, kind = sys.argv[1:3]
    comm = xn.distributed.init()
    if kind == "mapped":
        params, losses = train(comm, np.load(f"{out}/X.npy", mmap_mode="r"), problem()[1])
    else:
        params, losses = train(comm, batches())
    np.savez(f"{out}/rank{comm.rank}.npz", loss=np.array(losses), **params)


if __name__ == "__main__":
    main()
