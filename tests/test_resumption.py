"""Training split across calls, or saved, loaded and resumed, equals one
uninterrupted fit, bit for bit: for every optimizer, schedule, dtype and
data source, with shuffling on (see backprop.training.TrainingState)."""

import io
import json

import numpy as np
import pytest

import backprop as bp
from backprop import callbacks as cb

OPTIMIZERS = {
    "sgd": lambda: bp.SGD(0.05),
    "nesterov": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: bp.Adam(1e-2),
    "adamw": lambda: bp.AdamW(1e-2, weight_decay=1e-2),
    "rmsprop": lambda: bp.RMSProp(1e-3),
    "adagrad": lambda: bp.AdaGrad(0.05),
}
SCHEDULES = {
    "none": lambda: [],
    "step": lambda: [cb.StepDecay(2, 0.5)],
    "exponential": lambda: [cb.ExponentialDecay(0.8)],
    "inverse": lambda: [cb.InverseScaling(0.5)],
    "cosine": lambda: [cb.CosineDecay(6)],
    "plateau": lambda: [cb.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)],
}
SOURCES = ["memory", "memmap", "stream"]


def make_net(dtype):
    return bp.Sequential(
        bp.Dense(5, 7, "tanh"),
        bp.Dense(7, 3, "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=3,
    )


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3)


def arguments(source, tmp_path, dtype):
    """fit's data arguments for `source`."""
    X, y = data()
    if source == "memory":
        return (X, y), {}
    if source == "memmap":
        path = tmp_path / "X.npy"
        np.save(path, X.astype(dtype))
        return (np.load(path, mmap_mode="r"), y), {"chunk_size": 40}  # three chunks
    batches = [(X[i : i + 25], y[i : i + 25]) for i in range(0, 90, 25)]
    return (batches,), {}


def train(net, source, tmp_path, epochs, optimizer, schedule):
    args, extra = arguments(source, tmp_path, net.dtype)
    return net.fit(
        *args, epochs=epochs, batch_size=8, optimizer=optimizer, callbacks=schedule, **extra
    )


def through_a_file(net):
    buffer = io.BytesIO()
    np.savez(buffer, **bp.io.state_of(net))
    buffer.seek(0)
    return bp.load(buffer)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_split_or_resumed_from_a_file_equals_one_fit(
    tmp_path, optimizer, schedule, source, dtype
):
    make_opt, make_schedule = OPTIMIZERS[optimizer], SCHEDULES[schedule]
    whole = make_net(dtype)
    expected = train(whole, source, tmp_path, 5, make_opt(), make_schedule())

    split = make_net(dtype)
    first = train(split, source, tmp_path, 2, make_opt(), make_schedule())
    second = train(split, source, tmp_path, 3, None, make_schedule())  # (the optimizer kept)
    np.testing.assert_array_equal(split.params, whole.params)
    assert first.epoch == [1, 2] and second.epoch == [3, 4, 5]
    assert first.history["loss"] + second.history["loss"] == expected.history["loss"]
    assert first.history["lr"] + second.history["lr"] == expected.history["lr"]

    resumed = make_net(dtype)
    train(resumed, source, tmp_path, 2, make_opt(), make_schedule())
    resumed = through_a_file(resumed)
    after = train(resumed, source, tmp_path, 3, None, make_schedule())
    np.testing.assert_array_equal(resumed.params, whole.params)
    assert after.epoch == [3, 4, 5] and after.history["loss"] == expected.history["loss"][2:]
    assert resumed.optimizer_steps == whole.optimizer_steps
    assert resumed.training_state.epoch == whole.training_state.epoch == 5


@pytest.mark.parametrize("restore_best_weights", [False, True])
def test_early_stopping_counts_on_across_calls_and_files(restore_best_weights):
    X, y = data()

    def stopping():
        return [
            cb.EarlyStopping(
                "loss", patience=2, min_delta=0.05, restore_best_weights=restore_best_weights
            )
        ]

    whole = make_net("float64")
    expected = whole.fit(X, y, epochs=30, batch_size=8, lr=0.05, callbacks=stopping())
    assert len(expected.epoch) < 30  # it does stop
    stop = expected.epoch[-1]
    split = make_net("float64")
    first = split.fit(X, y, epochs=stop - 1, batch_size=8, lr=0.05, callbacks=stopping())
    split = through_a_file(split)
    second = split.fit(X, y, epochs=30, batch_size=8, lr=0.05, callbacks=stopping())
    assert second.epoch[0] == stop  # the counters carried over
    if restore_best_weights:
        # each fit ends on the best weights it has seen (the documented behaviour), so
        # the second call starts from those: the run goes on from there, and stops at once
        assert second.epoch == [stop]
        assert split.training_state.callbacks["EarlyStopping"]["best_epoch"] is not None
    else:
        assert second.epoch == [stop]  # it stops where the whole run did
        assert first.history["loss"] + second.history["loss"] == expected.history["loss"]
        np.testing.assert_array_equal(split.params, whole.params)


def test_validation_split_holds_out_the_same_rows_in_every_call():
    X, y = data()
    whole, split = make_net("float64"), make_net("float64")
    expected = whole.fit(X, y, epochs=4, batch_size=8, lr=0.05, validation_split=0.25)
    first = split.fit(X, y, epochs=1, batch_size=8, lr=0.05, validation_split=0.25)
    second = split.fit(X, y, epochs=3, batch_size=8, lr=0.05, validation_split=0.25)
    np.testing.assert_array_equal(split.params, whole.params)
    assert first.history["val_loss"] + second.history["val_loss"] == expected.history["val_loss"]


def test_partial_fit_is_one_more_epoch_of_the_same_run():
    X, y = data()
    whole, split = make_net("float32"), make_net("float32")
    whole.fit(X, y, epochs=3, batch_size=8, lr=0.05)
    split.optimizer = bp.SGD(0.05)
    for _ in range(3):
        split.partial_fit(X, y, batch_size=8)
    np.testing.assert_array_equal(split.params, whole.params)
    assert split.training_state.epoch == 3


def test_reset_starts_a_new_run_from_the_current_weights():
    X, y = data()
    net = make_net("float64")
    net.fit(X, y, epochs=3, batch_size=8, optimizer=bp.Adam(1e-2), callbacks=[cb.StepDecay(1)])
    weights = net.params.copy()
    history = net.fit(X, y, epochs=2, batch_size=8, reset=True)
    assert history.epoch == [1, 2]
    assert net.training_state.epoch == 2
    assert net.optimizer_steps == 2 * 12  # Adam's step count starts again
    assert not np.array_equal(net.params, weights)
    # the same as a network that starts with these weights and Adam afresh, but for the
    # shuffle stream, which the new run draws anew from the network's generator
    fresh = make_net("float64")
    fresh.params = weights
    fresh.optimizer = bp.Adam(1e-2)
    fresh.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    net.params = weights
    net.fit(X, y, epochs=2, batch_size=8, shuffle=False, reset=True)
    np.testing.assert_array_equal(net.params, fresh.params)
    with pytest.raises(TypeError, match="reset must be True or False"):
        net.fit(X, y, reset="yes")


def test_a_file_holds_the_training_state_and_an_old_file_starts_a_new_run(tmp_path):
    X, y = data()
    net = make_net("float32")
    net.fit(
        X,
        y,
        epochs=2,
        batch_size=8,
        lr=0.05,
        callbacks=[cb.EarlyStopping("loss", patience=5), cb.CosineDecay(10)],
    )
    arrays = bp.io.state_of(net)
    meta = json.loads(str(arrays["meta"]))
    assert meta["version"] == 2 and meta["training"]["epoch"] == 2
    assert set(meta["training"]["callbacks"]) == {"EarlyStopping", "CosineDecay"}
    assert meta["training"]["callbacks"]["EarlyStopping"]["best_params"] == {"array": "training_0"}
    np.testing.assert_array_equal(
        arrays["training_0"], net.training_state.callbacks["EarlyStopping"]["best_params"]
    )
    # a version-1 file (no training state) loads as a network that has not trained yet
    del meta["training"]
    meta["version"] = 1
    old = {"meta": np.array(json.dumps(meta)), "params": arrays["params"]}
    back = bp.io.from_state(old)
    np.testing.assert_array_equal(back.params, net.params)
    assert back.training_state.epoch == 0 and back.training_state.callbacks == {}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.update(epoch=-1), "meta.training.epoch must be an integer"),
        (lambda t: t.update(seed="1"), "meta.training.seed must be an integer"),
        (lambda t: t["callbacks"].update({"a b": {}}), "not a callback's key"),
        (lambda t: t["callbacks"].update(CosineDecay={"initial_lr": [1]}), "must be a number"),
        (
            lambda t: t["callbacks"].update(CosineDecay={"x": {"array": "params"}}),
            "must be 'training_0'",
        ),
    ],
)
def test_a_bad_training_state_in_a_file_is_refused_by_name(edit, message):
    X, y = data()
    net = make_net("float64")
    net.fit(X, y, epochs=1, batch_size=8, lr=0.05)
    arrays = bp.io.state_of(net)
    meta = json.loads(str(arrays["meta"]))
    edit(meta["training"])
    arrays["meta"] = np.array(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        bp.io.from_state(arrays)


def test_a_callback_state_that_cannot_be_saved_is_refused_by_name():
    class Odd(cb.Callback):
        def get_state(self):
            return {"when": float("nan")}

    X, y = data()
    net = make_net("float64")
    net.fit(X, y, epochs=1, batch_size=8, lr=0.05, callbacks=[Odd()])
    with pytest.raises(ValueError, match="callback Odd: state 'when' is nan"):
        bp.io.state_of(net)


def test_a_kept_state_that_does_not_suit_its_callback_is_refused_by_name():
    X, y = data()
    net = make_net("float64")
    net.fit(X, y, epochs=1, batch_size=8, lr=0.05, callbacks=[cb.EarlyStopping("loss")])
    net.training_state.callbacks["EarlyStopping"] = {"best": 1.0}  # (no "wait")
    with pytest.raises(ValueError, match="training state kept for EarlyStopping does not suit"):
        net.fit(X, y, epochs=1, batch_size=8, callbacks=[cb.EarlyStopping("loss")])
    history = net.fit(
        X, y, epochs=1, batch_size=8, callbacks=[cb.EarlyStopping("loss")], reset=True
    )
    assert history.epoch == [1]
