"""fit(..., checkpoint=path): a run that survives being killed.  It resumes
from the file, ends with the model an uninterrupted run ends with, bit for
bit, and does not train twice once complete."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import backprop as bp
from backprop import _format
from backprop import callbacks as cb

HERE = os.path.dirname(os.path.abspath(__file__))


def make_net(hidden=8, dtype="float64"):
    return bp.Sequential(
        bp.Dense(5, hidden, "tanh"),
        bp.Dense(hidden, 3, "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=1,
    )


def data(n=60):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3)


class StopAt(cb.Callback):
    """Interrupts training once epoch `at` is over (and saved), as Ctrl-C or
    a kill would."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, net, epoch, logs):
        if epoch == self.at + 1:
            raise KeyboardInterrupt


def fit(net, path, *extra, epochs=6, **kwargs):
    X, y = data()
    return net.fit(
        X,
        y,
        epochs=epochs,
        batch_size=8,
        optimizer=bp.Adam(1e-2),
        callbacks=[cb.StepDecay(2, 0.5), *extra],
        checkpoint=path,
        **kwargs,
    )


@pytest.mark.parametrize("at", [1, 3, 5])
def test_a_run_interrupted_and_started_again_ends_as_one_run(tmp_path, at):
    whole = make_net()
    expected = fit(whole, None)
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(make_net(), path, StopAt(at))
    assert _format.read(path)[0].training.epoch == at  # saved after every epoch
    again = make_net()  # the same script, run again
    history = fit(again, path)
    np.testing.assert_array_equal(again.params, whole.params)
    assert again.optimizer_steps == whole.optimizer_steps
    assert history.epoch == expected.epoch and history.history == expected.history


def test_a_complete_run_is_not_trained_twice(tmp_path):
    path = tmp_path / "run"  # (".npz" is added)
    first = make_net()
    history = fit(first, path)
    assert _format.read(str(path) + ".npz")[0].training.run["complete"]
    again = make_net()
    before = again.params.copy()
    rerun = fit(again, path)
    assert rerun.history == history.history and rerun.epoch == history.epoch
    np.testing.assert_array_equal(again.params, first.params)  # the run's model, taken up
    assert not np.array_equal(before, again.params)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda: (make_net(hidden=9), {}), "belongs to another network"),
        (lambda: (make_net(dtype="float32"), {}), "belongs to another network"),
        (lambda: (make_net(), {"epochs": 7}), "its last epoch is 6, this fit's is 7"),
        (lambda: (make_net(), {"batch_size": 4}), "its batch_size is 8"),
        (lambda: (make_net(), {"shuffle": False}), "its shuffle is True"),
        (lambda: (make_net(), {"reset": True}), "reset: the checkpoint"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(tmp_path, change, message):
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(make_net(), path, StopAt(2))
    net, kwargs = change()
    before = net.params.copy()
    X, y = data()
    args = {"epochs": 6, "batch_size": 8, "optimizer": bp.Adam(1e-2)} | kwargs
    with pytest.raises(ValueError, match=message):
        net.fit(X, y, checkpoint=path, **args)
    np.testing.assert_array_equal(net.params, before)  # refused: nothing changed


def test_other_data_and_plain_model_files_are_refused(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(make_net(), path, StopAt(2))
    X, y = data(50)
    with pytest.raises(ValueError, match="its rows of data is 60, this fit's is 50"):
        make_net().fit(X, y, epochs=6, batch_size=8, optimizer=bp.Adam(1e-2), checkpoint=path)
    model = tmp_path / "model.npz"
    make_net().save(model)
    with pytest.raises(ValueError, match="is a model file, not a checkpoint"):
        make_net().fit(*data(), epochs=6, checkpoint=model)


def began(child):
    """Wait until the training script says it has begun training (it prints
    "training" then): the kills' moments count from there, not from its
    start, as its imports alone can take seconds on a busy machine.  A run
    that ends first (its checkpoint complete already) says nothing."""
    child.stdout.readline()


def gone(group, timeout=60.0):
    """Wait until no process of the process group `group` is left."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"processes of group {group} outlived the kill"
        time.sleep(0.01)


@pytest.mark.parametrize("every", [None, 20], ids=["epochs", "every 20 batches"])
def test_a_run_killed_at_random_moments_ends_as_one_run_bit_for_bit(tmp_path, every):
    script = os.path.join(HERE, "checkpoint", "train.py")
    # the child imports the backprop these tests import (installed, or built in place)
    package_root = os.path.dirname(os.path.dirname(bp.__file__))
    env = dict(os.environ, PYTHONPATH=package_root)

    def run(folder, *extra):
        folder.mkdir(exist_ok=True)
        return subprocess.Popen(
            [
                sys.executable,
                script,
                str(folder / "run.npz"),
                str(folder / "params.npy"),
                str(folder / "log.txt"),
                *extra,
            ],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    reference = run(tmp_path / "whole")
    assert reference.wait(120) == 0, reference.stderr.read().decode()
    expected = np.load(tmp_path / "whole" / "params.npy")

    folder = tmp_path / "killed"
    log = folder / "log.txt"
    landed = []
    rng = random.Random(0)
    while len(landed) < 5 or "during a save" not in landed:
        assert len(landed) < 40, landed
        child = run(folder, "--slow-save", "0.02", *(["--every", str(every)] if every else []))
        began(child)
        time.sleep(rng.uniform(0.05, 1.0))
        if child.poll() is not None:  # finished before the kill: start over
            assert child.returncode == 0, child.stderr.read().decode()
            for name in ("run.npz", "params.npy", "log.txt"):
                (folder / name).unlink()
            continue
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        lines = log.read_text().split() if log.exists() else []
        events = [word for word in lines if word.startswith("save-")]
        landed.append(
            "before the first save"
            if not events
            else "during a save"
            if events[-1] == "save-begin"
            else "between saves"
        )
        if (folder / "run.npz").exists():  # whatever the moment, the file is whole
            _format.read(str(folder / "run.npz"))
    final = run(folder, *(["--every", str(every)] if every else []))
    assert final.wait(120) == 0, final.stderr.read().decode()
    np.testing.assert_array_equal(np.load(folder / "params.npy"), expected)
    assert "during a save" in landed and len(landed) >= 5
    print("kills landed:", landed)


class Interrupted(Exception):
    """Raised right after the k-th save of a checkpoint, as a kill would land."""


def interrupt_after(monkeypatch, k):
    real, count = _format.write, [0]

    def write(path, arrays):
        out = real(path, arrays)
        count[0] += 1
        if count[0] == k:
            raise Interrupted
        return out

    monkeypatch.setattr(_format, "write", write)


SOURCES = ["memory", "memmap", "stream"]


def fit_source(net, source, tmp_path, **kwargs):
    X, y = data(90)
    if source == "memory":
        args, extra = (X, y), {}
    elif source == "memmap":
        np.save(tmp_path / "X.npy", X)
        args, extra = (np.load(tmp_path / "X.npy", mmap_mode="r"), y), {"chunk_size": 40}
    else:
        args, extra = ([(X[i : i + 30], y[i : i + 30]) for i in range(0, 90, 30)],), {}
    return net.fit(*args, epochs=4, batch_size=8, optimizer=bp.Adam(1e-2), **extra, **kwargs)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_a_run_interrupted_within_an_epoch_resumes_there(tmp_path, monkeypatch, source, k):
    whole = make_net()
    fit_source(whole, source, tmp_path)  # no checkpoint at all
    every = make_net()
    expected = fit_source(
        every, source, tmp_path / "..", checkpoint=tmp_path / "all.npz", checkpoint_every=2
    )
    path = tmp_path / "run.npz"
    with monkeypatch.context() as patch:
        interrupt_after(patch, k)
        with pytest.raises(Interrupted):
            fit_source(make_net(), source, tmp_path, checkpoint=path, checkpoint_every=2)
    position = _format.read(str(path))[0].training.run["position"]
    again = make_net()
    history = fit_source(again, source, tmp_path, checkpoint=path, checkpoint_every=2)
    np.testing.assert_array_equal(again.params, whole.params)
    np.testing.assert_array_equal(every.params, whole.params)
    assert history.history == expected.history
    if k in (1, 2):  # (the first saves fall within epoch 1: 90 rows are 12 batches)
        assert position is not None and position["epoch"] == 1


def test_checkpoint_every_is_checked():
    X, y = data()
    with pytest.raises(ValueError, match="checkpoint_every: give checkpoint= too"):
        make_net().fit(X, y, checkpoint_every=3)
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1"):
        make_net().fit(X, y, checkpoint="x.npz", checkpoint_every=0)


def test_a_distributed_run_killed_at_random_moments_ends_as_one_run(tmp_path):
    """The kill test under `mpiexec -n 2`: the whole job is killed (SIGKILL
    to every process of it) and started again."""
    dist = pytest.importorskip("backprop.distributed")
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        pytest.fail("mpiexec is missing: install the test extra (it brings the mpich wheel)")
    script = os.path.join(HERE, "checkpoint", "train.py")
    package_root = os.path.dirname(os.path.dirname(dist.__file__))
    env = dict(os.environ, PYTHONPATH=package_root)

    def job(folder, *extra):
        folder.mkdir(exist_ok=True)
        return subprocess.Popen(
            [
                mpiexec,
                "-n",
                "2",
                sys.executable,
                script,
                str(folder / "run.npz"),
                str(folder / "params.npy"),
                str(folder / "log.txt"),
                "--mpi",
                *extra,
            ],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # (one process group: the kill reaches every rank)
        )

    reference = job(tmp_path / "whole")
    assert reference.wait(180) == 0, reference.stderr.read().decode()
    expected = np.load(tmp_path / "whole" / "params.npy")
    folder = tmp_path / "killed"
    rng = random.Random(1)
    kills = 0
    while kills < 5:
        child = job(folder, "--slow-save", "0.02")
        began(child)
        time.sleep(rng.uniform(0.05, 1.0))
        if child.poll() is not None:  # finished before the kill: start over
            assert child.returncode == 0, child.stderr.read().decode()
            for name in ("run.npz", "params.npy", "log.txt"):
                (folder / name).unlink()
            continue
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        kills += 1
        gone(child.pid)  # (the ranks too, not only mpiexec)
        if (folder / "run.npz").exists():
            _format.read(str(folder / "run.npz"))
    final = job(folder)
    assert final.wait(180) == 0, final.stderr.read().decode()
    np.testing.assert_array_equal(np.load(folder / "params.npy"), expected)


def state_of(net):
    training = net.training_state
    return (
        net.params.copy(),
        type(net.optimizer).__name__,
        net.optimizer.lr,
        net.optimizer_steps,
        [state.copy() for state in net.optimizer_state],
        (training.epoch, training.seed, dict(training.callbacks)),
        net._rng.bit_generator.state,
    )


def assert_same_state(a, b):
    assert a[1:4] == b[1:4] and a[5:] == b[5:]
    for x, y in zip([a[0], *a[4]], [b[0], *b[4]], strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_refused_checkpoint_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(make_net(), path, StopAt(2))
    X, y = data()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model file")
    # a file whose StepDecay state does not suit StepDecay (refused after it is read)
    model, arrays = _format.read(str(path))
    callbacks = {"StepDecay": {"initial_lr": "text"}}
    unsuited = tmp_path / "unsuited.npz"
    _format.write(str(unsuited), dict(arrays, meta=np.array(_meta_with(path, callbacks))))
    for kwargs in (
        {"checkpoint": path, "optimizer": "adam"},  # another run (first epoch 1)
        {"checkpoint": path, "lr": 0.5},
        {"checkpoint": bad, "lr": 0.5},
        {"checkpoint": path, "reset": True, "lr": 0.5},
    ):
        net = make_net()
        net.fit(X, y, epochs=1, batch_size=8, optimizer=bp.SGD(0.1, momentum=0.9))
        before = state_of(net)
        with pytest.raises(ValueError):
            net.fit(X, y, epochs=6, batch_size=8, **kwargs)
        assert_same_state(state_of(net), before)
    net = make_net()
    before = state_of(net)
    with pytest.raises(ValueError, match="the training state kept for StepDecay"):
        fit(net, unsuited)
    assert_same_state(state_of(net), before)


def _meta_with(path, callbacks):
    meta = json.loads(str(np.load(path)["meta"]))
    meta["training"]["callbacks"] = callbacks
    return json.dumps(meta)


def test_checkpoint_every_on_a_regression_network(tmp_path, monkeypatch):
    """A regression network counts no accuracy: its saves within an epoch
    work all the same, and the run resumes there."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])

    def run(net, **kwargs):
        return net.fit(X, y, epochs=3, batch_size=4, **kwargs)

    def net():
        return bp.Sequential(bp.Dense(3, 4, "tanh"), bp.Dense(4, 1), seed=0)

    whole = net()
    run(whole)
    path = tmp_path / "run.npz"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 5)  # within epoch 2 (10 batches an epoch, saves every 3)
        with pytest.raises(Interrupted):
            run(net(), checkpoint=path, checkpoint_every=3)
    assert _format.read(str(path))[0].training.run["position"]["epoch"] == 2
    again = net()
    run(again, checkpoint=path, checkpoint_every=3)
    np.testing.assert_array_equal(again.params, whole.params)


def test_validation_split_resumes_with_the_runs_rows(tmp_path):
    """A network without a seed resumes a run with validation_split holding
    out the rows the run's seed chose, not its own generator's."""
    X, y = data()
    start = make_net()

    def net(state=None):
        net = bp.Sequential(bp.Dense(5, 8, "tanh"), bp.Dense(8, 3, "softmax"), loss="cross_entropy")
        net.params[...] = start.params
        if state is not None:
            net._rng.bit_generator.state = state
        return net

    def run(net, **kwargs):
        return net.fit(X, y, epochs=4, batch_size=8, validation_split=0.25, **kwargs)

    first = net()
    state = first._rng.bit_generator.state
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        run(first, checkpoint=path, callbacks=[StopAt(2)])
    whole = net(state)
    run(whole)
    again = net()
    run(again, checkpoint=path)
    np.testing.assert_array_equal(again.params, whole.params)


@pytest.mark.parametrize(
    "where, field",
    [(("position", "loss"), "position.loss"), (("history", "loss"), "history.loss")],
)
def test_a_huge_integer_in_a_checkpoint_is_refused_by_its_field(
    tmp_path, monkeypatch, where, field
):
    path = tmp_path / "run.npz"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(Interrupted):
            fit_source(make_net(), "memory", tmp_path, checkpoint=path, checkpoint_every=2)
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    run = meta["training"]["run"]
    run[where[0]][where[1]] = 10**400 if where[0] == "position" else [10**400]
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, **dict(arrays, meta=np.array(json.dumps(meta))))
    with pytest.raises(ValueError, match=f"meta.training.run.{field}"):
        bp.load(hostile)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(epoch=99), "meta.training.epoch must be in the run's epochs"),
        (lambda t: t["run"]["position"].update(rows=10**6), "meta.training.run.position"),
        (lambda t: t["run"]["position"].update(epoch=1), "meta.training.run.position"),
    ],
)
def test_a_checkpoint_whose_fields_disagree_is_refused(tmp_path, monkeypatch, change, message):
    path = tmp_path / "run.npz"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 9)  # within epoch 2 (12 batches an epoch, saves every 2)
        with pytest.raises(Interrupted):
            fit_source(make_net(), "memory", tmp_path, checkpoint=path, checkpoint_every=2)
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    assert meta["training"]["run"]["position"]["epoch"] == 2
    change(meta["training"])
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, **dict(arrays, meta=np.array(json.dumps(meta))))
    with pytest.raises(ValueError, match=message):
        bp.load(hostile)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["loss"].append(1.0),  # a value more than the epochs trained
        lambda h: h.pop("loss"),  # no loss
        lambda h: h["lr"].pop(),  # figures of different lengths
    ],
)
def test_a_checkpoint_whose_history_does_not_fit_its_epochs_is_refused(tmp_path, edit):
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(make_net(), path, StopAt(2))
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    edit(meta["training"]["run"]["history"])
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="meta.training.run.history must hold 2 values"):
        fit(make_net(), path)


def dropout_net():
    return bp.Sequential(
        bp.Dense(5, 8, "relu"),
        bp.Dropout(0.5),
        bp.Dense(8, 3, "softmax"),
        loss="cross_entropy",
        seed=1,
    )


@pytest.mark.parametrize("at", [1, 4])
def test_a_run_with_dropout_resumed_from_its_checkpoint_ends_as_one_run(tmp_path, at):
    whole = dropout_net()
    fit(whole, None)
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(dropout_net(), path, StopAt(at))
    assert _format.read(path)[0].dropout.steps == at * 8  # (60 rows: 8 batches an epoch)
    again = dropout_net()
    fit(again, path)
    np.testing.assert_array_equal(again.params, whole.params)
    assert again.dropout_steps == whole.dropout_steps == 6 * 8


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("k", [1, 8])  # (the 8th save falls within epoch 2)
def test_a_run_with_dropout_interrupted_within_an_epoch_draws_its_masks_on(
    tmp_path, monkeypatch, source, k
):
    whole = dropout_net()
    fit_source(whole, source, tmp_path)
    path = tmp_path / "run.npz"
    with monkeypatch.context() as patch:
        interrupt_after(patch, k)
        with pytest.raises(Interrupted):
            fit_source(dropout_net(), source, tmp_path, checkpoint=path, checkpoint_every=2)
    model = _format.read(str(path))[0]
    assert model.training.run["position"]["epoch"] == (1 if k == 1 else 2)
    assert 0 < model.dropout.steps < whole.dropout_steps  # (the passes trained before it)
    again = dropout_net()
    fit_source(again, source, tmp_path, checkpoint=path, checkpoint_every=2)
    np.testing.assert_array_equal(again.params, whole.params)


def test_a_checkpoint_of_other_dropout_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(dropout_net(), path, StopAt(1))
    with pytest.raises(ValueError, match=r"another network .*dropout \[0.5, 0.0\]"):
        fit(make_net(), path)
