"""Ctrl-C and SIGKILL during fit and save: every update is whole, callbacks end, files are
old or new.

The fast tests send SIGINT to this process from inside fit (``signal.raise_signal``) at
chosen points; the slow ones run ``interrupt_harness.py``, which signals forked processes
from outside at random times (see its docstring), 50 or more trials per scenario.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from interrupt_harness import (
    BATCH,
    N_TRAIN,
    Recorder,
    WatchedCSV,
    differences,
    fit_to_the_end,
    host_state,
    new_model,
    new_optimizer,
    replay,
)

import xpnet as xn
from xpnet.io import checkpoint as xio
from xpnet.train import traced

STEPS_PER_EPOCH = N_TRAIN // BATCH


@pytest.fixture(autouse=True)
def _default_sigint_handler():
    """Every test starts from Python's own SIGINT handler and must leave it in place."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    left = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, previous)
    assert left is signal.default_int_handler, f"the SIGINT handler was left as {left!r}"


def press_ctrl_c(times: int = 1) -> None:
    for _ in range(times):
        signal.raise_signal(signal.SIGINT)


class CtrlC(xn.Callback):
    """Presses Ctrl-C ``times`` times at one point of fit: ``when`` is "batch" (after the
    update that makes ``optimizer.iterations == at``), "epoch_end" (epoch ``at``),
    "train_begin" or "train_end"."""

    def __init__(self, when: str, at: int = 0, times: int = 1):
        self.when, self.at, self.times = when, at, times

    def on_train_begin(self, logs):
        if self.when == "train_begin":
            press_ctrl_c(self.times)

    def on_batch_end(self, batch, logs):
        if self.when == "batch" and self.model.optimizer.iterations == self.at:
            press_ctrl_c(self.times)

    def on_epoch_end(self, epoch, logs):
        if self.when == "epoch_end" and epoch == self.at:
            press_ctrl_c(self.times)

    def on_train_end(self, logs):
        if self.when == "train_end":
            press_ctrl_c(self.times)


class EpochsBegun(xn.Callback):
    """Records the epochs whose on_epoch_begin ran."""

    def __init__(self):
        self.epochs = []

    def on_epoch_begin(self, epoch, logs):
        self.epochs.append(epoch)


def interrupted_fit(model, optimizer, callbacks, epochs=5) -> bool:
    """Run the harness's fit; True when it raised KeyboardInterrupt. Catching it here keeps
    a test that goes wrong from ending the whole pytest session."""
    try:
        fit_to_the_end(model, optimizer, callbacks, epochs=epochs)
    except KeyboardInterrupt:
        return True
    return False


def assert_whole_updates(model, optimizer_name="adam", backend="numpy") -> int:
    """The model equals exactly ``optimizer.iterations`` clean steps; returns that count."""
    k = model.optimizer.iterations
    assert differences(host_state(model), replay(backend, optimizer_name, k)) == []
    return k


# ----------------------------------------------------------------------------- during steps


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ctrl_c_mid_fit_finishes_the_running_update(optimizer):
    """Pressed after update 13 (mid-epoch 1): the held Ctrl-C is raised when the next step
    has finished; the model is 14 whole updates and model.history the interrupted one."""
    model = new_model("numpy")
    recorder = Recorder()
    assert interrupted_fit(model, new_optimizer(optimizer), [recorder, CtrlC("batch", 13)])
    assert assert_whole_updates(model, optimizer) == 14
    assert recorder.ended_with == "KeyboardInterrupt"
    assert isinstance(model.history, xn.History)
    assert model.history.epoch == [0]
    assert len(model.history.history["loss"]) == 1


def test_a_second_ctrl_c_raises_at_once_between_updates():
    model = new_model("numpy")
    assert interrupted_fit(model, new_optimizer("adam"), [CtrlC("batch", 13, times=2)])
    assert assert_whole_updates(model) == 13


class CtrlCInsideUpdate(xn.Adam):
    """Adam (the harness's settings) that presses Ctrl-C twice inside update ``at``, after
    ``iterations`` is counted and before any array changes."""

    def __init__(self, at: int):
        super().__init__(lr=0.01)
        self.at = at

    def update(self, p, g, state, xp, inplace, kernels=None):
        if self.iterations == self.at:
            press_ctrl_c(2)
        return super().update(p, g, state, xp, inplace, kernels)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])  # flat, one array a name
def test_a_second_ctrl_c_inside_an_update_waits_for_it(backend):
    if backend not in xn.available():
        pytest.skip(f"{backend} is not installed")
    model = new_model(backend)
    assert interrupted_fit(model, CtrlCInsideUpdate(at=13), [])
    assert assert_whole_updates(model, backend=backend) == 13


def test_a_second_ctrl_c_inside_the_traced_step_waits_for_it(monkeypatch):
    """JAX's traced step swaps in parameters, state and count in three assignments."""
    if "jax" not in xn.available():
        pytest.skip("jax is not installed")
    real = traced.Buffer
    made = []

    def buffer_then_ctrl_c(*args, **kwargs):
        made.append(1)
        if len(made) == 13:
            press_ctrl_c(2)
        return real(*args, **kwargs)

    model = new_model("jax")
    monkeypatch.setattr(traced, "Buffer", buffer_then_ctrl_c)
    interrupted = interrupted_fit(model, new_optimizer("adam"), [])
    monkeypatch.undo()
    assert interrupted
    assert assert_whole_updates(model, backend="jax") == 13


# ----------------------------------------------------------------------------- around steps


def test_ctrl_c_during_an_epoch_end_is_raised_when_its_callbacks_have_run(tmp_path):
    """Held through the rest of epoch 1's callbacks (its CSV row, History entry), raised
    before epoch 2 begins: no update of the next epoch runs."""
    model = new_model("numpy")
    csv, begun = WatchedCSV(tmp_path / "log.csv"), EpochsBegun()
    assert interrupted_fit(model, new_optimizer("adam"), [CtrlC("epoch_end", 1), csv, begun])
    assert assert_whole_updates(model) == 2 * STEPS_PER_EPOCH
    assert begun.epochs == [0, 1]
    assert model.history.epoch == [0, 1]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # the header and 2 rows


def test_ctrl_c_during_the_last_epoch_end_is_not_lost():
    model = new_model("numpy")
    assert interrupted_fit(model, new_optimizer("adam"), [CtrlC("epoch_end", 1)], epochs=2)
    assert model.history.epoch == [0, 1]


def test_ctrl_c_during_on_train_begin_is_raised_after_the_first_step_and_ends_callbacks(
        tmp_path):
    model = new_model("numpy")
    recorder, csv = Recorder(), WatchedCSV(tmp_path / "log.csv")
    assert interrupted_fit(model, new_optimizer("adam"), [recorder, csv, CtrlC("train_begin")])
    assert assert_whole_updates(model) == 1
    assert recorder.ended_with == "KeyboardInterrupt"
    assert csv.opened.closed


class FailsToBegin(xn.Callback):
    def on_train_begin(self, logs):
        raise RuntimeError("cannot begin")


def test_a_callback_that_fails_to_begin_ends_those_that_began(tmp_path):
    model = new_model("numpy")
    recorder, csv = Recorder(), WatchedCSV(tmp_path / "log.csv")
    with pytest.raises(RuntimeError, match="cannot begin"):
        fit_to_the_end(model, new_optimizer("adam"), [recorder, csv, FailsToBegin()], epochs=1)
    assert recorder.ended_with == "RuntimeError"
    assert csv.opened.closed


def test_a_second_ctrl_c_during_on_train_end_still_restores_best_weights(tmp_path):
    """The first Ctrl-C ends training; the second lands while the callbacks end: it is held
    until they have all run, so EarlyStopping restores and the log closes."""
    model = new_model("numpy")
    recorder, csv = Recorder(), WatchedCSV(tmp_path / "log.csv")
    stopper = xn.EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    callbacks = [recorder, CtrlC("batch", 3 * STEPS_PER_EPOCH + 2), CtrlC("train_end"), csv,
                 stopper]
    assert interrupted_fit(model, new_optimizer("adam"), callbacks)
    assert recorder.ended_with == "KeyboardInterrupt"
    assert csv.opened.closed
    best = recorder.epoch_states[stopper.best_epoch]
    now = host_state(model)
    assert all(now[k].tobytes() == best[k].tobytes() for k in now if k.startswith("param/"))


def test_ctrl_c_during_on_train_end_of_a_finished_fit_is_raised_after_all_end(tmp_path):
    model = new_model("numpy")
    csv = WatchedCSV(tmp_path / "log.csv")
    assert interrupted_fit(model, new_optimizer("adam"), [CtrlC("train_end"), csv], epochs=2)
    assert csv.opened.closed
    assert model.history.epoch == [0, 1]


# ----------------------------------------------------------------------------- the handler


def calling_before(monkeypatch, installs, action) -> None:
    """Run ``action()`` just before ``signal.signal`` sets a handler for which
    ``installs(handler)`` is true: a Ctrl-C arriving while fit installs or removes its own."""
    real = signal.signal

    def signal_with_action(signum, handler):
        if signum == signal.SIGINT and installs(handler):
            action()
        return real(signum, handler)

    monkeypatch.setattr(signal, "signal", signal_with_action)


def test_ctrl_c_while_the_handler_is_installed_raises_before_training(monkeypatch):
    calling_before(monkeypatch, lambda h: h is not signal.default_int_handler, press_ctrl_c)
    model, recorder = new_model("numpy"), Recorder()
    assert interrupted_fit(model, new_optimizer("adam"), [recorder])
    monkeypatch.undo()
    assert not recorder.began
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_while_the_handler_is_removed_is_raised_not_lost(monkeypatch, times):
    calling_before(monkeypatch, lambda h: h is signal.default_int_handler,
                   lambda: press_ctrl_c(times))
    model, recorder = new_model("numpy"), Recorder()
    assert interrupted_fit(model, new_optimizer("adam"), [recorder], epochs=2)
    monkeypatch.undo()
    assert recorder.ended_with == ""  # training had ended: the Ctrl-C came after
    assert model.history.epoch == [0, 1]


def test_the_programs_own_sigint_handler_is_left_alone():
    calls = []

    def own(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGINT, own)
    try:
        model = new_model("numpy")
        assert not interrupted_fit(model, new_optimizer("adam"), [CtrlC("batch", 3)], epochs=1)
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class HandlerDuringFit(xn.Callback):
    def on_epoch_end(self, epoch, logs):
        self.seen = signal.getsignal(signal.SIGINT)


def test_fit_in_another_thread_changes_no_handler():
    model, watcher, errors = new_model("numpy"), HandlerDuringFit(), []

    def train():
        try:
            fit_to_the_end(model, new_optimizer("adam"), [watcher], epochs=1)
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert errors == []
    assert watcher.seen is signal.default_int_handler


# ----------------------------------------------------------------------------- saves


def creating_then(monkeypatch, action) -> None:
    """Run ``action()`` right after ``save`` has created its temporary file."""
    real = xio._create_temp

    def create_then_action(*args, **kwargs):
        made = real(*args, **kwargs)
        action()
        return made

    monkeypatch.setattr(xio, "_create_temp", create_then_action)


def test_ctrl_c_twice_during_a_checkpoint_in_fit_leaves_a_whole_file_and_no_temporary(
        tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    model, recorder = new_model("numpy"), Recorder()
    creating_then(monkeypatch, lambda: press_ctrl_c(2))
    assert interrupted_fit(model, new_optimizer("adam"), [recorder, xn.ModelCheckpoint(path)])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]
    assert differences(host_state(xn.load(path)), recorder.epoch_states[0]) == []


def test_ctrl_c_right_after_a_plain_save_creates_its_temporary_waits_for_the_file(
        tmp_path, monkeypatch):
    """Outside fit, save holds Ctrl-C itself: the file is written whole, no temporary is
    left, and the KeyboardInterrupt comes after."""
    model = new_model("numpy")
    creating_then(monkeypatch, lambda: press_ctrl_c(2))
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m.npz")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert differences(host_state(xn.load(tmp_path / "m.npz")), host_state(model)) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ----------------------------------------------------------------------------- the harness

HARNESS = Path(__file__).with_name("interrupt_harness.py")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"),
                                reason="the harness forks and sends SIGKILL (POSIX)")


def run_harness(tmp_path, scenario: str, trials: int, *options: str) -> dict:
    """Run one scenario of the harness in its own process; its JSON summary."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(xn.__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, str(HARNESS), scenario, "--trials", str(trials),
                           "--folder", str(tmp_path / "trials"), *options],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    print(f"{scenario} {' '.join(options)}: {summary['trials']} trials in "
          f"{summary['seconds']} s; found {summary['counts']}; SIGINTs resent "
          f"{summary['resent']}; temporary files left {summary['tmp']}")
    return summary


FIT_CASES = [("numpy", "sgd", 1, 60), ("numpy", "adam", 1, 60), ("numpy", "sgd", 2, 60),
             ("numpy", "adam", 2, 60), ("torch", "sgd", 1, 20), ("torch", "adam", 1, 20)]


@pytest.mark.slow
@needs_fork
@pytest.mark.parametrize(("backend", "optimizer", "signals", "trials"), FIT_CASES)
def test_sigint_during_fit_leaves_whole_updates_and_ended_callbacks(
        tmp_path, backend, optimizer, signals, trials):
    if backend not in xn.available():
        pytest.skip(f"{backend} is not installed")
    summary = run_harness(tmp_path, "fit-sigint", trials, "--backend", backend,
                          "--optimizer", optimizer, "--signals", str(signals),
                          "--seed", str(signals))
    assert summary["failures"] == []
    assert summary["trials"] >= (20 if backend == "torch" else 50)


@pytest.mark.slow
@needs_fork
@pytest.mark.parametrize("scenario", ["save-sigkill", "checkpoint-sigkill",
                                      "checkpoint-sigint"])
def test_a_signal_during_saves_leaves_the_old_or_the_new_file(tmp_path, scenario):
    """After SIGKILL a temporary file may stay (documented); after SIGINT none may."""
    summary = run_harness(tmp_path, scenario, 50)
    assert summary["failures"] == []
    assert summary["trials"] >= 50


@pytest.fixture(scope="module")
def sigint_during_plain_saves(tmp_path_factory) -> dict:
    return run_harness(tmp_path_factory.mktemp("save-sigint"), "save-sigint", 50)


@pytest.mark.slow
@needs_fork
def test_sigint_during_a_plain_save_leaves_the_old_or_the_new_file(sigint_during_plain_saves):
    summary = sigint_during_plain_saves
    assert summary["trials"] >= 50
    assert [f for f in summary["failures"] if "temporary" not in f] == []


@pytest.mark.slow
@needs_fork
def test_sigint_during_a_plain_save_leaves_no_temporary_file(sigint_during_plain_saves):
    assert sigint_during_plain_saves["tmp"] == 0
