"""Progress display for ``fit``: a tqdm bar per epoch (verbose=1) or a line per epoch (verbose=2).

``fit`` adds a ProgressBar when ``verbose`` is 1 or 2. tqdm is optional (the ``progress``
extra); without it verbose=1 prints the same plain line per epoch as verbose=2.
"""

from __future__ import annotations

import math
import sys
from typing import TextIO

from .. import checks
from .callbacks import Callback

__all__ = ["ProgressBar"]


def _fmt(logs: dict) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in logs.items())


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class ProgressBar(Callback):
    """Shows training progress; ``verbose`` 1: a bar per epoch, 2: one line per epoch.

    The bar advances every batch (host-side counting, free). Its running-loss postfix is
    the host value ``fit`` passes in the batch logs (``"loss"``): every batch where a read
    costs nothing extra (NumPy, torch CPU, array-api-strict), and on GPUs and JAX only when
    a divergence check has just read it, since reading a device scalar waits for all queued
    work. Given only the device total (``"loss_sum"``, by another loop), the bar reads it
    every batch where reads are cheap and every ``every`` batches elsewhere.
    """

    rank_zero_only = True

    def __init__(self, verbose: int = 1, every: int = 20, file: TextIO | None = None):
        if verbose not in (1, 2):
            raise ValueError(f"ProgressBar: verbose must be 1 or 2; got {verbose!r}")
        self.every = checks.integer("ProgressBar", "every", every, 1)
        self.verbose, self.file = verbose, file
        self._tqdm = _tqdm() if verbose == 1 else None
        self._bar = None
        self.lines: list[str] = []

    def on_train_begin(self, logs):
        self.epochs = logs.get("epochs")
        self.batches = logs.get("batches")
        self._read_every = 1 if self.model.backend.cheap_reads else self.every

    def _out(self) -> TextIO:
        return self.file if self.file is not None else sys.stdout

    def on_epoch_begin(self, epoch, logs):
        if self._tqdm is not None:
            self._bar = self._tqdm(total=self.batches, desc=self._epoch_name(epoch),
                                   unit="batch", leave=True, file=self.file, dynamic_ncols=True)

    def _epoch_name(self, epoch: int) -> str:
        return f"epoch {epoch + 1}/{self.epochs}" if self.epochs else f"epoch {epoch + 1}"

    def on_batch_end(self, batch, logs):
        if self._bar is None:
            return
        self._bar.update(1)
        if "loss" in logs:  # fit's running mean, read only when reading costs nothing
            value = logs["loss"]
        else:
            value = self._read(batch, logs.get("loss_sum"), logs.get("seen"))
        if value is not None and math.isfinite(value):
            self._bar.set_postfix_str(f"loss={value:.4g}", refresh=False)

    def _read(self, batch, total, seen) -> float | None:
        """The running loss read from the device, at most every ``every`` batches, for
        loops that do not hand over a host value."""
        if total is None or not seen or (batch + 1) % self._read_every:
            return None
        return float(total) / seen

    def on_epoch_end(self, epoch, logs):
        line = f"{self._epoch_name(epoch)} {_fmt(logs)}"
        self.lines.append(line)
        if self._bar is not None:
            self._bar.set_postfix_str(_fmt(logs), refresh=False)
            self._bar.close()
            self._bar = None
            return
        print(line, file=self._out(), flush=True)

    def on_train_end(self, logs):
        if self._bar is not None:  # training raised mid-epoch: leave the terminal tidy
            self._bar.close()
            self._bar = None
