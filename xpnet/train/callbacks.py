"""Callbacks: small objects that ``fit`` calls at fixed points of training.

The protocol (every method optional, all no-ops on the base class)::

    set_model(model)                     before training, once
    on_train_begin(logs)                 logs: {"epochs": E, "batches": B, "samples": N}
    on_epoch_begin(epoch, logs)
    on_batch_end(batch, logs)            logs: {"size": n, "seen": samples so far this epoch,
                                         "loss_sum": 0-d device array, "loss": float or
                                         None}; ``loss_sum`` (the sample-weighted loss so
                                         far) is left unread, since reading it would
                                         synchronise the device; ``loss`` is its mean read
                                         for free: every batch where reads are cheap, else
                                         right after a divergence check, None otherwise
    on_epoch_end(epoch, logs)            logs: {"loss": ..., "val_loss": ..., metrics ...}
    on_train_end(logs)                   logs: {} or {"error": exc} when training raised

A callback stops training by setting ``model.stop_training = True``. Epochs are numbered
from 0. ``fit`` always records a History and, unless one is given, adds a TerminateOnNaN.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

from .. import checks

__all__ = [
    "CSVLogger", "Callback", "CosineDecay", "EarlyStopping", "ExponentialDecay", "History",
    "LearningRateScheduler", "ModelCheckpoint", "StepDecay", "TerminateOnNaN",
]


class Callback:
    """Base class; override the hooks you need.

    ``rank_zero_only``: in a run over many processes (``fit(comm=...)``), only rank 0
    keeps this callback (those that write files or print).

    ``wants_batch_loss``: set True to find each batch's loss as a float in
    ``on_batch_end``'s ``logs["batch_loss"]``. Reading it is a host read every batch: on
    a GPU or JAX that waits for the device each step, so leave it False unless needed
    (``logs["loss"]``, the epoch's running mean, is filled where it costs nothing).
    """

    # any object with the network protocol (train/ never imports the model class); set by
    # set_model before training
    model: Any = None
    rank_zero_only = False
    wants_batch_loss = False

    def set_model(self, model) -> None:
        """Called once before training with the model being trained."""
        self.model = model

    def on_train_begin(self, logs: dict) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        """Before each epoch (numbered from 0)."""

    def on_batch_end(self, batch: int, logs: dict) -> None:
        """After each batch; ``logs`` holds its ``size``, ``seen``, the running ``loss``
        where it is free, and ``batch_loss`` if ``wants_batch_loss``."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """After each epoch; ``logs`` holds the epoch's loss and validation metrics."""

    def on_train_end(self, logs: dict) -> None:
        """After the last epoch (also after an early stop)."""


class History(Callback):
    """Records every epoch's logs: ``history.history["loss"]`` is a list of floats."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``monitor`` defaults to "val_loss" and falls back to "loss" without validation data.
    ``mode`` "min", "max" or "auto" (max for accuracy-like names). With
    ``restore_best_weights`` the model ends with the parameters of its best epoch.
    """

    def __init__(self, monitor: str | None = None, patience: int = 0, min_delta: float = 0.0,
                 restore_best_weights: bool = False, mode: str = "auto"):
        owner = "EarlyStopping"
        self.monitor, self.mode = _monitor(owner, monitor), _mode(owner, mode)
        self.patience = checks.integer(owner, "patience", patience, 0)
        self.min_delta = checks.real(owner, "min_delta", min_delta, 0.0)
        self.restore_best_weights = checks.boolean(owner, "restore_best_weights",
                                                   restore_best_weights)

    def on_train_begin(self, logs):
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.wait = 0
        self.stopped_epoch = None

    def _sign(self, key: str) -> float:
        return -1.0 if _higher_is_better(key, self.mode) else 1.0

    def on_epoch_end(self, epoch, logs):
        key = _monitored("EarlyStopping", self.monitor, logs)
        value = self._sign(key) * logs[key]
        if math.isfinite(value) and (self.best is None or value < self.best - self.min_delta):
            if self.restore_best_weights:  # first: a cut never leaves best without weights
                self.best_params = self.model.snapshot()
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs):
        error = logs.get("error")
        if error is not None and not isinstance(error, KeyboardInterrupt):
            return  # the divergence guard has restored weights: keep them
        if self.restore_best_weights and self.best_params is not None:
            self.model.restore(self.best_params)


def _monitor(owner: str, monitor) -> str | None:
    if monitor is not None and not isinstance(monitor, str):
        raise ValueError(f"{owner}: monitor must be None or the name of a logged value such "
                         f"as 'val_loss'; got {monitor!r}")
    return monitor


def _mode(owner: str, mode) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max'; got {mode!r}")
    return mode


def _file_path(owner: str, path) -> str:
    """``path`` as a str whose folder exists: checked before training, not after it."""
    path = checks.path(owner, "path", path)
    checks.existing_folder(owner, path)
    return path


def _monitored(owner: str, monitor: str | None, logs: dict) -> str:
    """The logged name to watch: ``monitor``, else "val_loss" when present, else "loss"."""
    key = monitor or ("val_loss" if "val_loss" in logs else "loss")
    if key not in logs:
        raise KeyError(f"{owner}: monitor {key!r} is not logged; have {sorted(logs)}")
    return key


def _higher_is_better(key: str, mode: str) -> bool:
    if mode == "auto":
        return any(word in key for word in ("acc", "r2"))
    return mode == "max"


class ModelCheckpoint(Callback):
    """Save the model to ``path`` at the end of epochs, atomically (``model.save``).

    ``path`` may hold format fields filled from the epoch (from 0) and its logs, as in
    ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``. With ``save_best_only`` a file is written
    only when ``monitor`` (default "val_loss", else "loss") improves; ``mode`` "auto"
    maximises accuracy-like names and minimises the rest. Each write goes to a temporary
    file that is fsynced and then renamed, so a crash never leaves a half-written file.
    The folder of ``path`` must exist when the callback is made.
    """

    rank_zero_only = True

    def __init__(self, path, monitor: str | None = None, save_best_only: bool = False,
                 mode: str = "auto"):
        owner = "ModelCheckpoint"
        self.path = _file_path(owner, path)
        if not self.path.endswith(".npz"):
            raise ValueError(f"ModelCheckpoint: path must end in .npz; got {self.path!r}")
        self.monitor, self.mode = _monitor(owner, monitor), _mode(owner, mode)
        self.save_best_only = checks.boolean(owner, "save_best_only", save_best_only)
        self.best: float | None = None
        self.saved: list[str] = []

    def on_train_begin(self, logs):
        self.best = None

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only:
            key = _monitored("ModelCheckpoint", self.monitor, logs)
            value = logs[key] if _higher_is_better(key, self.mode) else -logs[key]
            if not math.isfinite(value) or (self.best is not None and value <= self.best):
                return
            self.best = value
        target = self.path.format(epoch=epoch, **logs)
        self.model.save(target)
        self.saved.append(target)


class TerminateOnNaN(Callback):
    """Stop training at the first non-finite loss; on by default in every ``fit``.

    ``fit`` checks for divergence itself (every step on CPU backends, every
    ``check_every`` steps on GPUs and JAX) and leaves the model at its last finite
    weights. With ``raise_error=True`` (the default) that raises ``DivergenceError``;
    with ``raise_error=False`` training stops cleanly instead: ``fit`` returns the
    History so far and this callback records ``stopped_epoch`` and ``error``. A
    non-finite value in the epoch logs (such as an overflowing ``val_loss``) sets
    ``model.stop_training``, so training ends after that epoch without an error.
    """

    def __init__(self, raise_error: bool = True):
        self.raise_error = checks.boolean("TerminateOnNaN", "raise_error", raise_error)
        self.stopped_epoch: int | None = None
        self.error: BaseException | None = None

    def on_train_begin(self, logs):
        self.stopped_epoch, self.error = None, None

    def on_divergence(self, error: BaseException) -> bool:
        """Called by ``fit`` with the DivergenceError; True means: stop without raising."""
        self.error, self.stopped_epoch = error, getattr(error, "epoch", None)
        return not self.raise_error

    def on_epoch_end(self, epoch, logs):
        bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
        if bad:
            self.stopped_epoch = epoch
            self.error = FloatingPointError(f"non-finite {', '.join(bad)} at epoch {epoch}")
            self.model.stop_training = True


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch: ``lr = fn(epoch, lr)``.

    ``fn`` gets the epoch (from 0) and the current rate, and returns the new one (a
    positive finite number). ``self.history`` lists the rate used in each epoch.
    Subclasses override ``schedule`` instead and pass no ``fn``.
    """

    def __init__(self, fn: Callable[[int, float], float] | None = None):
        if fn is not None and not callable(fn):
            raise TypeError(f"LearningRateScheduler: fn must be callable; got {fn!r}")
        if fn is None and type(self).schedule is LearningRateScheduler.schedule:
            # caught here rather than as "'NoneType' object is not callable" at epoch 0
            raise TypeError(f"{type(self).__name__} needs fn, a function (epoch, lr) -> new "
                            "lr, or a subclass that overrides schedule(epoch, lr)")
        self.fn = fn
        self.history: list[float] = []

    def on_train_begin(self, logs):
        if self.model.optimizer is None:
            raise ValueError(f"{type(self).__name__}: the model has no optimizer to schedule")
        self.initial_lr = self.model.optimizer.lr

    def schedule(self, epoch: int, lr: float) -> float:
        """The rate for ``epoch`` given the current ``lr``; subclasses override this."""
        assert self.fn is not None  # __init__ refuses no fn unless schedule is overridden
        return self.fn(epoch, lr)

    def on_epoch_begin(self, epoch, logs):
        lr = checks.real(type(self).__name__, f"learning rate for epoch {epoch}",
                         self.schedule(epoch, self.model.optimizer.lr), 0.0, low_open=True)
        self.model.optimizer.lr = lr
        self.history.append(lr)


class StepDecay(LearningRateScheduler):
    """Multiply the starting rate by ``factor`` every ``every`` epochs."""

    def __init__(self, factor: float = 0.5, every: int = 10):
        super().__init__()
        self.factor = checks.real("StepDecay", "factor", factor, 0.0, 1.0, low_open=True)
        self.every = checks.integer("StepDecay", "every", every, 1)

    def schedule(self, epoch, lr):
        return self.initial_lr * self.factor ** (epoch // self.every)


class ExponentialDecay(LearningRateScheduler):
    """``lr = initial_lr * rate ** epoch``."""

    def __init__(self, rate: float = 0.95):
        super().__init__()
        self.rate = checks.real("ExponentialDecay", "rate", rate, 0.0, 1.0, low_open=True)

    def schedule(self, epoch, lr):
        return self.initial_lr * self.rate ** epoch


class CosineDecay(LearningRateScheduler):
    """Half a cosine from the starting rate down to ``min_lr`` over ``epochs`` epochs.

    After ``epochs`` the rate stays at ``min_lr`` (which must be > 0 if reached).
    """

    def __init__(self, epochs: int, min_lr: float = 1e-6):
        super().__init__()
        self.epochs = checks.integer("CosineDecay", "epochs", epochs, 1)
        self.min_lr = checks.real("CosineDecay", "min_lr", min_lr, 0.0, low_open=True)

    def schedule(self, epoch, lr):
        progress = min(epoch, self.epochs) / self.epochs
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.initial_lr - self.min_lr) * cosine


class CSVLogger(Callback):
    """Write one CSV row per epoch to ``path``: the epoch (from 0) and every logged value.

    The header is written with the first row; ``append=True`` adds to an existing file
    without repeating it. Each row is flushed, so the file can be read while training.
    The folder of ``path`` must exist when the callback is made.
    """

    rank_zero_only = True

    def __init__(self, path, separator: str = ",", append: bool = False):
        owner = "CSVLogger"
        self.path = _file_path(owner, path)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character; got {separator!r}")
        self.separator = separator
        self.append = checks.boolean(owner, "append", append)
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs):
        has_rows = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._keys = None
        self._header_written = has_rows

    def on_epoch_end(self, epoch, logs):
        if self._keys is None:
            self._keys = list(logs)
            if not self._header_written:
                self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch, *(repr(float(logs.get(k, math.nan))) for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs):
        if self._file is not None:
            self._file.close()
            self._file = None
