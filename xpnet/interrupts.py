"""Ctrl-C during training lands between updates, never inside one.

An in-place update is several array operations (Adam: the moments, then the weights; on
backends without views, one parameter after another), and a KeyboardInterrupt raised
between two of them would leave some arrays at step k and others at step k-1 with the
optimizer counting k. ``fit`` runs inside ``deferred_interrupts()``, which replaces the
SIGINT handler for the block. Precisely:

- A Ctrl-C is held (noted, nothing raised) when none is pending, and raised as a
  KeyboardInterrupt by ``check()``, which ``fit`` calls after every step and after every
  epoch's callbacks; one still held when the block ends normally is raised then. So a
  Ctrl-C that lands in a step, or in ``on_train_begin``, ``on_epoch_begin`` or
  ``on_batch_end``, is raised when that (or the next) step has finished; one in an
  epoch's evaluation or ``on_epoch_end``, once all of that epoch's callbacks have run; one
  in ``on_train_end`` (``fit`` runs those inside the block too, so files close and
  EarlyStopping restores even on a second Ctrl-C), once they all have, unless an error is
  already ending ``fit``: that error propagates instead.
- A Ctrl-C that arrives while another one is pending raises at once (a callback that
  hangs can still be stopped), except inside an ``atomic()`` block (a parameter update:
  ``Step._update``, the traced JAX step; a checkpoint write: ``io.checkpoint.save``):
  those finish first, and the KeyboardInterrupt is raised at the next check. Raising
  clears what was pending, so the next Ctrl-C is held again. A Ctrl-C that raised at
  once may cut a callback short (a CSV row, a History entry); parameters and
  optimizer state are always those of a whole number of updates (``optimizer.iterations``
  of them).
- Installing and removing the handler are safe against a Ctrl-C at that moment: one that
  arrives before the handler is installed raises at once, before any training; one that
  arrives while it is removed is held and raised on a normal exit.
- Nothing is changed outside the main thread (only the main thread receives
  KeyboardInterrupt, so a ``fit`` in another thread is never interrupted by Ctrl-C) or
  when SIGINT is not Python's default handler: the program's own handler or SIG_IGN is
  left alone (a handler that raises gets none of these guarantees), and a ``fit`` inside
  another's callback leaves the outer one's handler, which raises at the outer boundary.

``protected()`` is both at once for work that may run outside ``fit`` too (a checkpoint
write): there it holds Ctrl-C itself and raises it when the block is done.

SIGKILL cannot be caught; what holds then is the checkpoint's guarantee (``save`` leaves
the old or the new file, possibly a ``.xpnet-*.tmp`` beside it).

This module is on the ground floor (it imports nothing of xpnet), so the training step and
the checkpoint writer below and above each other can both mark their atomic work.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["atomic", "deferred_interrupts", "protected"]


class _Pending:
    """What the block sees: ``check()`` raises KeyboardInterrupt when Ctrl-C was pressed."""

    def __init__(self):
        self.hit = False

    def check(self) -> None:
        """Raise the held KeyboardInterrupt, if there is one."""
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt


class _Hold:
    """The SIGINT handler inside the block: holds a Ctrl-C, or raises one that follows a
    pending one, unless the frame it lands in is inside an update or a save."""

    def __init__(self, pending: _Pending):
        self.pending = pending
        self.closing = False  # set while the handler is removed: then everything is held

    def __call__(self, signum, frame) -> None:
        if self.pending.hit and not self.closing and not getattr(_atomic, "depth", 0):
            self.pending.hit = False
            raise KeyboardInterrupt
        self.pending.hit = True


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT to step boundaries inside the block (see the module docstring)."""
    pending = _Pending()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield pending
        return
    hold = _Hold(pending)
    signal.signal(signal.SIGINT, hold)  # a Ctrl-C already pending raises here, unchanged
    try:
        yield pending
    finally:
        hold.closing = True
        if signal.getsignal(signal.SIGINT) is hold:  # leave a handler set inside alone
            signal.signal(signal.SIGINT, signal.default_int_handler)
    pending.check()  # reached on a normal exit only: a Ctrl-C held to the end is not lost


_atomic = threading.local()  # how many atomic() blocks this thread is inside


class _Atomic:
    """``with atomic():`` marks work a second Ctrl-C must not cut short (an update, a
    write). A class, not a generator: it runs once per training step."""

    __slots__ = ()

    def __enter__(self) -> None:
        _atomic.depth = getattr(_atomic, "depth", 0) + 1

    def __exit__(self, *exc) -> None:
        _atomic.depth -= 1


_ATOMIC = _Atomic()


def atomic() -> _Atomic:
    """A block that a Ctrl-C never interrupts midway inside ``deferred_interrupts``."""
    return _ATOMIC


@contextlib.contextmanager
def protected():
    """``atomic()`` inside ``deferred_interrupts()``: for work that may also run outside
    ``fit`` (outside, the Ctrl-C is held to the end of the block and raised there)."""
    with deferred_interrupts(), _ATOMIC:
        yield
