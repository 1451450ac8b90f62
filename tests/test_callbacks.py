"""Validation, early stopping, learning-rate schedules, progress and the
callback protocol."""

import io
import math

import numpy as np
import pytest

import backprop as bp
from backprop import callbacks as cb


def digits():
    return bp.datasets.load_digits(return_split=True, seed=0)


def small_net(seed=0, hidden=32):
    return bp.Sequential(
        bp.Dense(64, hidden, activation="relu"),
        bp.Dense(hidden, 10, activation="softmax"),
        loss="cross_entropy",
        seed=seed,
    )


class Record(cb.Callback):
    """Keeps the parameters and the logs of every epoch."""

    def on_train_begin(self, net, logs):
        self.params, self.logs, self.lrs = [], [], []

    def on_epoch_begin(self, net, epoch, logs):
        self.lrs.append(net.optimizer.lr)

    def on_epoch_end(self, net, epoch, logs):
        self.params.append(net.params.copy())
        self.logs.append(dict(logs))


def test_validation_figures_are_the_evaluation_after_each_epoch():
    X_train, X_test, y_train, y_test = digits()
    net, rec = small_net(), Record()
    history = net.fit(
        X_train, y_train, epochs=4, lr=0.1, validation_data=(X_test, y_test), callbacks=[rec]
    )
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 4 for v in history.history.values())
    final = net.evaluate(X_test, y_test)
    assert history.history["val_loss"][-1] == final["loss"]
    assert history.history["val_accuracy"][-1] == final["accuracy"]
    assert 0.5 < history.history["accuracy"][-1] <= 1
    net.params[...] = rec.params[1]
    assert net.evaluate(X_test, y_test)["loss"] == history.history["val_loss"][1]


def test_validation_split_holds_out_rows_by_the_seed():
    X, y = bp.datasets.load_digits()
    a, b = small_net(3), small_net(3)
    ha = a.fit(X, y, epochs=2, lr=0.1, validation_split=0.25)
    hb = b.fit(X, y, epochs=2, lr=0.1, validation_split=0.25)
    assert ha.history == hb.history and "val_loss" in ha.history
    with pytest.raises(ValueError, match="validation_split"):
        small_net().fit(X, y, validation_split=1.0)
    with pytest.raises(ValueError, match="not both"):
        small_net().fit(X, y, validation_split=0.2, validation_data=(X, y))
    with pytest.raises(TypeError, match="pair"):
        small_net().fit(X, y, validation_data=X)


def test_early_stopping_stops_and_restores_the_best_weights():
    X_train, X_test, y_train, y_test = digits()
    X_small, y_small = X_train[:60], y_train[:60]  # a tiny set: it overfits
    net, rec = small_net(1, hidden=128), Record()
    stopper = cb.EarlyStopping(patience=3)
    history = net.fit(
        X_small,
        y_small,
        epochs=500,
        batch_size=8,
        lr=0.1,
        validation_data=(X_test, y_test),
        callbacks=[rec, stopper],
    )
    val = history.history["val_loss"]
    assert len(val) < 500 and stopper.stopped_epoch == len(val)
    best = int(np.argmin(val))
    assert stopper.best_epoch == best + 1 and len(val) == best + 1 + 3
    np.testing.assert_array_equal(net.params, rec.params[best])
    assert net.evaluate(X_test, y_test)["loss"] == min(val)


def test_fit_early_stopping_shortcut_watches_the_training_loss_without_validation():
    X, y = bp.datasets.truth_table("xor")
    net = bp.Sequential(
        bp.Dense(2, 4, activation="tanh"), bp.Dense(4, 1, activation="sigmoid"), loss="mse", seed=0
    )
    history = net.fit(
        X, y, epochs=10_000, batch_size=4, lr=0.5, early_stopping=True, patience=2, min_delta=1e-3
    )
    assert len(history.epoch) < 10_000


@pytest.mark.parametrize(
    "schedule,formula",
    [
        (cb.StepDecay(3, gamma=0.5), lambda e: 0.2 * 0.5 ** ((e - 1) // 3)),
        (cb.ExponentialDecay(0.9), lambda e: 0.2 * 0.9 ** (e - 1)),
        (cb.InverseScaling(0.5), lambda e: 0.2 / math.sqrt(e)),
        (
            cb.CosineDecay(10, min_lr=0.01),
            lambda e: 0.01 + 0.19 * (1 + math.cos(math.pi * (e - 1) / 10)) / 2,
        ),
    ],
)
def test_schedules_set_the_rate_of_every_epoch(schedule, formula):
    X, y = bp.datasets.load_digits()
    net = small_net()
    history = net.fit(X[:200], y[:200], epochs=10, lr=0.2, callbacks=[schedule])
    np.testing.assert_allclose(
        history.history["lr"], [formula(e) for e in range(1, 11)], rtol=1e-15
    )
    assert net.optimizer.lr == 0.2  # given back at the end


def test_the_schedule_reaches_the_core():
    """A rate of ~0 from the second epoch on freezes the weights."""
    X, y = bp.datasets.load_digits()
    net, rec = small_net(), Record()
    net.fit(X[:200], y[:200], epochs=3, lr=0.1, callbacks=[cb.ExponentialDecay(1e-30), rec])
    assert not np.array_equal(rec.params[0], small_net().params)
    np.testing.assert_allclose(rec.params[2], rec.params[1], rtol=0, atol=1e-25)


def test_reduce_on_plateau():
    X, y = bp.datasets.load_digits()
    net = small_net()
    plateau = cb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    history = net.fit(X[:200], y[:200], epochs=7, lr=0.1, callbacks=[plateau])
    # the first epoch sets the best; no later one beats it by 10, so every
    # second epoch after it halves the rate
    assert history.history["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


def test_a_callback_can_stop_training():
    class StopAtThree(cb.Callback):
        def on_epoch_end(self, net, epoch, logs):
            net.stop_training = epoch == 3

    X, y = bp.datasets.truth_table("xor")
    net = bp.Sequential(bp.Dense(2, 1, activation="sigmoid"), loss="mse")
    assert net.fit(X, y, epochs=100, callbacks=[StopAtThree()]).epoch == [1, 2, 3]


def test_progress_lines_when_not_a_terminal(capsys):
    X, y = bp.datasets.load_digits()
    out = io.StringIO()
    small_net().fit(X[:300], y[:300], epochs=40, lr=0.1, callbacks=[cb.ProgressBar(file=out)])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch  1/40  loss ") and "samples/s" in lines[0]
    assert lines[-1].startswith("epoch 40/40") and len(lines) == 21
    small_net().fit(X[:100], y[:100], epochs=2, verbose=1)
    assert "epoch 2/2  loss" in capsys.readouterr().err


def test_bad_callbacks():
    X, y = bp.datasets.load_digits()
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        small_net().fit(X, y, callbacks=[print])
    with pytest.raises(ValueError, match="val_loss"):
        small_net().fit(X, y, callbacks=[cb.EarlyStopping()])
    with pytest.raises(ValueError, match="factor"):
        cb.ReduceLROnPlateau(factor=2)


def test_the_first_bad_argument_of_a_callback_is_the_one_named():
    # In the order of the arguments, as the constructors always checked them.
    with pytest.raises(ValueError, match="factor"):
        cb.ReduceLROnPlateau(factor=2, patience=-1)
    with pytest.raises(ValueError, match="factor"):
        cb.ReduceLROnPlateau(factor=2, min_delta=-1)
    with pytest.raises(TypeError, match="monitor"):
        cb.ReduceLROnPlateau(monitor=1, factor=2)
    with pytest.raises(ValueError, match="patience"):
        cb.ReduceLROnPlateau(patience=-1, min_delta=-1, min_lr=-1)
    with pytest.raises(ValueError, match="patience"):
        cb.EarlyStopping(patience=-1, min_delta=-1, restore_best_weights="x")


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    X, y = bp.datasets.load_digits()
    screen = Terminal()
    small_net().fit(
        X[:300],
        y[:300],
        epochs=5,
        lr=0.1,
        validation_split=0.2,
        callbacks=[cb.ProgressBar(file=screen)],
    )
    text = screen.getvalue()
    assert "5/5" in text and "epoch" in text  # tqdm's bar over the epochs
    assert "val_loss" in text and "samples/s" in text


# -- settings, and the rates the schedules give --------------------------------------
@pytest.mark.parametrize(
    "make,name,value,error",
    [
        (lambda: cb.StepDecay(2), "step_size", 0, ValueError),
        (lambda: cb.StepDecay(2), "step_size", 2.5, TypeError),
        (lambda: cb.StepDecay(2), "gamma", -0.5, ValueError),
        (lambda: cb.ExponentialDecay(0.9), "gamma", float("inf"), ValueError),
        (lambda: cb.ExponentialDecay(0.9), "gamma", "0.5", TypeError),
        (lambda: cb.InverseScaling(), "power_t", -1, ValueError),
        (lambda: cb.CosineDecay(10), "epochs", True, TypeError),
        (lambda: cb.CosineDecay(10), "min_lr", -1e-3, ValueError),
        (lambda: cb.ReduceLROnPlateau(), "factor", 1.0, ValueError),
        (lambda: cb.ReduceLROnPlateau(), "factor", 0, ValueError),
        (lambda: cb.ReduceLROnPlateau(), "patience", -1, ValueError),
        (lambda: cb.ReduceLROnPlateau(), "min_lr", float("nan"), ValueError),
        (lambda: cb.ReduceLROnPlateau(), "monitor", None, TypeError),
        (lambda: cb.EarlyStopping(), "min_delta", -1, ValueError),
        (lambda: cb.EarlyStopping(), "restore_best_weights", "no", TypeError),
        (lambda: cb.ProgressBar(), "every", 0, ValueError),
        (lambda: cb.ProgressBar(), "file", "log.txt", TypeError),
    ],
)
def test_a_bad_setting_assigned_after_construction_is_refused(make, name, value, error):
    callback = make()
    before = getattr(callback, name)
    with pytest.raises(error, match=name):
        setattr(callback, name, value)
    assert getattr(callback, name) == before


def test_settings_assigned_after_construction_are_used():
    X, y = bp.datasets.load_digits()
    schedule = cb.StepDecay(3)
    schedule.step_size, schedule.gamma = 2, 0.5
    history = small_net().fit(X[:200], y[:200], epochs=5, lr=0.2, callbacks=[schedule])
    assert history.history["lr"] == [0.2, 0.2, 0.1, 0.1, 0.05]
    stopper = cb.EarlyStopping()
    stopper.monitor, stopper.patience, stopper.min_delta = "loss", 1, 10.0
    history = small_net().fit(X[:200], y[:200], epochs=10, lr=0.1, callbacks=[stopper])
    assert stopper.stopped_epoch == 2 and len(history.epoch) == 2


class Gives(cb.LearningRateSchedule):
    """The initial rate, then `value` from the second epoch on (the issue's
    case: a schedule that turns the rate negative)."""

    def __init__(self, value):
        self.value = value

    def rate(self, epoch, initial_lr):
        return initial_lr if epoch == 1 else self.value


@pytest.mark.parametrize(
    "schedule,epochs,error,match",
    [
        (
            Gives(-0.1),
            3,
            ValueError,
            "the learning rate Gives gives for epoch 2 must be a finite number > 0, got -0.1",
        ),
        (Gives(0), 3, ValueError, "Gives gives for epoch 2 .* got 0.0"),
        (Gives(math.inf), 3, ValueError, "Gives gives for epoch 2 .* got inf"),
        (Gives(math.nan), 3, ValueError, "Gives gives for epoch 2 .* got nan"),
        (Gives("0.1"), 3, TypeError, "Gives gives for epoch 2 must be a number, got str"),
        (
            cb.ExponentialDecay(1e-200),
            4,
            ValueError,
            "ExponentialDecay gives for epoch 3 .* got 0.0",
        ),
        (
            cb.InverseScaling(1e300),
            3,
            ValueError,
            "the learning rate InverseScaling gives for epoch 2 is out of range",
        ),
        (cb.StepDecay(1, gamma=1e-300), 4, ValueError, "StepDecay gives for epoch 3 .* got 0.0"),
        (
            cb.CosineDecay(2),
            4,
            ValueError,
            "CosineDecay gives for epoch 3 .* got 0.0",
        ),  # at its end
    ],
)
def test_a_rate_that_is_not_finite_and_positive_stops_fit_before_its_epoch(
    schedule, epochs, error, match
):
    X, y = bp.datasets.load_digits()
    net, rec = small_net(), Record()
    with pytest.raises(error, match=match):
        net.fit(X[:200], y[:200], epochs=epochs, lr=0.1, callbacks=[rec, schedule])
    assert len(rec.params) >= 1 and np.isfinite(net.params).all()
    np.testing.assert_array_equal(net.params, rec.params[-1])  # no step was taken at it
    assert net.optimizer.lr == 0.1  # given back


def test_reduce_on_plateau_refuses_a_rate_that_underflows_to_0():
    X, y = bp.datasets.load_digits()
    net, rec = small_net(), Record()
    plateau = cb.ReduceLROnPlateau(monitor="loss", factor=1e-300, patience=0, min_delta=10.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau sets after epoch 3 .* got 0.0"):
        net.fit(X[:200], y[:200], epochs=6, lr=0.1, callbacks=[rec, plateau])
    assert [log["lr"] for log in rec.logs] == [0.1, 0.1, 0.1 * 1e-300]
    np.testing.assert_array_equal(net.params, rec.params[-1])
