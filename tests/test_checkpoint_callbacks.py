"""LambdaCallback, CSVLogger and ModelCheckpoint: their hooks, files, settings,
and how they go on when training resumes (across fit calls and files)."""

import csv

import numpy as np
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


# -- ModelCheckpoint -----------------------------------------------------------------
class Record(cb.Callback):
    """The weights at the end of every epoch, by epoch."""

    def __init__(self):
        self.params = {}

    def on_epoch_end(self, net, epoch, logs):
        self.params[epoch] = net.params.copy()


def bumpy():
    """A network, data and a rate whose validation loss goes down and up
    again (the epochs that improve on the best: 1, 4, 5, 6 of 8)."""
    X, y = bp.datasets.load_digits()
    fit = {"lr": 5.0, "validation_data": (X[300:400], y[300:400])}
    return small_net(seed=1), X[:120], y[:120], fit


def running_best(values, better):
    """The positions at which values beat every earlier one."""
    best, found = None, []
    for i, value in enumerate(values):
        if best is None or better(value, best):
            best = value
            found.append(i)
    return found


def test_checkpoints_every_nth_epoch_under_formatted_names(tmp_path):
    X, y = data()
    net, record = small_net(), Record()
    path = tmp_path / "ckpt-{epoch:03d}-{loss:.3f}"
    saver = cb.ModelCheckpoint(path, every=2)
    first = net.fit(X, y, epochs=5, lr=0.1, callbacks=[saver, record])
    second = net.fit(X, y, epochs=3, lr=0.1, callbacks=[cb.ModelCheckpoint(path, every=2), record])
    losses = dict(zip(first.epoch + second.epoch, first.history["loss"] + second.history["loss"]))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"ckpt-{e:03d}-{losses[e]:.3f}.npz" for e in (2, 4, 6, 8)]  # global epochs
    assert saver.last_saved == str(tmp_path / names[1])
    for name, epoch in zip(names, (2, 4, 6, 8)):
        saved = bp.load(tmp_path / name)
        np.testing.assert_array_equal(saved.params, record.params[epoch])
        assert saved.training_state.epoch == epoch


def test_a_checkpoint_resumes_the_run_exactly(tmp_path):
    X, y = data()

    def callbacks():  # the checkpoint first: the callbacks after it change the rate
        return [
            cb.ModelCheckpoint(tmp_path / "{epoch}"),
            cb.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0),
            cb.EarlyStopping("loss", patience=10, restore_best_weights=False),
        ]

    whole = small_net()
    expected = whole.fit(
        X, y, epochs=5, batch_size=16, optimizer=bp.Adam(0.01), callbacks=callbacks()
    )
    # the rate is halved after every epoch from the second on (the file of epoch 2 holds 0.005)
    assert expected.history["lr"] == [0.01, 0.01, 0.005, 0.0025, 0.00125]
    resumed = bp.load(tmp_path / "2.npz")
    after = resumed.fit(X, y, epochs=3, batch_size=16, callbacks=callbacks())
    assert after.epoch == [3, 4, 5]
    assert after.history["loss"] == expected.history["loss"][2:]
    assert after.history["lr"] == expected.history["lr"][2:]
    np.testing.assert_array_equal(resumed.params, whole.params)
    last = bp.load(tmp_path / "5.npz")  # (written as the fit ended)
    np.testing.assert_array_equal(last.params, whole.params)
    assert last.training_state.epoch == 5 and last.optimizer_steps == whole.optimizer_steps


def test_the_last_checkpoint_holds_the_last_epoch_not_restored_weights(tmp_path):
    X, y = data()
    for stopper_first in (True, False):
        net, record = small_net(), Record()
        stopper = cb.EarlyStopping("loss", patience=1, min_delta=10.0)  # stops at epoch 2
        saver = cb.ModelCheckpoint(tmp_path / f"last-{stopper_first}")
        callbacks = [stopper, saver, record] if stopper_first else [saver, stopper, record]
        history = net.fit(X, y, epochs=5, lr=0.1, callbacks=callbacks)
        assert history.epoch == [1, 2]
        np.testing.assert_array_equal(net.params, record.params[1])  # the best, put back
        saved = bp.load(saver.last_saved)
        np.testing.assert_array_equal(saved.params, record.params[2])
        assert saved.training_state.epoch == 2


def test_save_best_only_keeps_the_best_epoch(tmp_path):
    net, X, y, fit = bumpy()
    best = cb.ModelCheckpoint(tmp_path / "best.npz", save_best_only=True)
    named = cb.ModelCheckpoint(tmp_path / "val-{epoch}", save_best_only=True)
    history = net.fit(X, y, epochs=8, callbacks=[best, named], **fit)
    losses = history.history["val_loss"]
    improved = running_best(losses, lambda a, b: a < b)
    assert improved != list(range(8))  # (some epochs are worse than an earlier one)
    lowest = int(np.argmin(losses))
    saved = bp.load(tmp_path / "best.npz")
    assert saved.training_state.epoch == lowest + 1
    assert saved.evaluate(*fit["validation_data"])["loss"] == losses[lowest]
    assert best.best == losses[lowest]
    names = {p.name for p in tmp_path.iterdir()} - {"best.npz"}
    assert names == {f"val-{i + 1}.npz" for i in improved}
    assert named.last_saved == str(tmp_path / f"val-{lowest + 1}.npz")  # the newest: the best


def test_save_best_only_watching_an_accuracy_keeps_the_highest(tmp_path):
    net, X, y, fit = bumpy()
    saver = cb.ModelCheckpoint(tmp_path / "{epoch}", monitor="val_accuracy", save_best_only=True)
    history = net.fit(X, y, epochs=8, callbacks=[saver], **fit)
    accuracies = history.history["val_accuracy"]
    improved = running_best(accuracies, lambda a, b: a > b)
    assert improved != list(range(8))
    assert {p.name for p in tmp_path.iterdir()} == {f"{i + 1}.npz" for i in improved}
    assert saver.best == max(accuracies)


@pytest.mark.parametrize("through_a_file", [False, True])
def test_save_best_only_goes_on_from_the_best_when_resumed(tmp_path, through_a_file):
    net, X, y, fit = bumpy()
    path = tmp_path / "best-{epoch}"
    first = net.fit(
        X, y, epochs=6, callbacks=[cb.ModelCheckpoint(path, save_best_only=True)], **fit
    )
    best = min(first.history["val_loss"])
    if through_a_file:
        net.save(tmp_path / "run.npz")
        net = bp.load(tmp_path / "run.npz")
    net.params[...] = np.random.default_rng(0).normal(size=net.params.shape)  # much worse
    saved = {p.name for p in tmp_path.iterdir()}
    saver = cb.ModelCheckpoint(path, save_best_only=True)
    second = net.fit(X, y, epochs=4, callbacks=[saver], **fit)
    losses = second.history["val_loss"]
    assert losses[0] > best  # (a checkpoint that forgot the best would save this epoch)
    new = {p.name for p in tmp_path.iterdir()} - saved
    everything = first.history["val_loss"] + losses
    assert new == {
        f"best-{i + 1}.npz" for i in running_best(everything, lambda a, b: a < b) if i >= 6
    }
    assert saver.best == min(everything)


def test_a_checkpoint_keeps_no_state_unless_it_saves_the_best(tmp_path):
    X, y = data()
    net = small_net()
    net.fit(X, y, epochs=1, lr=0.1, callbacks=[cb.ModelCheckpoint(tmp_path / "a")])
    assert "ModelCheckpoint" not in net.training_state.callbacks
    saver = cb.ModelCheckpoint(tmp_path / "b", monitor="loss", save_best_only=True)
    history = net.fit(X, y, epochs=1, lr=0.1, callbacks=[saver])
    assert net.training_state.callbacks["ModelCheckpoint"]["best"] == history.history["loss"][0]


def test_a_file_that_exists_stays_whole_when_a_save_fails(tmp_path, monkeypatch):
    X, y = data()
    net, record = small_net(), Record()
    real, calls = np.savez, []

    def savez(fh, **arrays):
        calls.append(1)
        if len(calls) < 2:
            return real(fh, **arrays)
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(bp._format.np, "savez", savez)
    with pytest.raises(OSError, match="disk full"):
        net.fit(X, y, epochs=4, lr=0.1, callbacks=[cb.ModelCheckpoint(tmp_path / "net"), record])
    assert sorted(record.params) == [1, 2]  # epoch 2's file failed as epoch 3 began
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]  # no half-written file left
    saved = bp.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(saved.params, record.params[1])
    assert saved.training_state.epoch == 1


@pytest.mark.parametrize(
    "path,match",
    [
        ("ckpt-{foo}", r"unknown placeholder \{foo\}"),
        ("ckpt-{}", r"unknown placeholder \{\}"),
        ("ckpt-{0}", r"unknown placeholder \{0\}"),
        ("ckpt-{val_loss.real}", r"unknown placeholder \{val_loss.real\}"),
        ("ckpt-{loss:{width}}", r"unknown placeholder \{loss:\{width\}\}"),
        ("ckpt-{epoch", "is not a format string"),
        ("ckpt-}", "is not a format string"),
        ("ckpt-{loss:d}", "is not a format string for numbers"),
        ("ckpt-{epoch!z}", "is not a format string for numbers"),
    ],
)
def test_a_bad_placeholder_is_refused_by_name(path, match):
    with pytest.raises(ValueError, match=match):
        cb.ModelCheckpoint(path)
    saver = cb.ModelCheckpoint("ckpt-{epoch}")
    with pytest.raises(ValueError, match=match):
        saver.path = path
    assert saver.path == "ckpt-{epoch}"


def test_a_figure_the_network_has_not_is_refused_before_training(tmp_path):
    X, y = data()
    regression = small_net(loss="mse")
    with pytest.raises(ValueError, match=r"\{val_accuracy\}.*only classifiers have accuracies"):
        regression.fit(
            X, y / 10.0, lr=0.01, callbacks=[cb.ModelCheckpoint(tmp_path / "{val_accuracy}")]
        )
    assert regression.optimizer_steps == 0
    with pytest.raises(FileNotFoundError, match="folder .*nowhere"):
        regression.fit(
            X, y / 10.0, lr=0.01, callbacks=[cb.ModelCheckpoint(tmp_path / "nowhere" / "n")]
        )
    assert regression.optimizer_steps == 0


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"path": "{epoch}-{val_loss:.3f}"}, r"placeholder \{val_loss\} .* validation_data"),
        ({"path": "{epoch}", "save_best_only": True, "every": 3}, "monitor: 'val_loss' is not"),
    ],
)
def test_a_figure_the_fit_does_not_give_is_refused_at_the_first_epoch(tmp_path, arguments, match):
    X, y = data()
    ended = []
    arguments = dict(arguments, path=tmp_path / arguments["path"])
    with pytest.raises(ValueError, match=match):
        small_net().fit(
            X,
            y,
            epochs=4,
            lr=0.1,
            callbacks=[
                cb.LambdaCallback(on_epoch_end=lambda net, epoch, logs: ended.append(epoch)),
                cb.ModelCheckpoint(**arguments),
            ],
        )
    assert ended == [1] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "arguments,error,name",
    [
        ({"path": 3}, TypeError, "path"),
        ({"every": 0}, ValueError, "every"),
        ({"every": 1.5}, TypeError, "every"),
        ({"monitor": None}, TypeError, "monitor"),
        ({"save_best_only": "yes"}, TypeError, "save_best_only"),
    ],
)
def test_checkpoint_settings_are_checked_by_name(arguments, error, name):
    with pytest.raises(error, match=name):
        cb.ModelCheckpoint(**dict({"path": "ckpt"}, **arguments))
    saver = cb.ModelCheckpoint("ckpt")
    before = getattr(saver, name)
    with pytest.raises(error, match=name):
        setattr(saver, name, arguments[name])
    assert getattr(saver, name) == before


def test_checkpoint_arguments_are_checked_in_their_order():
    with pytest.raises(TypeError, match="path"):
        cb.ModelCheckpoint(3, every=0)
    with pytest.raises(ValueError, match="every"):
        cb.ModelCheckpoint("ckpt", every=0, monitor=None)
    with pytest.raises(TypeError, match="monitor"):
        cb.ModelCheckpoint("ckpt", monitor=None, save_best_only="x")
