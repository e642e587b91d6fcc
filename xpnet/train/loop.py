"""The training loop (``fit``) and ``evaluate``.

Data moves to the device once per call; each epoch shuffles with one host permutation and
one device gather; batches are views. The loss is summed on the device and read once per
epoch, so nothing synchronises per step except the divergence check on backends where
reading a scalar costs nothing (NumPy, torch on the CPU, array-api-strict).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from .. import data
from ..backend import explaining_out_of_memory
from ..nn import losses
from ..nn import optim as optimizers
from . import metrics
from . import traced as jit
from .callbacks import Callback, History, TerminateOnNaN


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the model keeps its last finite weights.

    ``epoch`` and ``batch`` (both counted from 0) say where it was found.
    """

    def __init__(self, message: str, epoch: int | None = None, batch: int | None = None):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"fit: {name} must be an int >= {low}; got {value!r}")
    return value


def _at(where) -> str:
    return f"epoch {where[0]}, batch {where[1]} (both counted from 0)"


class _Guard:
    """Stops training at the first non-finite loss, gradient, weight or optimizer state.

    Where reading a scalar is free (NumPy, torch on the CPU, array-api-strict) it checks the
    loss and gradients of every step before the update, so the model keeps the weights of
    the step before. Every ``every`` steps and at each epoch end (on every backend) it also
    checks the weights and optimizer state and takes a restore point; a failed check there
    (or weights that a finite update overflowed) restores the last restore point. On GPUs
    and JAX that periodic check is the only one, since each check is a device sync.
    """

    def __init__(self, model, every: int):
        backend = model.backend
        self.model = model
        self.per_step = not backend.is_gpu and backend.name != "jax"
        self.every = every
        self.restore_point = model.snapshot(optimizer=True)
        self.snapshot_step = 0
        self.last_good = None

    def _state(self) -> list:
        model = self.model
        state = model.optimizer.state_arrays().values() if model.optimizer else ()
        return [*model._params.values(), *state]

    def before_update(self, step, value, grads, xp, where):
        if not self.per_step or self.model._kernels().all_finite(value, grads.values()):
            return
        if not self.model._kernels().all_finite(0.0, self._state()):  # earlier overflow
            self._restore_and_raise(where)
        raise DivergenceError(
            f"non-finite loss or gradient at {_at(where)}; training stopped before that "
            "update, so the model keeps its last finite weights (lower the learning rate "
            "or set clipnorm on the optimizer)", *where)

    def after_update(self, step, value, xp, where, force=False):
        if not (force or step % self.every == 0):
            return
        if self.model._kernels().all_finite(value, self._state()):
            if step - self.snapshot_step >= self.every:  # a copy per epoch could cost 20%
                self.restore_point = self.model.snapshot(optimizer=True)
                self.snapshot_step, self.last_good = step, where
            return
        self._restore_and_raise(where)

    def _restore_and_raise(self, where):
        self.model.restore(self.restore_point)
        since = ("the start of this fit" if self.last_good is None
                 else f"the check at {_at(self.last_good)}")
        raise DivergenceError(
            f"non-finite loss, weights or optimizer state found at {_at(where)}; training "
            f"stopped and the model was restored to its finite weights from {since} (lower "
            "the learning rate or set clipnorm on the optimizer)", *where)


def fit(model, X, y, loss: str = "mse", optimizer="sgd", epochs: int = 1,
        batch_size: int | None = 32, validation_data=None, validation_split: float = 0.0,
        callbacks: Iterable[Callback] = (), seed: int | None = 0, verbose: int = 0,
        shuffle: bool = True, lr: float | None = None, check_every: int = 50) -> History:
    """Train ``model`` on (X, y) and return a History.

    - ``loss``: "mse", "cross_entropy" (logits; labels or one-hot) or "binary_cross_entropy".
    - ``optimizer``: an Optimizer, or "sgd"/"adam" with ``lr``. Its state is kept on the
      model, so a second ``fit`` with the same optimizer continues.
    - ``batch_size``: None for full batch. The last batch of an epoch may be short.
    - ``validation_data`` (Xv, yv) or ``validation_split`` (the last fraction of X, y, as
      Keras): adds ``val_loss`` and the metrics (``val_accuracy`` for classification,
      ``val_mse``, ``val_mae``, ``val_r2`` for regression) to the history.
    - ``seed``: shuffling and dropout masks, drawn on the host (same order on every backend).
    - ``verbose``: 0 silent, 1 a progress bar per epoch (tqdm), 2 a line per epoch.
    - ``callbacks``: see ``xpnet.callbacks``. A TerminateOnNaN is added unless one is given
      (pass ``TerminateOnNaN(raise_error=False)`` to stop cleanly instead of raising).
    - ``check_every``: on GPU and JAX, steps between divergence checks (each a sync).

    Every argument and the data are validated before any state changes.
    """
    loss_fn = losses.resolve(loss)
    epochs = _check_int("epochs", epochs, 0)
    batch_size = _check_int("batch_size", batch_size, 1, allow_none=True)
    check_every = _check_int("check_every", check_every, 1)
    if verbose not in (0, 1, 2, True, False):
        raise ValueError(f"fit: verbose must be 0, 1 or 2; got {verbose!r}")
    if not isinstance(validation_split, (int, float)) or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: validation_split must be in [0, 1); got {validation_split!r}")
    callbacks = list(callbacks or ())
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(
                f"fit: callbacks must be xpnet Callback objects; got {type(cb).__name__}"
            )
    opt = optimizers.resolve(optimizer, lr)
    if lr is not None and isinstance(optimizer, optimizers.Optimizer):
        raise ValueError("fit: pass lr either inside the Optimizer or with a name, not both")
    _check_optimizer_state(model, opt)
    _warn_if_output_squashed(model, loss)

    Xd = model._inputs(X)
    Td = model._targets(y, loss, Xd.shape[0])
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (X_val, y_val)")
        Xv = model._inputs(validation_data[0], "X_val")
        Tv = model._targets(validation_data[1], loss, Xv.shape[0], "y_val")
    elif validation_split:
        n_val = int(round(Xd.shape[0] * validation_split))
        if n_val < 1 or n_val >= Xd.shape[0]:
            raise ValueError(f"fit: validation_split={validation_split} of {Xd.shape[0]} "
                             "samples leaves no validation or no training data")
        cut = Xd.shape[0] - n_val
        Xd, Xv, Td, Tv = Xd[:cut, ...], Xd[cut:, ...], Td[:cut, ...], Td[cut:, ...]
    else:
        Xv = Tv = None

    if model.optimizer is not opt:
        model.optimizer = opt
    with explaining_out_of_memory(model, "fit", batch_size, Xd.shape[0]):
        return _loop(model, Xd, Td, Xv, Tv, loss, loss_fn, opt, epochs, batch_size, callbacks,
                     seed, verbose, shuffle, check_every)


def _warn_if_output_squashed(model, loss: str) -> None:
    """The classification losses take logits: a final Softmax/Sigmoid layer would apply the
    squashing twice and train slowly, with no error to tell why."""
    from ..nn.layers import Sigmoid, Softmax

    last = model.layers[-1]
    if loss in losses.CLASSIFICATION and isinstance(last, (Softmax, Sigmoid)):
        warnings.warn(
            f"fit: loss {loss!r} takes logits, but the model ends in {type(last).__name__}, "
            "so it is applied twice; drop the last layer for training (apply it to "
            "predictions instead)", UserWarning, stacklevel=3)


def _check_optimizer_state(model, opt) -> None:
    """Refuse an optimizer whose state belongs to other parameters (another model, backend
    or dtype): its first step would fail half-way through the update, or mix moments."""
    shapes, backend = model.param_shapes(), model.backend
    for key, a in opt.state_arrays().items():
        name = key.rpartition("/")[0]
        if tuple(a.shape) != shapes.get(name):
            raise ValueError(
                f"fit: the optimizer holds state for {name!r} with shape {tuple(a.shape)}, but "
                f"this model's {name!r} is {shapes.get(name)}: it was used with another model; "
                "pass a new optimizer")
        if a.dtype != backend.dtype or not backend.owns(a):
            raise ValueError(
                f"fit: the optimizer's state is not {backend.dtype_name} on the model's backend "
                f"{backend.name} ({backend.device}); move model and optimizer together with "
                "model.to(...), or pass a new optimizer")


def _loop(model, Xd, Td, Xv, Tv, loss, loss_fn, opt, epochs, batch_size, callbacks, seed,
          verbose, shuffle, check_every):
    n = Xd.shape[0]
    rng = data.host_rng(seed)
    bounds = data.batch_bounds(n, batch_size)
    history = History()
    callbacks = _with_defaults(history, callbacks, verbose)
    # Only callbacks that override on_batch_end are called per batch: no per-step cost else.
    per_batch = [cb for cb in callbacks if type(cb).on_batch_end is not Callback.on_batch_end]
    for cb in callbacks:
        cb.set_model(model)
    guard = _Guard(model, check_every)
    model.stop_training = False
    for cb in callbacks:
        cb.on_train_begin({"epochs": epochs, "batches": len(bounds), "samples": n})
    try:
        _epochs(model, Xd, Td, Xv, Tv, loss, loss_fn, opt, epochs, bounds, callbacks,
                per_batch, rng, shuffle, guard)
    except Exception as exc:  # callbacks close their files and bars before it propagates
        for cb in callbacks:
            cb.on_train_end({"error": exc})
        stoppers = [cb for cb in callbacks if isinstance(cb, TerminateOnNaN)]
        if not isinstance(exc, DivergenceError) or not all(cb.on_divergence(exc)
                                                           for cb in stoppers):
            raise
        return history
    for cb in callbacks:
        cb.on_train_end({})
    return history


def _with_defaults(history, callbacks, verbose) -> list:
    """History first, then the user's callbacks, a TerminateOnNaN and a progress display."""
    out = [history, *callbacks]
    if not any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
        out.append(TerminateOnNaN())
    if verbose:
        from .progress import ProgressBar

        out.append(ProgressBar(verbose=int(verbose)))
    return out


def _epochs(model, Xd, Td, Xv, Tv, loss, loss_fn, opt, epochs, bounds, callbacks, per_batch,
            rng, shuffle, guard):
    backend = model.backend
    xp = backend.xp
    n = Xd.shape[0]
    step = 0
    for epoch in range(epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        if shuffle and len(bounds) > 1:
            order = xp.asarray(rng.permutation(n), device=backend.device)
            Xe, Te = xp.take(Xd, order, axis=0), xp.take(Td, order, axis=0)
        else:
            Xe, Te = Xd, Td
        total = None
        # JAX: the whole step traced once (xpnet.jit); looked up per epoch, so a callback that
        # changes the optimizer's config between epochs gets a step built for the new one
        traced = None if guard.per_step else jit.compiled_step(model, loss_fn, opt)
        for b, (lo, hi) in enumerate(bounds):
            Xb, Tb = Xe[lo:hi, ...], Te[lo:hi, ...]
            if traced is not None:  # no per-step guard check on JAX: no gradients needed
                value = traced(Xb, Tb)
            else:
                value, grads = model._loss_and_grads_device(Xb, Tb, loss_fn, training=True,
                                                            rng=rng)
                guard.before_update(step, value, grads, xp, (epoch, b))
                model._params = opt.step(model._params, grads, xp, backend.inplace,
                                         kernels=model._kernels())
            step += 1
            guard.after_update(step, value, xp, (epoch, b))
            weighted = value * (hi - lo)
            total = weighted if total is None else total + weighted
            if per_batch:
                batch_logs = {"size": hi - lo, "seen": hi, "loss_sum": total}
                for cb in per_batch:
                    cb.on_batch_end(b, batch_logs)
        guard.after_update(step, total, xp, (epoch, len(bounds) - 1), force=True)
        logs = {"loss": float(total) / n}
        if Xv is not None:
            for key, value in _evaluate_device(model, Xv, Tv, loss, loss_fn).items():
                logs[f"val_{key}"] = value
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break


def _evaluate_device(model, X, T, loss, loss_fn, batch_size=None) -> dict:
    xp = model.backend.xp
    Y = model._predict_device(X, batch_size)
    value, _ = loss_fn(xp, Y, T)
    return {"loss": float(value), **metrics.device_metrics(xp, Y, T, loss)}


def evaluate(model, X, y, loss: str = "mse", batch_size: int | None = None) -> dict:
    """``{"loss": ...}`` plus ``"accuracy"`` for classification losses, or ``"mse"``,
    ``"mae"`` and ``"r2"`` for regression (all floats, computed on the device)."""
    loss_fn = losses.resolve(loss)
    batch_size = _check_int("batch_size", batch_size, 1, allow_none=True)
    Xd = model._inputs(X)
    Td = model._targets(y, loss, Xd.shape[0])
    with explaining_out_of_memory(model, "evaluate", batch_size, Xd.shape[0]):
        return _evaluate_device(model, Xd, Td, loss, loss_fn, batch_size)
