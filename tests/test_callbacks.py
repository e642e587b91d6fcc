"""Callbacks: History, EarlyStopping monitors, ModelCheckpoint, TerminateOnNaN, schedules, CSV."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

import xpnet as xn
from xpnet.train.callbacks import (
    CosineDecay,
    CSVLogger,
    ExponentialDecay,
    LearningRateScheduler,
    ModelCheckpoint,
    StepDecay,
    TerminateOnNaN,
)


def _regression(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5]) + 0.3


def _classes(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _host(model) -> dict:
    return {k: model.backend.to_numpy(v).copy() for k, v in model.params.items()}


# ----------------------------------------------------------------------------- History, validation


def test_history_keeps_every_metric_per_epoch_for_regression():
    X, y = _regression()
    model = xn.mlp([3, 8, 1], seed=0)
    history = model.fit(X[:32], y[:32], optimizer=xn.Adam(lr=0.01), epochs=3, batch_size=8,
                        validation_data=(X[32:], y[32:]))
    assert set(history.history) == {"loss", "val_loss", "val_mse", "val_mae", "val_r2"}
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())
    final = model.evaluate(X[32:], y[32:])
    for key in ("loss", "mse", "mae", "r2"):
        assert history.history[f"val_{key}"][-1] == pytest.approx(final[key], rel=1e-6)


def test_validation_split_holds_out_the_last_fraction():
    X, y = _classes(50)
    model = xn.mlp([2, 6, 2], seed=0)
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=2,
                        batch_size=10, validation_split=0.2)
    held_out = model.evaluate(X[40:], y[40:], loss="cross_entropy")
    assert history.history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(held_out["accuracy"])
    # Trained on the first 40 only: the same as fitting those 40 directly.
    twin = xn.mlp([2, 6, 2], seed=0)
    twin.fit(X[:40], y[:40], loss="cross_entropy", optimizer=xn.Adam(lr=0.01), epochs=2,
             batch_size=10)
    for name, value in _host(twin).items():
        np.testing.assert_array_equal(value, _host(model)[name])


# ----------------------------------------------------------------------------- EarlyStopping


def test_early_stopping_monitors_a_named_metric_in_max_mode():
    X, y = _classes()
    stop = xn.EarlyStopping(monitor="val_accuracy", patience=1)
    model = xn.mlp([2, 4, 2], seed=0)
    history = model.fit(X, y, loss="cross_entropy", optimizer=xn.SGD(lr=1e-6), epochs=30,
                        validation_split=0.25, callbacks=[stop])
    # A rate this small cannot change the accuracy: the first epoch stays the best, and
    # training stops once patience + 1 epochs in a row brought no improvement.
    assert len(history.epoch) == 3 and stop.stopped_epoch == 2
    assert stop.best == -history.history["val_accuracy"][0]


def test_early_stopping_names_a_monitor_that_is_not_logged():
    X, y = _regression()
    with pytest.raises(KeyError, match="val_accuracy"):
        xn.mlp([3, 1], seed=0).fit(X, y, epochs=1,
                                  callbacks=[xn.EarlyStopping(monitor="val_accuracy")])


# ----------------------------------------------------------------------------- ModelCheckpoint


class _Scripted(xn.Callback):
    """Replaces the logged loss by a script, to make 'best' epochs known in advance."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, epoch, logs):
        logs["loss"] = self.values[epoch]


def test_checkpoint_save_best_only_keeps_the_best_epoch(tmp_path):
    X, y = _regression()
    path = tmp_path / "best.npz"
    snapshots = []

    class Snap(xn.Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append(_host(self.model))

    ckpt = ModelCheckpoint(path, monitor="loss", save_best_only=True)
    model = xn.mlp([3, 4, 1], seed=0)
    model.fit(X, y, optimizer=xn.SGD(lr=0.01), epochs=4, batch_size=16,
              callbacks=[_Scripted([3.0, 1.0, 2.0, 1.5]), ckpt, Snap()])
    assert ckpt.saved == [str(path), str(path)]  # epochs 0 and 1 improved; 2 and 3 did not
    loaded = xn.load(path)
    for name, value in snapshots[1].items():
        np.testing.assert_array_equal(loaded.backend.to_numpy(loaded.params[name]), value)
    assert [p for p in os.listdir(tmp_path) if p != "best.npz"] == []  # no temp files left


def test_checkpoint_formats_the_epoch_into_the_path(tmp_path):
    X, y = _regression()
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch}.npz")
    xn.mlp([3, 1], seed=0).fit(X, y, epochs=3, callbacks=[ckpt])
    assert sorted(os.listdir(tmp_path)) == ["m-0.npz", "m-1.npz", "m-2.npz"]
    with pytest.raises(ValueError, match=".npz"):
        ModelCheckpoint(tmp_path / "model.pt")


# ----------------------------------------------------------------------------- TerminateOnNaN


def _diverging():
    X, y = _regression()
    return X, y * 100.0, xn.mlp([3, 16, 1], seed=0)


def test_terminate_on_nan_is_on_by_default_and_raises():
    X, y, model = _diverging()
    with pytest.raises(xn.DivergenceError):
        model.fit(X, y, optimizer=xn.SGD(lr=1e3), epochs=50, batch_size=None)


def test_terminate_on_nan_can_stop_cleanly_and_return_the_history():
    X, y, model = _diverging()
    stopper = TerminateOnNaN(raise_error=False)
    history = model.fit(X, y, optimizer=xn.SGD(lr=1e3), epochs=50, batch_size=None,
                        callbacks=[stopper])
    assert isinstance(stopper.error, xn.DivergenceError)
    assert stopper.stopped_epoch == len(history.epoch)  # the diverging epoch is not logged
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert all(np.all(np.isfinite(v)) for v in _host(model).values())


def test_terminate_on_nan_stops_on_a_non_finite_logged_value():
    X, y = _regression()
    stopper = TerminateOnNaN()
    history = xn.mlp([3, 1], seed=0).fit(X, y, epochs=5,
                                         callbacks=[_Scripted([1.0, math.nan, 1.0, 1.0, 1.0]),
                                                    stopper])
    assert len(history.epoch) == 2 and stopper.stopped_epoch == 1


# ----------------------------------------------------------------------- learning-rate schedules


def test_scheduler_sets_the_rate_each_epoch_and_training_follows_it():
    X, y = _regression()
    rates = [0.1, 0.01, 0.05]
    sched = LearningRateScheduler(lambda epoch, lr: rates[epoch])
    model = xn.mlp([3, 4, 1], seed=0)
    opt = xn.SGD(lr=1.0)
    model.fit(X, y, optimizer=opt, epochs=3, batch_size=None, callbacks=[sched])
    assert sched.history == rates and opt.lr == 0.05
    by_hand = xn.mlp([3, 4, 1], seed=0)
    hand_opt = xn.SGD(lr=rates[0])
    for rate in rates:  # full batch: no shuffling, so three one-epoch fits are the same run
        hand_opt.lr = rate
        by_hand.fit(X, y, optimizer=hand_opt, epochs=1, batch_size=None)
    for name, value in _host(by_hand).items():
        np.testing.assert_allclose(_host(model)[name], value, rtol=1e-6)


@pytest.mark.parametrize("schedule, expected", [
    (StepDecay(factor=0.5, every=2), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (ExponentialDecay(rate=0.5), [0.1, 0.05, 0.025, 0.0125, 0.00625]),
    (CosineDecay(epochs=4, min_lr=0.001), [0.1, 0.1 - 0.099 * (1 - math.cos(math.pi / 4)) / 2,
                                           0.0505, 0.001 + 0.099 * (1 - math.cos(math.pi / 4)) / 2,
                                           0.001]),
])
def test_built_in_schedules(schedule, expected):
    X, y = _regression()
    xn.mlp([3, 1], seed=0).fit(X, y, optimizer=xn.SGD(lr=0.1), epochs=5, callbacks=[schedule])
    np.testing.assert_allclose(schedule.history, expected, rtol=1e-12)


def test_scheduler_rejects_a_bad_rate():
    X, y = _regression()
    with pytest.raises(ValueError, match="epoch 0"):
        xn.mlp([3, 1], seed=0).fit(X, y, epochs=1,
                                  callbacks=[LearningRateScheduler(lambda e, lr: -1.0)])


def test_scheduler_without_a_function_fails_at_construction_not_at_the_first_epoch():
    with pytest.raises(TypeError, match="needs fn"):
        LearningRateScheduler()
    with pytest.raises(TypeError, match="needs fn"):
        LearningRateScheduler(fn=None)

    class Forgot(LearningRateScheduler):  # a subclass that overrides nothing
        pass

    with pytest.raises(TypeError, match="Forgot needs fn"):
        Forgot()


def test_scheduler_subclasses_that_override_schedule_need_no_function():
    class Halving(LearningRateScheduler):
        def schedule(self, epoch, lr):
            return self.initial_lr / 2 ** epoch

    halving = Halving()
    X, y = _regression()
    xn.mlp([3, 1], seed=0).fit(X, y, optimizer=xn.SGD(lr=0.1), epochs=3, callbacks=[halving])
    assert halving.history == [0.1, 0.05, 0.025]
    assert StepDecay().fn is None and CosineDecay(epochs=3).fn is None


# ----------------------------------------------------------------------------- CSVLogger


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    X, y = _classes()
    path = tmp_path / "log.csv"
    history = xn.mlp([2, 4, 2], seed=0).fit(X, y, loss="cross_entropy", epochs=3,
                                            validation_split=0.2, callbacks=[CSVLogger(path)])
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values
    xn.mlp([2, 4, 2], seed=0).fit(X, y, loss="cross_entropy", epochs=1, validation_split=0.2,
                                  callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4  # appended, header not repeated


def test_an_error_inside_training_still_closes_the_csv_log(tmp_path):
    X, y = _regression()

    class Boom(xn.Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                raise RuntimeError("boom")

    logger = CSVLogger(tmp_path / "log.csv")
    with pytest.raises(RuntimeError, match="boom"):
        xn.mlp([3, 1], seed=0).fit(X, y, epochs=5, callbacks=[logger, Boom()])
    assert logger._file is None  # closed by on_train_end({"error": ...})
    with open(tmp_path / "log.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]
