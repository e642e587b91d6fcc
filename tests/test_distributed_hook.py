"""The gradient all-reduce hook in one process, against a communicator that fakes a peer.

The multi-process equivalence lives in test_distributed.py; here the hook's own contract:
what it sends, that the loss stays a device array (never read on the host), and the
weighting by each shard's share of the batch.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import xpnet as xn
from xpnet.backend.table import to_numpy
from xpnet.distributed import GradientAllReduce


class TwinComm:
    """Two ranks that hold the same shard: every sum is twice the local array."""

    rank, size = 0, 2

    def __init__(self):
        self.sent: list[tuple] = []

    def allreduce_(self, array, backend=None):
        self.sent.append(tuple(array.shape))
        if backend.inplace:
            array[...] = array * 2
            return array
        return array * 2

    def allreduce_scalar(self, value):
        raise AssertionError("the hook read the loss on the host (a device sync per step)")


def _problem(backend):
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    return (backend.asarray(X, dtype=backend.dtype), backend.asarray(T, dtype=backend.dtype))


def _train_once(backend, hooks):
    """One step of the same model (seed 0); returns (loss, gradients seen after ``hooks``)."""
    model = xn.mlp([4, 5, 2], seed=0, backend=backend.name, dtype="float64")
    seen = {}

    def capture(grads, step):
        seen.update({k: to_numpy(v).copy() for k, v in grads.items()})

    step = xn.Step(model, "mse", xn.SGD(lr=0.1), grad_hooks=[*hooks, capture])
    value = step(*_problem(model.backend))
    return value, seen


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_loss_and_gradients_are_summed_on_the_device(backend64, share):
    comm = TwinComm()
    hook = GradientAllReduce(comm, xn.backend.get(backend64.name, dtype="float64"))
    hook.share = share
    value, grads = _train_once(backend64, [hook])
    want_value, want_grads = _train_once(backend64, [])
    assert array_api_compat.array_namespace(value) is array_api_compat.array_namespace(
        want_value), "the global loss left the device"
    assert tuple(value.shape) == ()
    np.testing.assert_allclose(float(value), 2 * share * float(want_value), rtol=1e-12)
    for name, g in want_grads.items():
        np.testing.assert_allclose(grads[name], 2 * share * g, rtol=1e-12, err_msg=name)
    assert (1,) in comm.sent  # the loss travels as a one-element array


def test_a_shard_without_rows_adds_nothing_to_the_loss():
    """A rank with no rows of a short batch trains on one row weighted 0: even a NaN
    loss there must not reach the global sum."""
    backend = xn.backend.get("numpy", dtype="float64")
    hook = GradientAllReduce(TwinComm(), backend)
    hook.share = 0.0
    total = hook.global_loss(backend.asarray(float("nan"), dtype=backend.dtype))
    assert float(total) == 0.0
