"""Run under mpiexec by tests/test_distributed.py: a job that would run for ever.

    mpiexec -n 2 python tests/mpi_stop.py OUT_DIR train   # trains without end
    mpiexec -n 2 python tests/mpi_stop.py OUT_DIR hang    # rank 0 waits for rank 1, asleep

Each rank writes OUT_DIR/readyN (its pid) once it is under way, so the test knows when
to press Ctrl-C (SIGINT) or that the timeout, not an early exit, ended the job.
"""

import os
import sys
import time

import numpy as np

import xpnet as xn


def main():
    out, what = sys.argv[1:3]
    comm = xn.distributed.init()
    with open(f"{out}/ready{comm.rank}", "w") as file:
        file.write(str(os.getpid()))
    if what == "hang":
        if comm.rank == 1:
            time.sleep(3600)
        comm.barrier()
        return
    X = np.random.default_rng(0).normal(size=(64, 4))
    net = xn.Sequential(xn.Dense(4, 8), xn.ReLU(), xn.Dense(8, 1), seed=0, backend="numpy")
    net.fit(X, X[:, :1], epochs=10**9, batch_size=8, comm=comm)


if __name__ == "__main__":
    main()
