"""Callbacks: small objects that ``fit`` calls at fixed points of training.

The protocol (every method optional, all no-ops on the base class)::

    set_model(model)                     before training, once
    on_train_begin(logs)                 logs: {}
    on_epoch_begin(epoch, logs)
    on_batch_end(batch, logs)            logs: {"size": n}; the loss is not read here, since
                                         reading it would synchronise the device every batch
    on_epoch_end(epoch, logs)            logs: {"loss": ..., "val_loss": ..., metrics ...}
    on_train_end(logs)

A callback stops training by setting ``model.stop_training = True``. Epochs are numbered
from 0.
"""

from __future__ import annotations

import math


class Callback:
    """Base class; override the hooks you need."""

    model = None

    def set_model(self, model) -> None:
        """Called once before training with the model being trained."""
        self.model = model

    def on_train_begin(self, logs: dict) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        """Before each epoch (numbered from 0)."""

    def on_batch_end(self, batch: int, logs: dict) -> None:
        """After each batch; ``logs`` holds its ``size`` (not the loss: no device sync)."""

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
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0; got {patience!r}")
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0; got {min_delta!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max'; got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best_weights, self.mode = restore_best_weights, mode

    def on_train_begin(self, logs):
        self.best = None
        self.best_epoch = None
        self.best_params = None
        self.wait = 0
        self.stopped_epoch = None

    def _sign(self, key: str) -> float:
        mode = self.mode
        if mode == "auto":
            mode = "max" if any(w in key for w in ("acc", "r2")) else "min"
        return 1.0 if mode == "min" else -1.0

    def on_epoch_end(self, epoch, logs):
        key = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
        if key not in logs:
            raise KeyError(f"EarlyStopping: monitor {key!r} is not logged; have {sorted(logs)}")
        value = self._sign(key) * logs[key]
        if math.isfinite(value) and (self.best is None or value < self.best - self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_params = self.model.snapshot()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_params is not None:
            self.model.restore(self.best_params)
