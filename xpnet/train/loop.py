"""The training loop (``fit``), ``evaluate`` and ``predict``.

The batches come from a data source (``data.sources``): arrays moved to the device once
and gathered per batch through one host permutation per epoch, memory-mapped arrays read
a batch of rows at a time, or an iterable of batches; every update is one call of the
``Step``. The loss is summed on the device and read once per epoch, so nothing
synchronises per step except the divergence check on backends where reading a scalar is
cheap (``backend.cheap_reads``).

The loop works on any model with the network protocol (``docs/architecture.md``): it
never imports the model class.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import checks, data
from ..backend import explaining_out_of_memory
from ..backend.memory import check_fits
from ..data import sources
from ..distributed import GradientAllReduce, ShardedRNG, shard
from ..interrupts import deferred_interrupts
from ..nn import losses
from ..nn import optim as optimizers
from ..nn.layers import ModelError, Sigmoid, Softmax, walk
from . import graphs as graphs_
from . import metrics
from .callbacks import Callback, History, TerminateOnNaN
from .guard import DivergenceError, Guard
from .step import Step

__all__ = ["DivergenceError", "evaluate", "fit", "predict"]


@dataclass
class _Run:
    """Everything one ``fit`` call trains with, validated and on the device."""

    model: Any
    step: Step
    data: Any  # the training data source (data.sources), validated
    val: Any  # the validation data source, or None
    epochs: int
    bounds: list | None  # each batch's rows; None for an iterable of batches
    callbacks: list
    per_batch: list  # the callbacks that override on_batch_end (only they cost per batch)
    rngs: Any  # epoch -> that epoch's host Generator (data.epoch_rngs)
    shuffle: bool
    history: History
    comm: Any = None  # a Communicator of more than one process, else None
    reducer: GradientAllReduce | None = None  # the step's gradient all-reduce hook
    shard: Callable = sources.all_rows  # this process's rows (start, stop) of a batch [lo, hi)
    initial_epoch: int = 0
    rng: Any = None  # the current epoch's Generator
    class_weights: Callable | None = None  # T -> each row's class weight (device), or None
    max_steps: int | None = None  # stop after this many updates
    batch_loss: bool = False  # a callback asked for each batch's loss (a host read each)


def fit(model, X, y=None, loss: str = "mse", optimizer="sgd", epochs: int = 1,
        batch_size: int | None = 32, validation_data=None, validation_split: float = 0.0,
        callbacks: Iterable[Callback] = (), seed: int | None = 0, verbose: int = 0,
        shuffle: bool = True, lr: float | None = None, check_every: int = 50,
        comm=None, initial_epoch: int = 0, graphs: bool | str = "auto", sample_weight=None,
        class_weight=None, max_steps: int | None = None) -> History:
    """Train ``model`` on (X, y) and return a History (also kept as ``model.history``).

    - ``X``, ``y``: arrays (NumPy, any backend's, nested lists), or memory-mapped NumPy
      arrays (``np.load(path, mmap_mode="r")``, ``np.memmap``), which are read a batch of
      rows at a time and never held whole; or, with ``y`` omitted, ``X`` an iterable of
      ``(X, y)`` batches read afresh each epoch (a list, a ``torch.utils.data.DataLoader``;
      a generator only for ``epochs=1``). For an iterable, ``batch_size`` and ``shuffle``
      do not apply (its batches come as it yields them: shuffle in the loader), nor does
      ``validation_split``; each batch is validated as it arrives, the first before
      anything changes, and a bad later one stops training with an error naming it.
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
    - ``seed``: shuffling and dropout masks, drawn on the host (same order on every backend);
      each epoch has its own stream derived from the seed (``data.epoch_rngs``).
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
    - ``initial_epoch``: resume, as Keras: train epochs ``initial_epoch`` to ``epochs - 1``.
      With the model and optimizer of a checkpoint (``model = xn.load(path)``, then
      ``optimizer=model.optimizer``) and the same data, seed and batch size, the epochs
      are those the uninterrupted run would have trained (on any number of processes).
    - ``sample_weight``: one non-negative weight per sample (not all zero): each batch's
      loss is ``sum(w_i * l_i) / sum(w_i)``, ``l_i`` sample i's loss (for mse, its mean
      over the outputs). Split along with X by ``validation_split``; the validation loss
      is unweighted. Not with an iterable of batches.
    - ``class_weight``: for "cross_entropy" and single-output "binary_cross_entropy", a
      mapping ``{label: weight}`` (missing labels weigh 1) or one weight per class: each
      sample weighs its label's weight, as ``torch.nn.CrossEntropyLoss(weight=...)``;
      multiplied with ``sample_weight`` when both are given. A batch whose weights are all
      zero adds a zero gradient.
    - ``max_steps``: stop after this many updates, mid-epoch if need be; that epoch's
      logs cover the batches it trained, and ``history.history["steps"]`` records the
      updates made by the end of each epoch.
    - ``graphs``: "auto" captures the step as a CUDA graph and replays it where the
      backend can (torch on CUDA) and the step allows (no Dropout, hooks or own layers;
      ``xpnet.train.graphs``), the short last batch running eagerly; True insists and
      refuses, naming the backend or layer and the reason, where it cannot; False never.

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
    initial_epoch = checks.integer("fit", "initial_epoch", initial_epoch, 0)
    if initial_epoch > epochs:
        raise ValueError(f"fit: initial_epoch={initial_epoch} is past epochs={epochs} "
                         "(epochs is the last epoch's number plus one, as in Keras)")
    max_steps = checks.integer("fit", "max_steps", max_steps, 1, allow_none=True)
    rngs = _epoch_rngs(seed)
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
    comm = _communicator(comm)
    if comm is not None:
        _refuse_layer_state(model)
        if sample_weight is not None or class_weight is not None:
            raise ValueError("fit(comm=...): sample_weight and class_weight are not supported "
                             "over many processes yet (each shard's share of the global batch "
                             "would have to be its share of the weights); train in one process")
    weights_of = _class_weights(model, entry, class_weight)
    train, val = _sources(model, X, y, entry, validation_data, validation_split, epochs,
                          sample_weight)
    n = train.n_samples
    rows = train.first_rows if n is None else n
    _check_memory(model, opt, None if n is None else batch_size, rows,
                  1 if comm is None else comm.size)
    reducer = None if comm is None else GradientAllReduce(comm, model.backend)
    hooks = () if reducer is None else [reducer]
    capture = graphs_.wanted("fit", graphs, model, entry, opt, hooks)
    try:  # binds the optimizer: refused before any change
        step = Step(model, entry, opt, grad_hooks=hooks, graphs=graphs if capture else False)
    except ValueError as exc:
        raise ValueError(f"fit: {exc}") from None

    model.optimizer = opt
    step.guard = Guard(model, check_every, step.kernels)
    history = History()
    if comm is not None and comm.rank != 0:
        callbacks, verbose = [cb for cb in callbacks if not cb.rank_zero_only], 0
    callbacks = _with_defaults(history, callbacks, verbose)
    run = _Run(model, step, train, val, epochs,
               None if n is None else data.batch_bounds(n, batch_size),
               callbacks, [cb for cb in callbacks
                           if type(cb).on_batch_end is not Callback.on_batch_end],
               rngs, shuffle, history, comm, reducer,
               sources.all_rows if comm is None else lambda lo, hi: _rows(comm, lo, hi),
               initial_epoch, None, weights_of, max_steps,
               any(cb.wants_batch_loss for cb in callbacks))
    with explaining_out_of_memory(model, "fit", batch_size, rows):
        return _train(run)


def _refuse_layer_state(model) -> None:
    """Data-parallel training equals one process only for layers without state: a
    BatchNorm on each shard would normalise by, and keep, that shard's statistics, not the
    global batch's (that needs an all-reduce inside the forward pass: a SyncBatchNorm)."""
    for path, layer in walk(model.layers):
        if layer.state_shapes() and not layer.sublayers():
            raise ModelError(
                f"fit(comm=...): layer {path} ({type(layer).__name__}) keeps state computed "
                "from each batch, which over many processes would be each shard's, not the "
                "global batch's (xpnet has no synchronised BatchNorm); use LayerNorm, or "
                "train in one process")


def _epoch_rngs(seed):
    try:
        return data.epoch_rngs(seed)
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


def _check_memory(model, optimizer, batch_size, n_samples: int, ranks: int = 1) -> None:
    """Refuse, before the first step allocates them, gradients, optimizer state, a batch's
    activations and the divergence guard's snapshot that would not fit. With ``ranks``
    processes a step holds only this process's shard: at most ceil(batch / ranks) rows."""
    widths = model.dense_widths
    if len(widths) < 2:  # only layers of the user's own: nothing the estimate describes
        return
    batch = n_samples if batch_size is None else min(batch_size, n_samples)
    check_fits(model.backend, widths, -(-batch // ranks), len(optimizer.slot_names()), "fit",
               advice="lower batch_size or the layer widths (the largest layer first)",
               snapshots=1, built=True)


def _sources(model, X, y, loss, validation_data, validation_split, epochs,
             sample_weight=None):
    """The training and validation data sources (``data.sources``), every row of arrays
    validated (an iterable's first batch), before anything changes."""
    if y is None and sources.is_batches(X):
        if sample_weight is not None:
            raise ValueError("fit: sample_weight needs X and y as arrays; an iterable of "
                             "batches has no rows to match it with (use class_weight, or "
                             "arrays)")
        if validation_split:
            raise ValueError("fit: validation_split cannot split an iterable of batches (it "
                             "is not known whole before it is read); pass validation_data="
                             "(X_val, y_val)")
        train = sources.Batches(model, X, loss, epochs)
    else:
        W = None if sample_weight is None else data.sample_weights(
            "fit", sample_weight, _rows_of(X))
        train = sources.source(model, X, y, loss, W=W)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (X_val, y_val)")
        val = sources.source(model, *validation_data, loss, ("X_val", "y_val"))
    elif validation_split:
        n = train.n_samples
        n_val = int(round(n * validation_split))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"fit: validation_split={validation_split} of {n} "
                             "samples leaves no validation or no training data")
        train, val = train.split(n - n_val)
    train.validate()  # a memory-mapped file is read through once here
    if val is not None:
        val.validate()
    return train, val


def _rows_of(X) -> int:
    """How many samples ``X`` holds (before validation: ``len`` of a nested list)."""
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else len(X)


def _class_weights(model, loss: losses.Loss, class_weight):
    """``T -> weights`` giving each row of encoded targets its class's weight, on the
    model's device; None without ``class_weight``."""
    if class_weight is None:
        return None
    if loss.name not in ("cross_entropy", "binary_cross_entropy"):
        raise ValueError(f"fit: class_weight needs a classification loss (cross_entropy or "
                         f"binary_cross_entropy); got loss {loss.name!r} (use sample_weight)")
    n_out = model.n_out
    if loss.name == "binary_cross_entropy" and n_out != 1:
        raise ValueError(f"fit: class_weight with binary_cross_entropy needs one output "
                         f"(labels 0 and 1); the model has {n_out}")
    n_classes = 2 if loss.name == "binary_cross_entropy" else n_out
    if n_classes is None:
        raise ValueError("fit: class_weight needs a model whose output width is known")
    backend = model.backend
    xp, table = backend.xp, backend.asarray(data.class_weights("fit", class_weight, n_classes))
    if loss.name == "cross_entropy":  # one-hot (or distribution) rows: the likeliest class
        return lambda T: xp.take(table, xp.argmax(T, axis=1), axis=0)
    return lambda T: xp.take(table, xp.astype(T[:, 0] >= 0.5, xp.int64), axis=0)


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
                cb.on_train_begin({"epochs": run.epochs,
                                   "batches": run.data.batches_per_epoch(run.bounds),
                                   "samples": run.data.n_samples})
                began.append(cb)
            with model.backend.quiet():
                for epoch in range(run.initial_epoch, run.epochs):
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
    for cb in run.callbacks:
        cb.on_epoch_begin(epoch, {})
    step.refresh()  # a callback may have changed the optimizer's config
    run.rng = run.rngs(epoch)
    skipped_before = step.skipped
    order = None
    if run.shuffle and run.data.shuffles and run.bounds and len(run.bounds) > 1:
        order = run.rng.permutation(run.data.n_samples)
    total, seen, b = None, 0, 0
    with contextlib.closing(run.data.epoch(run.bounds, order, run.shard)) as batches:
        for b, batch in enumerate(batches):
            weights = batch.W
            if run.class_weights is not None:
                by_class = run.class_weights(batch.T)
                weights = by_class if weights is None else weights * by_class
            value = step(batch.X, batch.T, rng=_batch_rng(run, batch.lo, batch.hi),
                         weights=weights, where=(epoch, b))
            pending.check()
            weighted = value * (batch.hi - batch.lo)
            total = weighted if total is None else total + weighted
            seen = batch.hi
            if run.per_batch:
                batch_logs = {"size": batch.hi - batch.lo, "seen": seen, "loss_sum": total,
                              "loss": _running_loss(model.backend, step, total, seen)}
                if run.batch_loss:  # asked for: one host read per batch (a sync on a GPU)
                    batch_logs["batch_loss"] = float(value)
                for cb in run.per_batch:
                    cb.on_batch_end(b, batch_logs)
            if not model.backend.cheap_reads:  # the next check reads it in its own host copy
                assert step.guard is not None  # fit sets it before training
                step.guard.carry(total, seen)
            if run.max_steps is not None and step.count >= run.max_steps:
                model.stop_training = True  # the last update asked for: end here
                break
    logs = {"loss": _epoch_loss(model.backend, step, total, seen, (epoch, b))}
    if step.loss_scaler is not None:  # float16: updates left out for overflowing gradients
        logs["skipped_steps"] = step.skipped - skipped_before
    if run.max_steps is not None:
        logs["steps"] = step.count
    if run.val is not None:
        for key, value in _evaluate_source(model, run.val, step.loss, step.kernels).items():
            logs[f"val_{key}"] = value
    for cb in run.callbacks:
        cb.on_epoch_end(epoch, logs)


def _running_loss(backend, step, total, seen: int) -> float | None:
    """The epoch's mean loss so far as a host float where it costs no extra device read:
    every batch where reads are cheap, else only right after a divergence check read it
    (None between checks)."""
    if backend.cheap_reads:
        return float(total) / seen
    carried = step.guard.carried
    if carried is None or carried[2] != step.count:
        return None
    return carried[0] / carried[1]


def _epoch_loss(backend, step, total, n: int, where) -> float:
    """The epoch's mean loss, after the epoch-end divergence check; where reads are
    expensive that check's one host copy brings the total along."""
    if not backend.cheap_reads:
        step.guard.carry(total, n)
    step.guard.after_update(step.count, total, where, force=True)
    if backend.cheap_reads:
        return float(total) / n
    return step.guard.carried[0] / n


def _rows(comm, lo: int, hi: int) -> tuple[int, int]:
    """This process's rows ``(start, stop)`` of the batch ``[lo, hi)``."""
    start, stop = shard(lo, hi, comm.rank, comm.size)
    if start == stop:  # a mean over no rows is NaN: train on one row, weighted 0
        return lo, lo + 1
    return start, stop


def _batch_rng(run: _Run, lo: int, hi: int):
    """The RNG this process's forward pass of the batch ``[lo, hi)`` draws from (dropout
    masks drawn for the whole batch, then sliced); sets the all-reduce's share."""
    if run.reducer is None:
        return run.rng
    start, stop = shard(lo, hi, run.comm.rank, run.comm.size)
    run.reducer.share = (stop - start) / (hi - lo)
    start, stop = _rows(run.comm, lo, hi)
    return ShardedRNG(run.rng, hi - lo, (start - lo, stop - lo))


def _evaluate_source(model, source, loss: losses.Loss, kernels, batch_size=None) -> dict:
    """Loss and metrics over a data source: predictions of each chunk of its rows, joined
    (outputs and targets only: a mapped X is never held whole), then the same formulas as
    one batch; in memory the single chunk is all of it."""
    xp = model.backend.xp
    with contextlib.closing(source.chunks(batch_size)) as chunks:
        parts = [(model.predict_device(X, batch_size), T, W) for X, T, W in chunks]
    Y, T, W = parts[0] if len(parts) == 1 else (
        xp.concat([p[0] for p in parts], axis=0), xp.concat([p[1] for p in parts], axis=0),
        None if parts[0][2] is None else xp.concat([p[2] for p in parts], axis=0))
    if W is not None:
        W = W / xp.sum(W)
    value, _ = loss.value_and_grad(kernels, xp, Y, T, W)  # the formula fit trains with
    unread = {"loss": (value, 1), **metrics.unread_metrics(xp, Y, T, loss.name, W)}
    if model.backend.cheap_reads:
        return {name: float(v) / divisor for name, (v, divisor) in unread.items()}
    # one host copy for the loss and every metric: each read would wait for the device
    stacked = xp.stack([xp.astype(v, value.dtype) for v, _ in unread.values()])
    host = model.backend.to_numpy(stacked)
    pairs = zip(unread.items(), host, strict=True)
    return {name: float(h) / divisor for (name, (_, divisor)), h in pairs}


def evaluate(model, X, y, loss: str = "mse", batch_size: int | None = None,
             sample_weight=None) -> dict:
    """``{"loss": ...}`` plus ``"accuracy"`` for classification losses, or ``"mse"``,
    ``"mae"`` and ``"r2"`` for regression (all floats, computed on the device). A
    memory-mapped X or y is read and checked a chunk of rows at a time."""
    entry = losses.resolve(loss)
    batch_size = checks.integer("evaluate", "batch_size", batch_size, 1, allow_none=True)
    W = None if sample_weight is None else data.sample_weights(
        "evaluate", sample_weight, _rows_of(X))
    source = sources.source(model, X, y, entry, W=W)
    with explaining_out_of_memory(model, "evaluate", batch_size, source.n_samples):
        return _evaluate_source(model, source, entry, model.backend.kernels, batch_size)


def predict(model, X, batch_size: int | None = None):
    """The model's outputs for ``X`` on its backend; a memory-mapped X is read and checked
    a chunk of rows at a time (only the outputs are held whole)."""
    batch_size = checks.integer("predict", "batch_size", batch_size, 1, allow_none=True)
    if sources.mapping_of(X) is None:
        return model.predict_device(model.device_inputs(X), batch_size)
    source = sources.Mapped(model, X, None, None)
    with contextlib.closing(source.chunks(batch_size)) as chunks:
        parts = [model.predict_device(Xc, batch_size) for Xc, _, _ in chunks]
    return parts[0] if len(parts) == 1 else model.backend.xp.concat(parts, axis=0)

