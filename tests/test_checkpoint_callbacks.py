"""LambdaCallback, CSVLogger and ModelCheckpoint: their hooks, files, settings,
and how they go on when training resumes (across fit calls and files)."""

import csv

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


# -- CSVLogger -----------------------------------------------------------------------
def read_log(path, separator=","):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=separator))
    return rows[0], rows[1:]


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    history = small_net().fit(
        X, y, epochs=3, lr=0.1, validation_split=0.25, callbacks=[cb.CSVLogger(path)]
    )
    header, rows = read_log(path)
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [int(r[0]) for r in rows] == history.epoch == [1, 2, 3]
    for i, name in enumerate(header[1:], 1):
        assert [float(r[i]) for r in rows] == history.history[name]  # (written exactly)
    assert path.read_bytes().count(b"\r\n") == 4  # the csv module's line ends, once each


def test_csv_logger_columns_are_the_fits_figures(tmp_path):
    X, y = data()
    regression = small_net(loss="mse")
    regression.fit(X, y / 10.0, epochs=1, lr=0.01, callbacks=[cb.CSVLogger(tmp_path / "r.csv")])
    assert read_log(tmp_path / "r.csv")[0] == ["epoch", "loss", "lr"]

    def extra(net, epoch, logs):  # a figure of one's own, with a name that is not ASCII
        logs["température"] = 0.5

    small_net().fit(
        X,
        y,
        epochs=2,
        lr=0.1,
        callbacks=[cb.LambdaCallback(on_epoch_end=extra), cb.CSVLogger(tmp_path / "c.csv", ";")],
    )
    header, rows = read_log(tmp_path / "c.csv", ";")
    assert header == ["epoch", "loss", "accuracy", "lr", "température"]
    assert [r[-1] for r in rows] == ["0.5", "0.5"]


def test_csv_logger_flushes_every_row(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    seen = []
    peek = cb.LambdaCallback(on_epoch_end=lambda net, epoch, logs: seen.append(read_log(path)))
    small_net().fit(X, y, epochs=3, lr=0.1, callbacks=[cb.CSVLogger(path), peek])
    assert [len(rows) for header, rows in seen] == [1, 2, 3]  # on disk as each epoch ends


def test_csv_logger_appends_on_resume_across_calls_and_files(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    net = small_net()
    first = net.fit(X, y, epochs=2, lr=0.1, callbacks=[cb.CSVLogger(path)])
    second = net.fit(X, y, epochs=2, lr=0.1, callbacks=[cb.CSVLogger(path)])
    net.save(tmp_path / "net.npz")
    net = bp.load(tmp_path / "net.npz")
    third = net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(str(path))])
    header, rows = read_log(path)
    assert header == ["epoch", "loss", "accuracy", "lr"]  # once
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    losses = first.history["loss"] + second.history["loss"] + third.history["loss"]
    assert [float(r[1]) for r in rows] == losses


def test_csv_logger_without_append_writes_the_file_anew(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    net = small_net()
    net.fit(X, y, epochs=2, lr=0.1, callbacks=[cb.CSVLogger(path)])
    net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path, append=False)])
    header, rows = read_log(path)
    assert header[0] == "epoch" and [r[0] for r in rows] == ["3"]


def test_csv_logger_finishes_a_row_a_killed_run_left_unfinished(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss,accuracy,lr\n1,2.3,0.1,0.1\n2,2.2", encoding="utf-8")
    small_net().fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path)])
    header, rows = read_log(path)
    assert [r[:2] for r in rows[:2]] == [["1", "2.3"], ["2", "2.2"]]
    assert len(rows) == 3 and rows[2][0] == "1" and len(rows[2]) == 4


def test_csv_logger_refuses_a_file_with_other_columns_before_training(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    small_net().fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path)])
    before = path.read_bytes()
    regression = small_net(loss="mse")  # has no accuracy
    with pytest.raises(
        ValueError, match=r"log\.csv.* holds a log with the columns epoch, loss, ac"
    ):
        regression.fit(X, y / 10.0, epochs=1, lr=0.01, callbacks=[cb.CSVLogger(path)])
    assert regression.training_state.epoch == 0 and regression.optimizer_steps == 0
    path.write_text("when,what\n1,2\n", encoding="utf-8")
    net = small_net()
    with pytest.raises(ValueError, match="columns when, what"):
        net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path)])
    assert net.optimizer_steps == 0
    path.write_bytes(before)
    with pytest.raises(ValueError, match="columns"):  # (split by another separator)
        net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path, separator=";")])
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not a CSV log"):
        net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.CSVLogger(path)])
    assert net.optimizer_steps == 0


def test_csv_logger_refuses_a_log_with_other_validation_at_the_first_epoch(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    net = small_net()
    net.fit(X, y, epochs=1, lr=0.1, validation_split=0.25, callbacks=[cb.CSVLogger(path)])
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"val_loss, val_accuracy, lr, and this fit's are epoch"):
        net.fit(X, y, epochs=3, lr=0.1, callbacks=[cb.CSVLogger(path)])
    assert path.read_bytes() == before  # no row written


@pytest.mark.parametrize(
    "arguments,error,name",
    [
        ({"path": 3}, TypeError, "path"),
        ({"path": b"log.csv"}, TypeError, "path"),
        ({"path": ""}, ValueError, "path"),
        ({"path": "log.csv", "separator": ""}, ValueError, "separator"),
        ({"path": "log.csv", "separator": ",,"}, ValueError, "separator"),
        ({"path": "log.csv", "separator": "\n"}, ValueError, "separator"),
        ({"path": "log.csv", "separator": 44}, TypeError, "separator"),
        ({"path": "log.csv", "append": "yes"}, TypeError, "append"),
    ],
)
def test_csv_logger_settings_are_checked_by_name(arguments, error, name):
    with pytest.raises(error, match=name):
        cb.CSVLogger(**arguments)
    logger = cb.CSVLogger("log.csv")
    with pytest.raises(error, match=name):  # and when assigned after
        setattr(logger, name, arguments[name])
    assert getattr(logger, name) == {"path": "log.csv", "separator": ",", "append": True}[name]
