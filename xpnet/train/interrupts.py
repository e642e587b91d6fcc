"""Ctrl-C during training lands between updates, never inside one.

An in-place update is several array operations (Adam: the moments, then the weights), and
a KeyboardInterrupt raised between two of them would leave some arrays at step k and
others at step k-1. ``deferred_interrupts()`` holds SIGINT while the block runs: the first
Ctrl-C is noted and raised by ``check()`` at the next step boundary; a second one raises at
once (a step that hangs can still be stopped). Outside the main thread, or when the
program has its own SIGINT handler, nothing is changed.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class _Pending:
    """What the block sees: ``check()`` raises KeyboardInterrupt when Ctrl-C was pressed."""

    def __init__(self):
        self.hit = False

    def check(self) -> None:
        """Raise the held KeyboardInterrupt, if there is one."""
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT to step boundaries inside the block (see the module docstring)."""
    pending = _Pending()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield pending
        return

    def hold(signum, frame):
        if pending.hit:  # the second Ctrl-C: the user means it
            raise KeyboardInterrupt
        pending.hit = True

    signal.signal(signal.SIGINT, hold)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
