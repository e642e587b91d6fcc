"""CUDA-graph replay of the training step (torch on CUDA).

A small step's time on a GPU is mostly the launch of its ~40 kernels, one Python call
each. Where the batch shape is static, the whole eager step (forward, loss, backward into
the flat gradient buffer, optimizer update) is captured once as a CUDA graph and replayed:
one launch per step. The backend table says who can capture (``Backend.capture_refusal``,
its ``graphs`` column): torch on CUDA only. CuPy refuses cuBLAS calls during capture, JAX
traces the step with ``jax.jit`` instead (``traced.py``), and the CPU has no graphs.

What a graph bakes in and how each is kept honest:

- Memory addresses. The batch is copied into static buffers before each replay; the
  parameters, gradients and optimizer slots are flat buffers updated in place. A new
  buffer (a restore, a loaded optimizer state) or a new optimizer config (a schedule
  changing ``lr`` between epochs) is a new key: the step is captured again.
- Host scalars. Adam's bias corrections depend on the step count, so during capture the
  optimizer counts on a 0-d float64 device array, set from the host count before each
  replay (no read back); ``optimizer.iterations`` stays a host int.
- Shapes. Only the first batch shape is captured; a short last batch runs eagerly.

It applies by capability, as the traced step does (``traced.applies``): the built-in
layers with no active Dropout (its masks come from the host RNG), a registered loss and
optimizer type, no gradient hooks (an all-reduce goes through the host) and no sample
weights. ``fit(graphs="auto")`` captures where all of that holds; ``graphs=True`` refuses
where it does not, saying why; ``graphs=False`` never captures.

The first ``WARMUP`` static-shape steps run eagerly on the capture's side stream (the
library sets up its handles and workspaces there), and are real steps of training. A
capture the library refuses warns and leaves the step eager ("auto") or raises (True). The
parity test against eager is ``tests/test_graphs.py`` (marked ``gpu``).
"""

from __future__ import annotations

import warnings

from ..nn import layers as layer_types
from ..nn import losses
from ..nn import optim as optimizers

__all__ = ["Graphed", "OPTIONS", "check_option", "plan", "refusal", "wanted"]

OPTIONS = ("auto", True, False)
WARMUP = 2  # eager steps on the side stream before the capture
_BUILT_IN_LAYERS = tuple(layer_types.LAYERS.values())


def check_option(owner: str, graphs) -> None:
    """Refuse anything but "auto", True or False, naming the argument."""
    if not any(graphs is o or (isinstance(o, str) and graphs == o) for o in OPTIONS):
        raise ValueError(f"{owner}: graphs must be 'auto', True or False; got {graphs!r}")


def refusal(model, loss, optimizer, grad_hooks=()) -> str | None:
    """Why a step of ``model`` cannot be captured as a CUDA graph; None where it can."""
    backend = model.backend
    reason = backend.capture_refusal
    if reason is not None:
        return f"backend {backend.name!r} cannot capture CUDA graphs: {reason}"
    for i, layer in enumerate(model.layers):
        if isinstance(layer, layer_types.Dropout) and layer.p > 0.0:
            return (f"layer {i} (Dropout) draws a new mask from the host RNG every step, "
                    "which a replayed graph would repeat")
        if type(layer) not in _BUILT_IN_LAYERS:
            return (f"layer {i} ({type(layer).__name__}) is not one of xpnet's own, so it "
                    "may keep host-side state a graph cannot see")
    if type(optimizer) not in optimizers.OPTIMIZERS.values():
        return (f"the optimizer {type(optimizer).__name__} is not a registered type, so "
                "it may keep host-side state a graph cannot see")
    if losses.LOSSES.get(losses.resolve(loss).name) is not losses.resolve(loss):
        return "the loss is not a registered one"
    precision = getattr(model, "precision", None)
    if precision is not None and precision.mixed:
        return (f"the {precision.name} step casts to 16 bits on the way, which is not "
                "captured (not yet proven on a device)")
    if grad_hooks:
        return "the step has gradient hooks, which may work on the host (an all-reduce)"
    if not backend.views:
        return f"backend {backend.name!r} keeps no flat parameter buffer"
    return None


def wanted(owner: str, graphs, model, loss, optimizer, grad_hooks=()) -> bool:
    """Whether to capture, per the option: "auto" where ``refusal`` finds nothing, True
    insists (ValueError naming ``owner`` and the reason where it cannot), False never."""
    check_option(owner, graphs)
    if graphs is False:
        return False
    reason = refusal(model, loss, optimizer, grad_hooks)
    if reason is not None and graphs is True:
        raise ValueError(f"{owner}: graphs=True, but {reason}; pass graphs='auto' to "
                         "train eagerly where a graph cannot apply")
    return reason is None


def plan(step, graphs, owner: str = "Step"):
    """A ``Graphed`` for ``step`` where ``wanted`` says so, else None (eager)."""
    if wanted(owner, graphs, step.model, step.loss, step.optimizer, step.grad_hooks):
        return Graphed(step, insist=graphs is True)
    return None


class Graphed:
    """The eager step of ``step`` on one batch shape, captured once and replayed.

    A capture the library refuses (an operation that cannot be recorded) raises where
    ``insist``; otherwise it warns once and the step stays eager from then on: nothing ran
    during the failed capture, so training goes on exactly as without graphs.
    """

    def __init__(self, step, insist: bool = False):
        self.step, self.insist = step, insist
        self.failed: str | None = None  # why the capture failed, once it has
        self.api = step.model.backend.graphs()
        self.shape = None  # (X shape, T shape) of the captured batches
        self.warm = 0  # warm-up steps run so far
        self.captures = 0  # how many times the step was captured (a test reads it)
        self._key = None
        self._replay = None

    def __call__(self, X, T, where):
        """Train on one batch through the graph; None when the batch is not of the
        captured shape (the caller then runs the eager step)."""
        if self.failed is not None:
            return None
        shape = (tuple(X.shape), tuple(T.shape), X.dtype, T.dtype)
        if self.shape is None:
            self.shape = shape
        if shape != self.shape:
            return None
        if self.warm < WARMUP:
            self.warm += 1
            return self.api.side(lambda: self.step._eager(X, T, None, None, where))
        key = self._state_key()
        if key != self._key:
            try:
                self._capture(X, T, where)
            except Exception as exc:  # the library's own error says which operation
                return self._give_up(exc)
            self._key = key
        return self._run(X, T)

    def _give_up(self, exc: Exception) -> None:
        self._replay, self._key = None, None
        # fit and Step alike land here, so the message names the step, not its caller
        message = (f"the CUDA-graph capture of the training step failed "
                   f"({type(exc).__name__}: {exc})")
        if self.insist:
            raise RuntimeError(f"{message}; pass graphs='auto' to train eagerly instead") \
                from exc
        self.failed = str(exc)
        warnings.warn(f"{message}; training eagerly from here on (graphs=False hides this "
                      "warning)", RuntimeWarning, stacklevel=4)
        return None

    def _state_key(self) -> tuple:
        """What the captured graph depends on besides the batch: the buffers' identities
        and the optimizer's configuration."""
        step = self.step
        opt = step.optimizer
        slots = opt._flat_slots(step.model.layout, step.model.backend)
        return (id(step.model.parameters.flat), id(step.grads.flat),
                tuple((name, id(b.flat)) for name, b in slots.items()),
                tuple((k, repr(v)) for k, v in opt.config().items()))

    def _capture(self, X, T, where) -> None:
        step = self.step
        backend = step.model.backend
        xp = backend.xp
        self._replay = None  # the old graph and its memory go first
        self._X = xp.asarray(X, copy=True)
        self._T = xp.asarray(T, copy=True)
        self._t = backend.asarray(float(step.optimizer.iterations), dtype=xp.float64)
        self._replay, self._value = self.api.capture(lambda: self._body(where))
        self.captures += 1

    def _body(self, where):
        """The eager step on the static buffers, the optimizer counting on the device."""
        opt = self.step.optimizer
        host_count, opt.iterations = opt.iterations, self._t
        try:
            return self.step._eager(self._X, self._T, None, None, where)
        finally:
            opt.iterations = host_count

    def _run(self, X, T):
        opt = self.step.optimizer
        self._X[...] = X
        self._T[...] = T
        self._t[...] = float(opt.iterations)  # the graph adds one, as the eager step does
        self._replay()
        opt.iterations += 1
        return self._value
