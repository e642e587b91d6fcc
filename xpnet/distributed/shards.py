"""Each process's part of a global batch, its dropout masks, and the gradient sum."""

from __future__ import annotations

__all__ = ["GradientAllReduce", "ShardedRNG", "shard"]


def shard(lo: int, hi: int, rank: int, size: int) -> tuple[int, int]:
    """This rank's contiguous rows of the batch ``[lo, hi)``, split as ``np.array_split``
    splits (the first ``(hi - lo) % size`` ranks get one row more; a rank may get none)."""
    base, extra = divmod(hi - lo, size)
    start = lo + rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardedRNG:
    """The host RNG as the forward pass of one shard sees it: a draw of shape ``(n, ...)``
    draws the whole global batch's ``(batch, ...)`` and returns this shard's rows, so the
    masks equal the single-process ones and the RNG advances alike on every rank."""

    def __init__(self, rng, batch: int, rows: tuple[int, int]):
        self.rng, self.batch, self.rows = rng, batch, rows

    def random(self, shape):
        """This shard's rows of a uniform draw for the whole batch (``shape[0]`` rows)."""
        lo, hi = self.rows
        return self.rng.random((self.batch, *tuple(shape)[1:]))[lo:hi]


class GradientAllReduce:
    """A gradient hook: the sum over processes of each shard's gradient, weighted by its
    share of the global batch, is the gradient of the global batch's mean loss.

    The loop sets ``share`` (local rows / global rows) before each step. The hook also
    replaces ``step.value`` by the global batch's loss, so the divergence guard decides
    on the same numbers on every rank. One buffer is sent where the gradients are flat.
    The loss is summed as a one-element array on the device, never read on the host: a
    read would be a device sync every step on a GPU.
    """

    def __init__(self, comm, backend):
        self.comm, self.backend = comm, backend
        self.share = 1.0

    def __call__(self, grads: dict, step) -> dict:
        step.value = self.global_loss(step.value)
        if step.grads is not None:
            flat = step.grads.flat
            flat *= self.share
            self.comm.allreduce_(flat, self.backend)
            return grads
        xp = self.backend.xp
        return {name: self.comm.allreduce_(xp.multiply(g, self.share), self.backend)
                for name, g in grads.items()}


    def global_loss(self, value):
        """The global batch's loss (0-d, on the device) from this shard's mean ``value``."""
        xp = self.backend.xp
        # a shard of 0 rows trained on one row weighted 0: its mean counts for nothing
        # (multiplying by 0 would keep a NaN or an inf)
        local = xp.multiply(value, self.share) if self.share else xp.zeros_like(value)
        total = self.comm.allreduce_(xp.reshape(local, (1,)), self.backend)
        return xp.reshape(total, ())
