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
  hangs can still be stopped), except inside a parameter update (``Step._update``, the
  traced JAX step) or a checkpoint write (``io.checkpoint.save``): those finish first,
  and the KeyboardInterrupt is raised at the next check. Raising clears what was pending,
  so the next Ctrl-C is held again. A Ctrl-C that raised at once may cut a callback short
  (a CSV row, a History entry, EarlyStopping's note of its best epoch); parameters and
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

SIGKILL cannot be caught; what holds then is the checkpoint's guarantee (``save`` leaves
the old or the new file, possibly a ``.xpnet-*.tmp`` beside it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import types

from ..io import checkpoint
from . import step, traced


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
        if self.pending.hit and not self.closing and not _inside_atomic(frame):
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


def _nested_code(function, name: str) -> types.CodeType:
    """The code of the function ``name`` defined inside ``function`` (one per closure)."""
    return next(c for c in function.__code__.co_consts
                if isinstance(c, types.CodeType) and c.co_name == name)


# What must not be cut short: the eager update, the traced step (whose update is three
# assignments) and a checkpoint write.
_ATOMIC = frozenset({step.Step._update.__code__, _nested_code(traced.compiled_step, "step"),
                     checkpoint.save.__code__})


def _inside_atomic(frame) -> bool:
    """Whether ``frame`` runs inside an update or a checkpoint write (``_ATOMIC``)."""
    while frame is not None:
        if frame.f_code in _ATOMIC:
            return True
        frame = frame.f_back
    return False
