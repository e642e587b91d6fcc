"""How many CPU threads the libraries under xpnet compute with: one call for all of them.

NumPy's BLAS (OpenBLAS, MKL, BLIS) has no Python-level switch; threadpoolctl changes it
at run time, so that is what ``set_num_threads`` uses for NumPy. torch has its own
setting. Only libraries already imported are touched: setting threads must not import
torch into a NumPy-only program. JAX's CPU thread pool is fixed when it starts
(``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` before the first import of jax), and a
GPU backend's work does not run on CPU threads, so neither has a run-time setting.
"""

from __future__ import annotations

import sys

from .table import BackendError

__all__ = ["get_num_threads", "set_num_threads"]

_LIMITERS: list = []  # threadpoolctl's limiter applies while the object lives


def set_num_threads(n: int) -> dict:
    """Compute with ``n`` CPU threads from now on: NumPy's BLAS and OpenMP pools (through
    threadpoolctl) and torch, if it is imported. Returns ``get_num_threads()``.

    Raises BackendError naming what to install when threadpoolctl is missing.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1; got {n!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise BackendError("set_num_threads needs threadpoolctl to set NumPy's BLAS threads: "
                           "pip install threadpoolctl") from None
    _LIMITERS[:] = [threadpool_limits(limits=n)]
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return get_num_threads()


def get_num_threads() -> dict:
    """The thread count of each CPU thread pool loaded now: ``{"blas": ..., "openmp": ...,
    "torch": ...}`` (a pool that is not loaded is absent)."""
    out: dict = {}
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            out.setdefault(pool["user_api"], pool["num_threads"])
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.get_num_threads()
    return out
