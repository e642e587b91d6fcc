"""Mixed precision: 16-bit forward and backward over float32 parameters, and loss scaling.

A mixed model (``precision="mixed-bfloat16"`` or ``"mixed-float16"``) keeps its
parameters, gradients and optimizer state in float32. Each step casts the parameters
(one cast of the flat buffer where there is one) and the batch to the 16-bit dtype, runs
forward and backward there, computes the loss in float32 from the float32-cast output,
and casts the gradients back into the float32 gradient buffer before the hooks and the
update. So ``model.params`` and the optimizer never see a 16-bit number.

float16 has 5 exponent bits: small gradients underflow to zero unless the loss is scaled
up before backward and the gradients scaled down after. ``LossScale`` does that as
``torch.cuda.amp.GradScaler`` does (start at 2**16, double after 2000 finite steps,
halve on an overflow, skipping that update). bfloat16 has float32's exponent range and
needs no scaling.
"""

from __future__ import annotations

from .. import checks
from ..backend import table as backends
from ..nn.buffers import Buffer
from .guard import DivergenceError

__all__ = ["LossScale", "MixedCompute"]


class LossScale:
    """Dynamic loss scaling for float16 training, a gradient hook of the step.

    The step multiplies the loss gradient by ``scale`` before backward; this hook divides
    the gradients by it afterwards and checks them. Non-finite gradients skip the update
    (counted in ``skipped``; ``fit`` records them per epoch as ``skipped_steps``) and halve
    the scale; ``growth_interval`` finite steps in a row double it. A scale that falls
    below ``min_scale`` raises DivergenceError: the gradients overflow whatever the scale.
    A non-finite loss is not skipped: the divergence guard reports it as in float32.
    Run it after any all-reduce (``fit`` puts it last), so every process decides alike.
    Its check reads one flag on the host per step: a device sync on a GPU.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000,
                 min_scale: float = 2.0 ** -14):
        self.scale = checks.real("LossScale", "init_scale", init_scale, 0.0, low_open=True)
        self.growth_factor = checks.real("LossScale", "growth_factor", growth_factor, 1.0,
                                         low_open=True)
        self.backoff_factor = checks.real("LossScale", "backoff_factor", backoff_factor, 0.0,
                                          1.0, low_open=True, high_open=True)
        self.growth_interval = checks.integer("LossScale", "growth_interval", growth_interval, 1)
        self.min_scale = checks.real("LossScale", "min_scale", min_scale, 0.0, low_open=True)
        self.good_steps = 0  # finite steps since the last change of scale
        self.skipped = 0  # updates skipped for non-finite gradients, over this object's life

    def __repr__(self) -> str:
        return f"LossScale(scale={self.scale:g}, skipped={self.skipped})"

    def __call__(self, grads: dict, step) -> dict:
        backend = step.model.backend
        xp, inv = backend.xp, 1.0 / step.loss_scale
        if step.grads is not None:  # one flat buffer: one multiply, one reduction
            flat = step.grads.flat
            flat *= inv
            finite = bool(xp.all(xp.isfinite(flat)))
        else:
            grads = {name: g * inv for name, g in grads.items()}
            finite = all(bool(xp.all(xp.isfinite(g))) for g in grads.values())
        if not finite and not bool(xp.isfinite(step.value)):
            return grads  # the loss itself diverged: the guard's to report, not a skip
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
            return grads
        self.skipped += 1
        self.good_steps = 0
        self.scale *= self.backoff_factor
        step.skip = True
        if self.scale < self.min_scale:
            raise DivergenceError(
                f"float16 gradients overflow at every loss scale: the scale fell to "
                f"{self.scale:g}, below LossScale(min_scale={self.min_scale:g}); lower the "
                "learning rate, or train in mixed-bfloat16 or float32")
        return grads


class MixedCompute:
    """What one mixed-precision step needs beside the float32 model: the 16-bit backend,
    a 16-bit copy of the parameters and a 16-bit gradient buffer, reused every step."""

    def __init__(self, model):
        self.backend = backends.compute(model.backend, model.precision.compute_dtype)
        self.params = Buffer.zeros(model.layout, self.backend)
        self.grads = Buffer.zeros(model.layout, self.backend) if self.backend.views else None

    def cast_params(self, parameters: Buffer) -> dict:
        """The float32 parameters as 16-bit arrays by name (one cast where flat)."""
        xp, dtype = self.backend.xp, self.backend.dtype
        if parameters.flat is not None and self.params.flat is not None:
            self.params.flat[...] = xp.astype(parameters.flat, dtype)
            return self.params.arrays
        return {name: xp.astype(p, dtype) for name, p in parameters.arrays.items()}

    def cast(self, array):
        """``array`` in the 16-bit dtype."""
        return self.backend.xp.astype(array, self.backend.dtype)

    def gradients_into(self, low: dict, grads32: Buffer | None) -> dict:
        """The 16-bit gradients as float32: into ``grads32`` (one cast) where flat."""
        xp = self.backend.xp
        if grads32 is not None and self.grads is not None:
            grads32.flat[...] = xp.astype(self.grads.flat, grads32.flat.dtype)
            return dict(grads32.arrays)
        return {name: xp.astype(g, xp.float32) for name, g in low.items()}
