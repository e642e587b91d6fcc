"""The training step: the one owner of a parameter update.

``Step(model, loss, optimizer)`` is called once per batch and does, in order: forward,
loss (optionally weighted per sample), backward, the gradient hooks, the divergence
guard's check before the update, the optimizer update, and the guard's periodic check
after it. ``fit``, the scikit-learn estimators, ``xpnet.testing`` and the benchmarks all
train through it; nothing else updates parameters.

Where the backend has views, gradients land in one flat buffer (``Step.grads``) and the
optimizer updates every parameter at once (``Optimizer.step_flat``). Where the backend
can trace (JAX), the whole step is traced once and replayed (``traced.py``), unless hooks
or sample weights need the eager path.

Where the backend can capture CUDA graphs (torch on CUDA) and ``graphs`` allows it, the
eager step on the first batch shape is captured once and replayed (``graphs.py``).

Gradient hooks run between backward and update: ``hook(grads, step)`` gets the gradients
by name (on flat backends, views of ``step.grads.flat``) and returns them, changed in
place or as a new mapping; that is where a gradient all-reduce, loss-scale unscaling or
clipping plugs in. A hook may also replace ``step.value`` (the batch's loss, a 0-d device
array): what the guard checks and the step returns; and set ``step.skip`` to leave this
batch's update out (loss scaling does, on an overflow).

A mixed-precision model (``model.precision.mixed``) runs forward and backward in 16
bits over float32 parameters (``precision.py``); float16 adds a ``LossScale`` hook,
last, unless one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..interrupts import atomic
from ..nn import losses
from ..nn.buffers import Buffer
from . import graphs as graphs_
from . import traced
from .guard import Guard
from .precision import LossScale, MixedCompute

__all__ = ["GradHook", "Step"]

GradHook = Callable[[dict, "Step"], dict | None]


class Step:
    """One training update of ``model`` under ``loss`` with ``optimizer``; see the module.

    ``guard`` (a ``Guard``, optional) checks for divergence around each update.
    ``graphs``: "auto" replays a captured CUDA graph where one applies, True insists
    (ValueError saying why not), False (the default) never captures. The step
    binds ``optimizer`` to the model's parameters (refused when it belongs to another
    model) and reads the fast-path setting once, here.
    """

    def __init__(self, model, loss, optimizer, *, grad_hooks: Iterable[GradHook] = (),
                 guard: Guard | None = None, graphs: bool | str = False):
        backend = model.backend
        self.model, self.loss, self.optimizer = model, losses.resolve(loss), optimizer
        self.grad_hooks = list(grad_hooks)
        self.guard = guard
        precision = getattr(model, "precision", None)
        self.mixed = MixedCompute(model) if precision is not None and precision.mixed else None
        self.loss_scaler = next((h for h in self.grad_hooks if isinstance(h, LossScale)), None)
        if self.loss_scaler is None and precision is not None and precision.scales_loss:
            self.loss_scaler = LossScale()
            self.grad_hooks.append(self.loss_scaler)  # last: it judges the summed gradients
        self.kernels = backend.kernels.for_step()  # with its own reused arrays
        self._widest = max(model.widths)  # a batch's largest activation per row
        self.graphed = graphs_.plan(self, graphs)  # a Graphed, or None: eager
        optimizer.bind(model, model.layout, backend)
        self.grads = Buffer.zeros(model.layout, backend) if backend.views else None
        self.count = 0  # updates made by this step object
        self.batch_size = 0  # rows of the batch being trained on
        self.value = None  # the batch's loss while the hooks run
        self.skip = False  # a hook's verdict: leave this batch's update out
        self.skipped = 0  # updates left out (loss-scale overflows)
        self.new_state = None  # the layers' state computed by the last forward pass
        self._traced = None
        if backend.can_trace and not self.grad_hooks and self.mixed is None:
            self._traced = traced.compiled_step(model, self.loss, optimizer)

    def refresh(self) -> None:
        """Pick up a change of the optimizer's configuration (a callback's, between epochs):
        the traced step is keyed on it. The learning rate needs no refresh."""
        if self._traced is not None:
            self._traced = traced.compiled_step(self.model, self.loss, self.optimizer)

    @property
    def is_traced(self) -> bool:
        """Whether the whole step runs traced (JAX) rather than eagerly."""
        return self._traced is not None

    def loss_and_grads(self, X, T, rng=None, weights=None):
        """Forward, loss and backward on one batch: ``(loss, grads by name)``, no update.

        On flat backends the gradients are views of ``self.grads`` (reused every step). The
        layers' new state (BatchNorm's running statistics) waits in ``self.new_state`` for
        the update to commit it.
        """
        model = self.model
        if self.mixed is not None:
            return self._mixed_loss_and_grads(X, T, rng, weights)
        out = None if self.grads is None else self.grads.arrays
        self.new_state = {} if model.state_shapes else None
        Y, backprops = model.forward(X, training=True, rng=rng, grads_out=out,
                                     kernels=self.kernels, state_out=self.new_state)
        value, dY = self.loss.value_and_grad(self.kernels, model.backend.xp, Y, T, weights)
        return value, model.backward(dY, backprops, grads_out=out)

    @property
    def loss_scale(self) -> float:
        """What the loss gradient is multiplied by before backward (1 without scaling)."""
        return 1.0 if self.loss_scaler is None else self.loss_scaler.scale

    def _mixed_loss_and_grads(self, X, T, rng, weights):
        """Forward and backward in 16 bits, the loss in float32, float32 gradients."""
        model, mixed = self.model, self.mixed
        xp = model.backend.xp
        low_out = None if mixed.grads is None else mixed.grads.arrays
        # the layers' state stays float32: a training pass normalises by the batch's own
        # statistics and only updates the running ones, which 16 bits would round away
        self.new_state = {} if model.state_shapes else None
        Y, backprops = model.forward(mixed.cast(X), params=mixed.cast_params(model.parameters),
                                     training=True, rng=rng, grads_out=low_out,
                                     kernels=mixed.backend.kernels, state_out=self.new_state)
        if self.new_state:
            self.new_state = {k: xp.astype(v, model.backend.dtype)
                              for k, v in self.new_state.items()}
        Y32 = xp.astype(Y, model.backend.dtype)
        value, dY = self.loss.value_and_grad(self.kernels, xp, Y32, T, weights)
        if self.loss_scaler is not None:  # scaled in float32, before the cast can underflow
            dY = dY * self.loss_scaler.scale
        low = model.backward(mixed.cast(dY), backprops, grads_out=low_out)
        return value, mixed.gradients_into(low, self.grads)

    def __call__(self, X, T, rng=None, weights=None, where=(0, 0)):
        """Train on one batch (device arrays); returns its loss as a 0-d device array.

        ``weights`` (shape ``(n,)``, non-negative, not all zero) weight each sample's loss;
        ``where`` (epoch, batch) is what a divergence error names. On NumPy a step whose
        activations are large writes its temporaries into kept arrays nothing uses any more
        (``backend/workspace.py``); nothing the step returns is one.
        """
        workspace = self.kernels.workspace
        if workspace is None or X.shape[0] * self._widest < workspace.MIN_ELEMENTS:
            return self._train(X, T, rng, weights, where)
        workspace.start((tuple(X.shape), X.dtype))
        try:
            return self._train(X, T, rng, weights, where)
        finally:  # kernels called after the step (validation, the guard) get fresh arrays
            workspace.stop()

    def _train(self, X, T, rng, weights, where):
        self.batch_size = X.shape[0]  # what a hook may scale by
        if weights is not None:  # an all-zero batch: zero loss and gradient, not 0/0
            xp = self.model.backend.xp
            tiny = xp.finfo(weights.dtype).smallest_normal
            weights = weights / xp.maximum(xp.sum(weights), tiny)
        value = None
        if self._traced is not None and weights is None:
            value = self._traced(X, T)
        elif self.graphed is not None and weights is None:
            value = self.graphed(X, T, where)  # None: not the captured shape
        if value is None:
            value = self._eager(X, T, rng, weights, where)
            if self.skip:  # no update, no count: as if this batch had not been drawn
                self.skipped += 1
                return value
        self.count += 1
        if self.guard is not None:
            self.guard.after_update(self.count, value, where)
        return value

    def _eager(self, X, T, rng, weights, where):
        """The step op by op (what a CUDA graph captures): its loss, a 0-d device array."""
        value, grads = self.loss_and_grads(X, T, rng, weights)
        self.value, self.skip = value, False  # a hook may replace the value (the global loss)
        for hook in self.grad_hooks:
            grads = self._take(hook(grads, self), grads)
        value = self.value
        if self.skip:  # a hook left this update out (loss scaling, on an overflow)
            return value
        if self.guard is not None:
            parts = self.grads.parts() if self.grads is not None else grads.values()
            self.guard.before_update(value, parts, where)
        self._update(grads)
        return value

    def _take(self, returned, grads) -> dict:
        """What a hook returned, written into the flat gradient buffer where there is one."""
        if returned is None or returned is grads:
            return grads
        if self.grads is not None:
            for name, g in returned.items():
                view = self.grads.arrays[name]
                if g is not view:
                    view[...] = g
            return dict(self.grads.arrays)
        return dict(returned)

    def _update(self, grads) -> None:
        model, opt = self.model, self.optimizer
        backend = model.backend
        with atomic():  # a second Ctrl-C waits for the whole update (xpnet/interrupts.py)
            if self.new_state:
                model.commit_state(self.new_state)
            if self.grads is not None:  # every parameter at once, in place
                opt.step_flat(model.parameters, self.grads, backend, self.kernels)
                return
            arrays = opt.step(model.parameters.arrays, grads, backend.xp, backend.inplace,
                              kernels=self.kernels)
            if arrays is not model.parameters.arrays:  # functional (JAX): the new arrays
                model.parameters = Buffer(model.layout, arrays)
