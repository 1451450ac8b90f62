"""LambdaCallback, CSVLogger and ModelCheckpoint: their hooks, files, settings,
and how they go on when training resumes (across fit calls and files)."""

import pytest

import backprop as bp
from backprop import callbacks as cb


def data(rows=120):
    X, y = bp.datasets.load_digits()
    return X[:rows], y[:rows]


def small_net(seed=0, loss="cross_entropy"):
    outputs = 10 if loss == "cross_entropy" else 1
    return bp.Sequential(
        bp.Dense(64, 8, activation="tanh"),
        bp.Dense(8, outputs, activation="softmax" if outputs > 1 else "linear"),
        loss=loss,
        seed=seed,
    )


# -- LambdaCallback ------------------------------------------------------------------
def test_lambda_callback_calls_each_function_as_its_hook():
    X, y = data()
    calls = []
    net = small_net()
    hooks = cb.LambdaCallback(
        on_train_begin=lambda n, logs: calls.append(("train_begin", n, dict(logs))),
        on_epoch_begin=lambda n, epoch, logs: calls.append(("epoch_begin", n, epoch)),
        on_epoch_end=lambda n, epoch, logs: calls.append(("epoch_end", n, epoch, dict(logs))),
        on_train_end=lambda n, logs: calls.append(("train_end", n, dict(logs))),
    )
    history = net.fit(X, y, epochs=2, lr=0.1, callbacks=[hooks])
    assert [c[0] for c in calls] == [
        "train_begin",
        "epoch_begin",
        "epoch_end",
        "epoch_begin",
        "epoch_end",
        "train_end",
    ]
    assert all(c[1] is net for c in calls)
    assert calls[0][2] == {"epochs": 2, "rows": 120, "initial_epoch": 0}
    assert [c[2] for c in calls if c[0] == "epoch_begin"] == [1, 2]
    ends = [c for c in calls if c[0] == "epoch_end"]
    assert [c[2] for c in ends] == [1, 2]
    assert [c[3]["loss"] for c in ends] == history.history["loss"]
    assert calls[-1][2]["loss"] == history.history["loss"][-1]
    # a second fit goes on from epoch 3
    calls.clear()
    net.fit(X, y, epochs=1, lr=0.1, callbacks=[hooks])
    assert calls[0][2]["initial_epoch"] == 2 and calls[1][2] == 3


def test_lambda_callback_hooks_left_out_do_nothing_and_can_stop_training():
    X, y = data()

    def stop(net, epoch, logs):
        net.stop_training = epoch == 2

    history = small_net().fit(
        X, y, epochs=5, lr=0.1, callbacks=[cb.LambdaCallback(on_epoch_end=stop)]
    )
    assert history.epoch == [1, 2]
    history = small_net().fit(X, y, epochs=2, lr=0.1, callbacks=[cb.LambdaCallback()])
    assert history.epoch == [1, 2]


@pytest.mark.parametrize(
    "name", ["on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end"]
)
def test_lambda_callback_refuses_what_is_not_callable_by_name(name):
    with pytest.raises(TypeError, match=f"{name} must be a callable or None"):
        cb.LambdaCallback(**{name: "print"})
    hooks = cb.LambdaCallback(**{name: print})
    with pytest.raises(TypeError, match=name):
        setattr(hooks, name, 3)
    assert getattr(hooks, name) is print  # the old value stays


def test_lambda_callback_names_the_first_bad_argument():
    with pytest.raises(TypeError, match="on_epoch_begin"):
        cb.LambdaCallback(on_epoch_begin=1, on_train_end=2)
