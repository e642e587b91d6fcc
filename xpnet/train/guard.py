"""The divergence guard: training stops at the first non-finite loss, gradient or weight.

Where reading a scalar is cheap (``backend.cheap_reads``: NumPy, torch on the CPU,
array-api-strict) it checks the loss and gradients of every step before the update, so
the model keeps the weights of the step before. Every ``every`` steps and at each epoch
end (on every backend) it also checks the weights and optimizer state and takes a restore
point; a failed check there (or weights that a finite update overflowed) restores the last
restore point. On GPUs and JAX that periodic check is the only one, since each check is a
device sync. Each check is one reduction per buffer: with flat buffers, one for all the
gradients and one for all the weights.

Where reads are expensive the loop hands the guard its running loss total (``carry``), and
the next periodic check reads it in the same host copy as its own total (``carried``), so
the progress display and the epoch's loss cost no read of their own.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DivergenceError", "Guard"]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the model keeps its last finite weights.

    ``epoch`` and ``batch`` (both counted from 0, as callbacks count) say where it was
    found; the message counts them from 1, as progress lines do.
    """

    def __init__(self, message: str, epoch: int | None = None, batch: int | None = None):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


def _at(where) -> str:
    epoch, batch = where
    return f"epoch {epoch + 1}, batch {batch + 1}"


class Guard:
    """Checks a training run for divergence; see the module docstring."""

    def __init__(self, model, every: int, kernels):
        self.model, self.every, self.kernels = model, every, kernels
        self.per_step = model.backend.cheap_reads
        self.restore_point = model.snapshot(optimizer=True)
        self.snapshot_step = 0
        self.last_good = None
        # (0-d device total, samples) for the next check to read along
        self._carry: tuple[Any, int] | None = None
        # (host total, samples, step) as the last check read them
        self.carried: tuple[float, int, int] | None = None

    def carry(self, total, samples: int) -> None:
        """Have the next check read ``total`` (a 0-d device array) along with its own."""
        self._carry = (total, samples)

    def _state(self) -> list:
        model = self.model
        state = model.optimizer.state_arrays().values() if model.optimizer else ()
        return [*model.parameters.parts(), *state]

    def before_update(self, value, grad_parts, where) -> None:
        """Raise before an update whose loss or gradients are not finite (per-step backends)."""
        if not self.per_step or self.kernels.all_finite(value, grad_parts):
            return
        if not self.kernels.all_finite(0.0, self._state()):  # an earlier update overflowed
            self._restore_and_raise(where)
        raise DivergenceError(
            f"non-finite loss or gradient at {_at(where)}; training stopped before that "
            "update, so the model keeps its last finite weights (lower the learning rate "
            "or set clipnorm on the optimizer)", *where)

    def after_update(self, step: int, value, where, force: bool = False) -> None:
        """Every ``every`` steps (or when forced): check the weights, take a restore point."""
        if not (force or step % self.every == 0):
            return
        if self._finite(value, step):
            if step - self.snapshot_step >= self.every:  # a copy per epoch could cost 20%
                self.restore_point = self.model.snapshot(optimizer=True)
                self.snapshot_step, self.last_good = step, where
            return
        self._restore_and_raise(where)

    def _finite(self, value, step: int) -> bool:
        """Whether ``value`` and the state are finite: with a carried total, one host copy
        of both sums answers (and keeps the total in ``carried``); a non-finite sum is
        checked again by the kernels' own test, which tells overflow from NaN."""
        state = self._state()
        if self._carry is None:
            return self.kernels.all_finite(value, state)
        (total, samples), self._carry = self._carry, None
        backend = self.model.backend
        xp = backend.xp
        checked = value
        for a in state:
            checked = checked + xp.sum(a)
        host_total, host_checked = (float(v) for v in backend.to_numpy(
            xp.stack([xp.astype(total, checked.dtype), checked])))
        self.carried = (host_total, samples, step)
        return math.isfinite(host_checked) or self.kernels.all_finite(value, state)

    def _restore_and_raise(self, where):
        self.model.restore(self.restore_point)
        since = ("the start of this fit" if self.last_good is None
                 else f"the check at {_at(self.last_good)}")
        raise DivergenceError(
            f"non-finite loss, weights or optimizer state found at {_at(where)}; training "
            f"stopped and the model was restored to its finite weights from {since} (lower "
            "the learning rate or set clipnorm on the optimizer)", *where)
