"""Signals sent to real processes while they train or save: the harness behind test_interrupts.

Run as ``python tests/interrupt_harness.py SCENARIO --trials N --seed S --folder DIR``; it
prints one JSON line: ``{"scenario", "trials", "failures", "counts", "seconds"}``.

One long-lived process per scenario (this one, the "runner") imports xpnet once, then forks
a victim per trial and signals it from outside after a random delay drawn from a seeded
RNG, so a trial costs a fork, not an interpreter start. The victim is the process under
test; what must hold afterwards is checked by the victim itself where it survives (SIGINT
during ``fit``) and by the runner where it does not (SIGKILL) or where the file on disk is
the point (``save``, ``ModelCheckpoint``).

Scenarios:

- ``fit-sigint`` (``--backend``, ``--optimizer``, ``--signals`` 1 or 2): the victim trains
  until interrupted, then replays ``optimizer.iterations`` clean steps from the same seed
  and compares bit for bit, and checks the callbacks (on_train_end got the
  KeyboardInterrupt, the CSV log is closed and complete, EarlyStopping restored its best
  weights) and ``model.history``.
- ``save-sigkill``, ``save-sigint``: the victim saves two models in turn to one path; the
  file must be absent (nothing saved yet), or one of the two, complete.
- ``checkpoint-sigkill``, ``checkpoint-sigint``: the victim trains with a ModelCheckpoint;
  the file must be absent or equal the model at the end of some epoch.

After SIGKILL a ``.xpnet-*.tmp`` may be left (documented); after SIGINT none may.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import select
import signal
import sys
import time

import numpy as np

import xpnet as xn

TRIAL_TIMEOUT_S = 60.0  # a victim that takes longer than this is hung: a failure


# --------------------------------------------------------------------------- model state


def host_state(model) -> dict:
    """Host copies of the parameters (``param/<name>``), the optimizer state
    (``opt/<name>/<slot>``) and ``iterations``: what an update changes."""
    to_host = model.backend.to_numpy
    state: dict = {f"param/{k}": np.array(to_host(v), copy=True) for k, v in model.params.items()}
    opt = model.optimizer
    if opt is not None:
        state.update({f"opt/{k}": np.array(to_host(v), copy=True)
                      for k, v in opt.state_arrays().items()})
        state["iterations"] = opt.iterations
    return state


def differences(got: dict, want: dict) -> list[str]:
    """The names whose values differ bit for bit; an optimizer slot that one side has not
    created yet counts as zeros (state is created on the first update)."""
    out = []
    for name in sorted(got.keys() | want.keys()):
        a, b = got.get(name), want.get(name)
        if name.startswith("opt/"):
            a = np.zeros_like(b) if a is None else a
            b = np.zeros_like(a) if b is None else b
        if name == "iterations" or a is None or b is None:
            if a != b:
                out.append(f"{name}: {a!r} != {b!r}")
        elif a.shape != b.shape or a.tobytes() != b.tobytes():
            out.append(f"{name} differs")
    return out


# --------------------------------------------------------------------------- fit and replay

BATCH = 8
N_TRAIN = 64  # 8 batches per epoch: epoch ends (validation, callbacks) are often hit
FOREVER = 10**6  # epochs: training only ends when interrupted


def fit_data():
    """A small seeded regression problem and its validation split."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N_TRAIN + 16, 4))
    y = np.tanh(X @ np.array([1.0, -2.0, 0.5, 0.25])) + 0.1 * rng.standard_normal(len(X))
    return (X[:N_TRAIN], y[:N_TRAIN]), (X[N_TRAIN:], y[N_TRAIN:])


def new_optimizer(name: str):
    """A fresh optimizer: "sgd" is SGD with momentum (it has state), "adam" is Adam."""
    if name == "sgd":
        return xn.SGD(lr=0.05, momentum=0.9)
    return xn.Adam(lr=0.01)


def new_model(backend: str):
    return xn.mlp([4, 16, 1], seed=0, backend=backend)


def fit_to_the_end(model, optimizer, callbacks, epochs=FOREVER):
    """The one training call every fit trial and its replay make."""
    (X, y), val = fit_data()
    return model.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=BATCH,
                     validation_data=val, callbacks=callbacks, seed=3)


class _Replayed(Exception):
    """Raised by ``StopAfter`` to end a replay after exactly the steps asked for."""


class StopAfter(xn.Callback):
    """Stop training, by raising ``_Replayed``, once the optimizer has made ``steps`` updates."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_batch_end(self, batch, logs):
        if self.model.optimizer.iterations == self.steps:
            raise _Replayed


def replay(backend: str, optimizer: str, steps: int) -> dict:
    """``host_state`` of a model trained cleanly for exactly ``steps`` updates."""
    model, opt = new_model(backend), new_optimizer(optimizer)
    if steps:
        with contextlib.suppress(_Replayed):
            fit_to_the_end(model, opt, [StopAfter(steps)])
    model.optimizer = opt
    return host_state(model)


class Recorder(xn.Callback):
    """Watches a fit: whether it began, each epoch end's state, how it ended, and the state
    at on_train_end before the callbacks after it (EarlyStopping) change it."""

    def __init__(self):
        self.began = False
        self.epoch_states: list[dict] = []
        self.ended_with: str | None = None  # the type name of logs["error"], or "" if none
        self.state_at_end: dict | None = None

    def on_train_begin(self, logs):
        self.began = True

    def on_epoch_end(self, epoch, logs):
        self.epoch_states.append(host_state(self.model))

    def on_train_end(self, logs):
        error = logs.get("error")
        self.ended_with = "" if error is None else type(error).__name__
        self.state_at_end = host_state(self.model)


class WatchedCSV(xn.CSVLogger):
    """A CSVLogger that remembers the file object it opened, to check that it was closed."""

    opened = None

    def on_train_begin(self, logs):
        super().on_train_begin(logs)
        self.opened = self._file


def check_fit(model, opt_name, backend, recorder, csv, stopper, whole) -> tuple[int, list[str]]:
    """(k, the problems found) after a fit that a signal interrupted. ``whole``: one Ctrl-C
    was sent, so none raised at once and every callback that ran ran to its end."""
    opt = model.optimizer
    k = opt.iterations if opt is not None else 0
    interrupted = recorder.state_at_end or host_state(model)
    problems = [f"not {k} clean steps: {d}"
                for d in differences(interrupted, replay(backend, opt_name, k))]
    if not recorder.began:
        return k, problems
    if recorder.ended_with != "KeyboardInterrupt":
        problems.append(f"on_train_end got error {recorder.ended_with!r}, not KeyboardInterrupt")
    if csv.opened is not None and not csv.opened.closed:
        problems.append("the CSV log was left open")
    if not isinstance(model.history, xn.History):
        problems.append(f"model.history is {model.history!r}")
    elif whole:
        problems += _check_epochs(model.history, recorder, csv, k)
    return k, problems + _check_restored(model, recorder, stopper, whole)


def _check_epochs(history, recorder, csv, k) -> list[str]:
    """History, CSV log and step count agree on the epochs that finished."""
    finished = len(recorder.epoch_states)
    if history.epoch != list(range(finished)):
        return [f"model.history is {history!r}, not the {finished} finished epochs"]
    if not finished * (N_TRAIN // BATCH) <= k <= (finished + 1) * (N_TRAIN // BATCH):
        return [f"{k} steps do not fit {finished} finished epochs"]
    return _check_csv(csv.path, history)


def _check_csv(path, history) -> list[str]:
    """The log holds a header and one full row per finished epoch, equal to the History."""
    with open(path, newline="") as fh:
        rows = [line.rstrip("\r\n").split(",") for line in fh]
    if not history.epoch:
        return [] if len(rows) <= 1 else [f"CSV has {len(rows)} lines before any epoch ended"]
    header, body = rows[0], rows[1:]
    if len(body) != len(history.epoch) or any(len(r) != len(header) for r in body):
        return [f"CSV has rows {body!r} for {len(history.epoch)} epochs"]
    keys = header[1:]
    for i, row in enumerate(body):
        if [float(v) for v in row[1:]] != [history.history[key][i] for key in keys]:
            return [f"CSV row {i} {row!r} differs from the History"]
    return []


def _check_restored(model, recorder, stopper, whole) -> list[str]:
    """EarlyStopping(restore_best_weights=True) left the model at its best epoch's weights:
    with ``whole``, those of the epoch with the best val_loss in the History; without, those
    of some epoch up to the best one (a Ctrl-C that raised at once may have cut its
    on_epoch_end between noting the best epoch and copying its weights)."""
    if getattr(stopper, "best_epoch", None) is None:  # not begun, or no epoch ended
        return []
    losses = model.history.history["val_loss"]
    if whole and stopper.best_epoch != losses.index(min(losses)):
        return [f"EarlyStopping's best epoch {stopper.best_epoch} is not the best val_loss"]
    now = _params(host_state(model))
    candidates = [stopper.best_epoch] if whole else range(stopper.best_epoch + 1)
    if any(not differences(now, _params(recorder.epoch_states[e])) for e in candidates):
        return []
    return [f"weights not restored to epoch {stopper.best_epoch}"]


def _params(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("param/")}


def fit_victim(args, ready_fd, result_fd, folder) -> None:
    """Train until interrupted, then write ``{"k", "where", "problems"}`` to ``result_fd``."""
    model, opt = new_model(args.backend), new_optimizer(args.optimizer)
    recorder, csv = Recorder(), WatchedCSV(os.path.join(folder, "log.csv"))
    stopper = xn.EarlyStopping(monitor="val_loss", patience=FOREVER, restore_best_weights=True)
    outcome = "returned"
    try:
        try:
            os.write(ready_fd, b"r")
            fit_to_the_end(model, opt, [recorder, csv, stopper])
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # this trial's later signals
    except KeyboardInterrupt:  # the second signal, landing just before the line above
        outcome = "interrupted"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    model.optimizer = opt  # an interrupt before fit bound it leaves none on the model
    k, problems = check_fit(model, args.optimizer, args.backend, recorder, csv, stopper,
                            whole=args.signals == 1)
    if outcome != "interrupted":
        problems.append(f"fit {outcome} instead of raising KeyboardInterrupt")
    where = "before training" if not recorder.began else f"epoch {len(recorder.epoch_states)}"
    _write_json(result_fd, {"k": k, "where": where, "problems": problems})


# --------------------------------------------------------------------------- save


SAVE_SIZES = [64, 256, 64]  # ~130 KB a file: a signal often lands inside a write


def trained(seed: int):
    """A model with optimizer state, so a checkpoint holds both."""
    rng = np.random.default_rng(seed)
    model = xn.mlp(SAVE_SIZES, seed=seed)
    X = rng.standard_normal((16, SAVE_SIZES[0]))
    model.fit(X, X, optimizer=xn.Adam(lr=1e-3), epochs=1, batch_size=8)
    return model


def save_victim(models, ready_fd, path) -> None:
    """Save the two models to ``path`` in turn, forever; a KeyboardInterrupt ends it."""
    try:
        os.write(ready_fd, b"r")
        i = 0
        while True:
            models[i % 2].save(path)
            i += 1
    except KeyboardInterrupt:
        pass


def check_file(path, expected: list[dict]) -> tuple[str, list[str]]:
    """("absent" or the index of the state the file holds, problems)."""
    if not os.path.exists(path):
        return "absent", []
    try:
        got = host_state(xn.load(path))
    except xn.CheckpointError as exc:
        return "broken", [f"the checkpoint does not load: {exc}"]
    for i, want in enumerate(expected):
        if not differences(got, want):
            return str(i), []
    return "other", ["the checkpoint is none of the expected states"]


# --------------------------------------------------------------------------- ModelCheckpoint

CKPT_SIZES = [32, 256, 32]
CKPT_EPOCHS = 25


def checkpoint_data():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((16, CKPT_SIZES[0]))
    return X, X[:, ::-1].copy()


def checkpoint_fit(callbacks):
    """The fit a ModelCheckpoint trial runs: a save takes a good share of each epoch."""
    model = xn.mlp(CKPT_SIZES, seed=5)
    X, y = checkpoint_data()
    model.fit(X, y, optimizer=xn.Adam(lr=1e-3), epochs=CKPT_EPOCHS, batch_size=8,
              callbacks=callbacks, seed=1)
    return model


def epoch_end_states() -> tuple[list[dict], float]:
    """The state at every epoch end of a clean ``checkpoint_fit``, and its duration."""
    recorder = Recorder()
    start = time.perf_counter()
    checkpoint_fit([recorder])
    return recorder.epoch_states, time.perf_counter() - start


def checkpoint_victim(ready_fd, path) -> None:
    try:
        os.write(ready_fd, b"r")
        checkpoint_fit([xn.ModelCheckpoint(path)])
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- the runner


def _write_json(fd, obj) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


RESEND_AFTER_S = 1.0  # a victim still running this long after a SIGINT lost it: send another


def _read_all(fd, pid, resend: bool) -> tuple[bytes, int]:
    """Everything the victim writes to ``fd`` until it exits, and how many SIGINTs had to
    be sent again (Python drops a KeyboardInterrupt raised inside a ``__del__``)."""
    chunks, resent = [], 0
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the victim did not finish")
        if not select.select([fd], [], [], min(left, RESEND_AFTER_S))[0]:
            if resend:
                os.kill(pid, signal.SIGINT)
                resent += 1
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), resent
        chunks.append(chunk)


def run_trial(victim, signals: list[tuple[float, int]]) -> dict:
    """Fork ``victim(ready_fd, result_fd)``, send ``signals`` ((delay after it is ready or
    after the previous signal, signal number)); return what it wrote (``out``), its wait
    ``status`` and the number of SIGINTs ``resent``."""
    ready_r, ready_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the victim: never returns into the runner's code
        status = 1
        try:
            os.close(ready_r)
            os.close(result_r)
            victim(ready_w, result_w)
            status = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(result_w)
    out, resent = b"", 0
    try:
        if not select.select([ready_r], [], [], TRIAL_TIMEOUT_S)[0] or not os.read(ready_r, 1):
            raise TimeoutError("the victim never became ready")
        for delay, signum in signals:
            _sleep(delay)
            os.kill(pid, signum)
        out, resent = _read_all(result_r, pid, resend=signals[-1][1] == signal.SIGINT)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
    finally:
        os.close(ready_r)
        os.close(result_r)
    return {"out": out, "status": os.waitpid(pid, 0)[1], "resent": resent}


def _sleep(seconds: float) -> None:
    """Sleep, spinning for the last stretch: ``time.sleep`` alone overshoots short delays."""
    end = time.perf_counter() + seconds
    if seconds > 0.002:
        time.sleep(seconds - 0.002)
    while time.perf_counter() < end:
        pass


def run_fit(args, rng, trial_folder) -> dict:
    """One fit-sigint trial: ``{"found": where it was interrupted, "problems", "resent"}``."""
    signals = [(float(rng.uniform(0.0, 0.03)), signal.SIGINT)]
    if args.signals == 2:
        signals.append((float(rng.uniform(0.0, 0.003)), signal.SIGINT))
    done = run_trial(lambda r, w: fit_victim(args, r, w, trial_folder), signals)
    if not done["out"]:
        return {"found": "no result", "resent": done["resent"],
                "problems": [f"the victim died (wait status {done['status']}) or hung"]}
    report = json.loads(done["out"])
    return {"found": report["where"], "resent": done["resent"],
            "problems": [f"k={report['k']} ({report['where']}): {p}"
                         for p in report["problems"]]}


def run_save(args, rng, trial_folder, models, expected) -> dict:
    """One save trial: ``{"found": what the file holds, "problems", "resent", "tmp"}``."""
    path = os.path.join(trial_folder, "model.npz")
    signum = signal.SIGKILL if args.scenario == "save-sigkill" else signal.SIGINT
    done = run_trial(lambda r, w: save_victim(models, r, path),
                     [(float(rng.uniform(0.0, 0.03)), signum)])
    return {**_judge_file(path, expected, signum), "resent": done["resent"]}


def run_checkpoint(args, rng, trial_folder, expected, seconds) -> dict:
    """One ModelCheckpoint trial: ``{"found": the epoch on disk, "problems", "resent", "tmp"}``."""
    path = os.path.join(trial_folder, "ckpt.npz")
    signum = signal.SIGKILL if args.scenario == "checkpoint-sigkill" else signal.SIGINT
    delay = float(rng.uniform(0.0, 1.1 * seconds))
    done = run_trial(lambda r, w: checkpoint_victim(r, path), [(delay, signum)])
    return {**_judge_file(path, expected, signum), "resent": done["resent"]}


def _judge_file(path, expected, signum) -> dict:
    found, problems = check_file(path, expected)
    strays = glob.glob(os.path.join(os.path.dirname(path), ".xpnet-*.tmp"))
    if strays and signum != signal.SIGKILL:
        problems.append(f"temporary files left after SIGINT: {strays}")
    return {"found": found, "problems": problems, "tmp": len(strays)}


def main(argv=None) -> None:
    args = _parse(argv)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    if args.backend == "torch":
        import torch

        torch.set_num_threads(1)
    trial = _trial_function(args)
    summary = {"scenario": args.scenario, "trials": args.trials, "counts": {},
               "failures": [], "resent": 0, "tmp": 0}
    for i in range(args.trials):
        folder = os.path.join(args.folder, f"t{i}")
        os.makedirs(folder)
        result = trial(rng, folder)
        summary["counts"][result["found"]] = summary["counts"].get(result["found"], 0) + 1
        summary["failures"] += [f"trial {i}: {p}" for p in result["problems"]]
        summary["resent"] += result["resent"]
        summary["tmp"] += result.get("tmp", 0)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary))


def _trial_function(args):
    """``trial(rng, folder) -> {"found", "problems", "resent"[, "tmp"]}`` for the scenario."""
    if args.scenario == "fit-sigint":
        new_model(args.backend)  # import the backend's library once, before forking
        return lambda rng, folder: run_fit(args, rng, folder)
    if args.scenario.startswith("save-"):
        models = [trained(1), trained(2)]
        expected = [host_state(m) for m in models]
        return lambda rng, folder: run_save(args, rng, folder, models, expected)
    expected, seconds = epoch_end_states()
    return lambda rng, folder: run_checkpoint(args, rng, folder, expected, seconds)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["fit-sigint", "save-sigkill", "save-sigint",
                                             "checkpoint-sigkill", "checkpoint-sigint"])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    parser.add_argument("--signals", type=int, default=1, choices=[1, 2])
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
