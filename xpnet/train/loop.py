"""The training loop (``fit``) and ``evaluate``.

Data moves to the device once per call; each epoch draws one host permutation and gathers
each batch from it on the device (no second copy of the epoch); every update is one call
of the ``Step``. The loss is summed on the device and read once per epoch, so nothing
synchronises per step except the divergence check on backends where reading a scalar is
cheap (``backend.cheap_reads``).

The loop works on any model with the network protocol (``docs/architecture.md``): it
never imports the model class.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import checks, data
from ..backend import explaining_out_of_memory
from ..backend.memory import check_fits
from ..distributed import GradientAllReduce, ShardedRNG, shard
from ..interrupts import deferred_interrupts
from ..nn import losses
from ..nn import optim as optimizers
from ..nn.layers import ModelError, Sigmoid, Softmax
from . import metrics
from .callbacks import Callback, History, TerminateOnNaN
from .guard import DivergenceError, Guard
from .step import Step

__all__ = ["DivergenceError", "evaluate", "fit"]


@dataclass
class _Run:
    """Everything one ``fit`` call trains with, validated and on the device."""

    model: Any
    step: Step
    X: Any
    T: Any
    val: tuple | None  # (X_val, T_val) on the device
    epochs: int
    bounds: list
    callbacks: list
    per_batch: list  # the callbacks that override on_batch_end (only they cost per batch)
    rng: Any
    shuffle: bool
    history: History
    comm: Any = None  # a Communicator of more than one process, else None
    reducer: GradientAllReduce | None = None  # the step's gradient all-reduce hook


def fit(model, X, y, loss: str = "mse", optimizer="sgd", epochs: int = 1,
        batch_size: int | None = 32, validation_data=None, validation_split: float = 0.0,
        callbacks: Iterable[Callback] = (), seed: int | None = 0, verbose: int = 0,
        shuffle: bool = True, lr: float | None = None, check_every: int = 50,
        comm=None) -> History:
    """Train ``model`` on (X, y) and return a History (also kept as ``model.history``).

    - ``loss``: "mse", "cross_entropy" (logits; labels or one-hot), "binary_cross_entropy",
      "huber" (delta 1), "l1", a Loss (``xn.losses.Huber(delta=2.0)``) or a callable
      ``(xp, Y, T) -> (loss, dY)``.
    - ``optimizer``: an Optimizer, or "sgd", "adam", "adamw", "rmsprop", "adagrad" with
      ``lr``. Its state is kept on the
      model, so a second ``fit`` with the same optimizer continues; it belongs to this
      model from the first step on, and another model is refused.
    - ``batch_size``: None for full batch. The last batch of an epoch may be short.
    - ``validation_data`` (Xv, yv) or ``validation_split`` (the last fraction of X, y, as
      Keras; not both): adds ``val_loss`` and the metrics (``val_accuracy`` for
      classification, ``val_mse``, ``val_mae``, ``val_r2`` for regression) to the history.
    - ``seed``: shuffling and dropout masks, drawn on the host (same order on every backend).
    - ``verbose``: 0 silent, 1 a progress bar per epoch (tqdm), 2 a line per epoch.
    - ``callbacks``: a list of Callback instances, see ``xpnet.train.callbacks``. A
      TerminateOnNaN is added unless one is given (pass
      ``TerminateOnNaN(raise_error=False)`` to stop cleanly instead of raising).
    - ``shuffle``: reshuffle the samples every epoch (False: the order given).
    - ``check_every``: on GPU and JAX, steps between divergence checks (each a sync).
    - ``comm``: a communicator (``xpnet.distributed.init()``) to train data-parallel:
      every process passes the same data, seed and model; ``batch_size`` is the global
      batch, each process trains on its contiguous part of it and the gradients are
      summed before each update, so every process ends with the parameters a single
      process would. Only rank 0 shows progress and writes files (checkpoints, CSV).

    Every argument and the data are validated, and the memory training needs estimated
    (``backend.memory.check_fits``), before any state changes; a model without parameters
    is refused (ModelError: nothing to train). Ctrl-C stops at the next step boundary (no
    update is left half-done); callbacks then get ``on_train_end({"error":
    KeyboardInterrupt()})`` and ``model.history`` holds the epochs that finished.
    """
    entry = losses.resolve(loss)
    epochs = checks.integer("fit", "epochs", epochs, 0)
    batch_size = checks.integer("fit", "batch_size", batch_size, 1, allow_none=True)
    check_every = checks.integer("fit", "check_every", check_every, 1)
    shuffle = checks.boolean("fit", "shuffle", shuffle)
    rng = _host_rng(seed)
    if verbose not in (0, 1, 2, True, False):
        raise ValueError(f"fit: verbose must be 0, 1 or 2; got {verbose!r}")
    validation_split = _validation_split(validation_split, validation_data)
    callbacks = _callbacks(callbacks)
    opt = optimizers.resolve(optimizer, lr)
    if lr is not None and isinstance(optimizer, optimizers.Optimizer):
        raise ValueError("fit: pass lr either inside the Optimizer or with a name, not both")
    if not model.layout.shapes:
        raise ModelError("fit: the model has no parameters (no Dense layer): nothing to train")
    _warn_if_output_squashed(model, entry)
    Xd, Td, val = _device_data(model, X, y, entry, validation_data, validation_split)
    _check_memory(model, opt, batch_size, Xd.shape[0])
    comm = _communicator(comm)
    reducer = None if comm is None else GradientAllReduce(comm, model.backend)
    try:  # binds the optimizer: refused before any change
        step = Step(model, entry, opt, grad_hooks=() if reducer is None else [reducer])
    except ValueError as exc:
        raise ValueError(f"fit: {exc}") from None

    model.optimizer = opt
    step.guard = Guard(model, check_every, step.kernels)
    history = History()
    if comm is not None and comm.rank != 0:
        callbacks, verbose = [cb for cb in callbacks if not cb.rank_zero_only], 0
    callbacks = _with_defaults(history, callbacks, verbose)
    run = _Run(model, step, Xd, Td, val, epochs, data.batch_bounds(Xd.shape[0], batch_size),
               callbacks, [cb for cb in callbacks
                           if type(cb).on_batch_end is not Callback.on_batch_end],
               rng, shuffle, history, comm, reducer)
    with explaining_out_of_memory(model, "fit", batch_size, Xd.shape[0]):
        return _train(run)


def _host_rng(seed):
    try:
        return data.host_rng(seed)
    except ValueError as exc:
        raise ValueError(f"fit: {exc}") from None


def _communicator(comm):
    """``comm`` if it spans more than one process; None for no comm or a single process
    (which then trains exactly as without one)."""
    if comm is None:
        return None
    if not all(hasattr(comm, name) for name in ("rank", "size", "allreduce_",
                                               "allreduce_scalar")):
        raise TypeError(f"fit: comm must be a communicator (xpnet.distributed.init()); "
                        f"got {type(comm).__name__}")
    return comm if comm.size > 1 else None


def _validation_split(validation_split, validation_data) -> float:
    split = checks.real("fit", "validation_split", validation_split, 0.0, 1.0, high_open=True)
    if split and validation_data is not None:
        raise ValueError(f"fit: pass validation_data or validation_split={validation_split}, "
                         "not both (the split would be ignored)")
    return split


def _callbacks(callbacks) -> list:
    """The callbacks as a list, each one an xpnet Callback instance."""
    if isinstance(callbacks, Callback):
        name = type(callbacks).__name__
        raise TypeError(f"fit: callbacks must be a list of Callback objects; got one "
                        f"{name}: pass callbacks=[{name}(...)]")
    try:
        callbacks = list(callbacks or ())
    except TypeError:
        raise TypeError(f"fit: callbacks must be a list of Callback objects; got "
                        f"{type(callbacks).__name__}") from None
    for cb in callbacks:
        if isinstance(cb, type):
            raise TypeError(f"fit: callbacks must be xpnet Callback objects; got type "
                            f"{cb.__name__} (a class): pass an instance: {cb.__name__}()")
        if not isinstance(cb, Callback):
            raise TypeError(
                f"fit: callbacks must be xpnet Callback objects; got {type(cb).__name__}"
            )
    return callbacks


def _check_memory(model, optimizer, batch_size, n_samples: int) -> None:
    """Refuse, before the first step allocates them, gradients, optimizer state, a batch's
    activations and the divergence guard's snapshot that would not fit."""
    widths = model.dense_widths
    if len(widths) < 2:  # only layers of the user's own: nothing the estimate describes
        return
    check_fits(model.backend, widths, n_samples if batch_size is None else
               min(batch_size, n_samples), len(optimizer.slot_names()), "fit",
               advice="lower batch_size or the layer widths (the largest layer first)",
               snapshots=1, built=True)


def _device_data(model, X, y, loss, validation_data, validation_split):
    """(X, T, (X_val, T_val) or None) validated and on the model's device."""
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, loss, Xd)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (X_val, y_val)")
        Xv = model.device_inputs(validation_data[0], "X_val")
        return Xd, Td, (Xv, model.device_targets(validation_data[1], loss, Xv, "y_val"))
    if not validation_split:
        return Xd, Td, None
    n_val = int(round(Xd.shape[0] * validation_split))
    if n_val < 1 or n_val >= Xd.shape[0]:
        raise ValueError(f"fit: validation_split={validation_split} of {Xd.shape[0]} "
                         "samples leaves no validation or no training data")
    cut = Xd.shape[0] - n_val
    return Xd[:cut, ...], Td[:cut, ...], (Xd[cut:, ...], Td[cut:, ...])


def _warn_if_output_squashed(model, loss: losses.Loss) -> None:
    """The classification losses take logits: a final Softmax/Sigmoid layer would apply the
    squashing twice and train slowly, with no error to tell why."""
    last = model.layers[-1]
    if loss.classification and isinstance(last, (Softmax, Sigmoid)):
        warnings.warn(
            f"fit: loss {loss.name!r} takes logits, but the model ends in "
            f"{type(last).__name__}, so it is applied twice; drop the last layer for "
            "training (apply it to predictions instead)", UserWarning, stacklevel=4)


def _with_defaults(history, callbacks, verbose) -> list:
    """History first, then the user's callbacks, a TerminateOnNaN and a progress display."""
    out = [history, *callbacks]
    if not any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
        out.append(TerminateOnNaN())
    if verbose:
        from .progress import ProgressBar

        out.append(ProgressBar(verbose=int(verbose)))
    return out


def _train(run: _Run) -> History:
    model = run.model
    model.history = run.history
    model.stop_training = False
    for cb in run.callbacks:
        cb.set_model(model)
    # Ctrl-C is held from the first on_train_begin to the last on_train_end (interrupts.py)
    with deferred_interrupts() as pending:
        began = []  # the callbacks whose on_train_begin returned: they get an on_train_end
        try:
            for cb in run.callbacks:
                cb.on_train_begin({"epochs": run.epochs, "batches": len(run.bounds),
                                   "samples": run.X.shape[0]})
                began.append(cb)
            with model.backend.quiet():
                for epoch in range(run.epochs):
                    _epoch(run, epoch, pending)
                    pending.check()  # held through the epoch's evaluation and callbacks
                    if model.stop_training:
                        break
        except BaseException as exc:  # callbacks close their files and bars, also on Ctrl-C
            for cb in began:
                cb.on_train_end({"error": exc})
            stoppers = [cb for cb in run.callbacks if isinstance(cb, TerminateOnNaN)]
            if not isinstance(exc, DivergenceError) or not all(cb.on_divergence(exc)
                                                               for cb in stoppers):
                raise
            return run.history
        for cb in run.callbacks:
            cb.on_train_end({})
    return run.history


def _epoch(run: _Run, epoch: int, pending) -> None:
    model, step = run.model, run.step
    xp = model.backend.xp
    n = run.X.shape[0]
    for cb in run.callbacks:
        cb.on_epoch_begin(epoch, {})
    step.refresh()  # a callback may have changed the optimizer's config
    order = None
    if run.shuffle and len(run.bounds) > 1:
        order = xp.asarray(run.rng.permutation(n), device=model.backend.device)
    total = None
    for b, (lo, hi) in enumerate(run.bounds):
        start, stop, rng = _my_rows(run, lo, hi)
        if order is None:
            Xb, Tb = run.X[start:stop, ...], run.T[start:stop, ...]
        else:  # gathered per batch: the epoch is never copied whole
            rows = order[start:stop]
            Xb, Tb = xp.take(run.X, rows, axis=0), xp.take(run.T, rows, axis=0)
        value = step(Xb, Tb, rng=rng, where=(epoch, b))
        pending.check()
        weighted = value * (hi - lo)
        total = weighted if total is None else total + weighted
        if run.per_batch:
            batch_logs = {"size": hi - lo, "seen": hi, "loss_sum": total}
            for cb in run.per_batch:
                cb.on_batch_end(b, batch_logs)
    step.guard.after_update(step.count, total, (epoch, len(run.bounds) - 1), force=True)
    logs = {"loss": float(total) / n}
    if run.val is not None:
        for key, value in _evaluate_device(model, *run.val, step.loss, step.kernels).items():
            logs[f"val_{key}"] = value
    for cb in run.callbacks:
        cb.on_epoch_end(epoch, logs)


def _my_rows(run: _Run, lo: int, hi: int):
    """This process's rows ``(start, stop)`` of the batch ``[lo, hi)`` and the RNG its
    forward pass draws from (dropout masks drawn for the whole batch, then sliced)."""
    if run.reducer is None:
        return lo, hi, run.rng
    start, stop = shard(lo, hi, run.comm.rank, run.comm.size)
    run.reducer.share = (stop - start) / (hi - lo)
    if start == stop:  # a mean over no rows is NaN: train on one row, weighted 0
        start, stop = lo, lo + 1
    return start, stop, ShardedRNG(run.rng, hi - lo, (start - lo, stop - lo))


def _evaluate_device(model, X, T, loss: losses.Loss, kernels, batch_size=None) -> dict:
    xp = model.backend.xp
    Y = model.predict_device(X, batch_size)
    value, _ = loss.value_and_grad(kernels, xp, Y, T)  # the formula fit trains with
    return {"loss": float(value), **metrics.device_metrics(xp, Y, T, loss.name)}


def evaluate(model, X, y, loss: str = "mse", batch_size: int | None = None) -> dict:
    """``{"loss": ...}`` plus ``"accuracy"`` for classification losses, or ``"mse"``,
    ``"mae"`` and ``"r2"`` for regression (all floats, computed on the device)."""
    entry = losses.resolve(loss)
    batch_size = checks.integer("evaluate", "batch_size", batch_size, 1, allow_none=True)
    Xd = model.device_inputs(X)
    Td = model.device_targets(y, entry, Xd)
    with explaining_out_of_memory(model, "evaluate", batch_size, Xd.shape[0]):
        return _evaluate_device(model, Xd, Td, entry, model.backend.kernels, batch_size)
