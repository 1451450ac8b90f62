"""Steps split across two threads (csrc/epoch.pxi, split_step): each thread
takes its share of the batch's rows through the forward pass, the loss and
the input gradients, then its part of every layer's parameter gradient over
the whole batch.  A split step computes the unsplit step's formulas, so
fit trains to the same numbers either way; with every product in the small
kernels (whose sums do not depend on how C is cut) they are the same bit
for bit."""

import contextlib
import multiprocessing
import threading

import numpy as np
import pytest
import scipy.sparse
from test_kernel_builds import run

import backprop as bp
from backprop import _engine, _kernels

OPTIMIZERS = {
    "sgd": lambda: bp.SGD(0.05),
    "momentum": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd-l2": lambda: bp.SGD(0.05, l2=1e-3),
    "clipped": lambda: bp.SGD(0.05, clip_norm=0.5),
    "adam": lambda: bp.Adam(1e-2),
    "adamw": lambda: bp.AdamW(1e-2, weight_decay=0.1),
    "rmsprop": lambda: bp.RMSProp(1e-3),
    "adagrad": lambda: bp.AdaGrad(1e-2),
}


def network(dtype="float32", dropout=0.0, activation="relu", n_threads=2, sizes=(24, 40, 16, 5)):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(bp.Dense(n_in, n_out, "softmax" if last else activation))
        if dropout and not last:
            layers.append(bp.Dropout(dropout, seed=3))
    return bp.Sequential(*layers, loss="cross_entropy", dtype=dtype, seed=0, n_threads=n_threads)


def data(rows=203, n_in=24, classes=5, dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, n_in)).astype(dtype), rng.integers(0, classes, rows)


def fit(
    mode,
    optimizer="sgd",
    dtype="float32",
    batch=50,
    weights=False,
    dropout=0.0,
    shuffle=True,
    steps=_kernels.split_steps,
    **kw,
):
    """(params, losses) of three epochs of fit with steps(mode): split_steps,
    or cut_steps (tests/test_cut_steps.py)."""
    X, y = data(dtype=dtype)
    net = network(dtype, dropout, **kw)
    sw = np.random.default_rng(2).uniform(0.2, 3, len(y)) if weights else None
    with steps(mode):
        history = net.fit(
            X,
            y,
            epochs=3,
            batch_size=batch,
            optimizer=OPTIMIZERS[optimizer](),
            sample_weight=sw,
            shuffle=shuffle,
            verbose=0,
        )
    return net.params.copy(), np.asarray(history.history["loss"])


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_split_fit_trains_as_the_unsplit_one(optimizer, dtype):
    """203 rows at batch 50: four split steps and a last batch of 3 rows,
    too few to split (it takes the one-thread step)."""
    split, split_loss = fit("always", optimizer, dtype)
    whole, whole_loss = fit("never", optimizer, dtype)
    np.testing.assert_allclose(split, whole, **tolerance(dtype))
    np.testing.assert_allclose(split_loss, whole_loss, **tolerance(dtype))


@pytest.mark.parametrize(
    "case",
    [
        dict(weights=True),
        dict(dropout=0.3),
        dict(dropout=0.3, optimizer="adam", weights=True),
        dict(batch=37),  # odd: shares of 18 and 19 rows
        dict(batch=16),  # the least that splits: 8 rows each
        dict(activation="tanh"),
        dict(activation="gelu", optimizer="adam"),  # keeps z for f′
        dict(sizes=(24, 5)),  # one layer: no input gradient at all
        dict(sizes=(24, 1, 5)),  # a hidden layer of one unit: one part of W is empty
        dict(shuffle=False, optimizer="adam"),  # the rows as stored, not gathered
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_a_split_fit_trains_as_the_unsplit_one_with(case):
    split, split_loss = fit("always", **case)
    whole, whole_loss = fit("never", **case)
    np.testing.assert_allclose(split, whole, **tolerance("float32"))
    np.testing.assert_allclose(split_loss, whole_loss, **tolerance("float32"))


@pytest.mark.parametrize("build", [b for b, runs in _kernels.kernel_builds().items() if runs])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "clipped"])
def test_with_every_product_in_the_kernels_a_split_fit_is_the_unsplit_one_bit_for_bit(
    build, optimizer
):
    with _kernels.use_kernels(build), _kernels.small_products("always"):
        split, _ = fit("always", optimizer, dropout=0.2)
        whole, _ = fit("never", optimizer, dropout=0.2)
    np.testing.assert_array_equal(split, whole)


def test_a_split_fit_is_the_same_each_time():
    first, first_loss = fit("always", "adam", batch=64, weights=True)
    again, again_loss = fit("always", "adam", batch=64, weights=True)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_loss, again_loss)


def test_a_one_thread_network_never_splits():
    """On one thread no step splits: the same bits as a fit that never
    splits, on a network split_steps("always") splits on two."""
    with _kernels.split_steps("always"):
        assert _engine.splits((24, 40, 16, 5), 50)
    one, _ = fit("always", "adam", n_threads=1)
    never, _ = fit("never", "adam", n_threads=1)
    np.testing.assert_array_equal(one, never)


def test_steps_split_only_when_asked_and_the_rule_takes_the_mid_sized_ones():
    assert not _engine.splits((64, 128, 64, 10), 64)  # the default: never
    with _kernels.split_steps("rule"):
        assert not _engine.splits((64, 32, 10), 32)  # W1: too small to gain
        assert not _engine.splits((64, 64, 10), 64)  # 2·64·64·64 ≈ 0.52 million operations
        assert _engine.splits((64, 64, 10), 128)  # … ≈ 1.05 million
        assert _engine.splits((64, 128, 64, 10), 64)  # W2
        assert not _engine.splits((784, 256, 10), 128)  # W3: BLAS's threads
        assert not _engine.splits((784, 1024, 1024, 10), 256)  # W4
        assert not _engine.splits((64, 128, 64, 10), 15)  # too few rows to cut in two
    with _kernels.split_steps("always"):
        assert _engine.splits((784, 1024, 1024, 10), 256)
        assert not _engine.splits((784, 1024, 1024, 10), 15)
    assert not _engine.splits((64, 128, 64, 10), 64)  # the mode is back


@pytest.mark.parametrize(
    "value, splits", [("", False), ("never", False), ("RULE", True), ("always", True)]
)
def test_backprop_split_steps_sets_the_mode_at_import(value, splits):
    result = run(
        "from backprop import _engine",
        "print(_engine.splits((64, 128, 64, 10), 64))",
        env={_kernels.SPLIT_ENV: value},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(splits)


def test_split_steps_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of never, rule, always"):
        with _kernels.split_steps("sometimes"):
            pass
    with pytest.raises(ValueError, match="at least the inputs and the outputs"):
        _engine.splits((10,), 32)


def test_a_sparse_input_trains_as_its_dense_rows_unsplit():
    """CSR input is never split: its first layer's products take the
    nonzeros, on one thread."""
    X, y = data()
    X[np.abs(X) < 1] = 0
    sparse = network()
    with _kernels.split_steps("always"):
        sparse.fit(scipy.sparse.csr_matrix(X), y, epochs=2, batch_size=50, verbose=0)
    dense = network()
    with _kernels.split_steps("never"):
        dense.fit(X, y, epochs=2, batch_size=50, verbose=0)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [_kernels.split_steps, _kernels.cut_steps])
def test_networks_fitting_in_several_python_threads_each_train_as_alone(steps):
    """Calls running at once take one thread each, so none splits or cuts
    its steps (nor holds the team): every network ends as it does trained
    alone, to rounding.  (The mode is set once, around the threads: a block
    of steps(mode) in each would leave the mode of whichever ended last.)"""
    expected = {opt: fit("always", opt, steps=steps)[0] for opt in ("sgd", "adam", "rmsprop")}
    results, errors = {}, []

    def train(opt):
        try:
            for _ in range(3):
                results.setdefault(opt, []).append(fit("always", opt, steps=as_set)[0])
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(opt,)) for opt in expected]
    with steps("always"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors and all(not t.is_alive() for t in threads)
    for opt, params in results.items():
        for p in params:  # (alone or not, the same formulas: to rounding)
            np.testing.assert_allclose(p, expected[opt], **tolerance("float32"))


def as_set(mode):
    """fit's steps= for the mode as it is set."""
    return contextlib.nullcontext()


def _fit_in_child(queue, steps):
    with _kernels.small_products("always"):
        queue.put(fit("always", "adam", steps=steps)[0])


@pytest.mark.parametrize("steps", [_kernels.split_steps, _kernels.cut_steps])
def test_a_child_forked_while_a_split_epoch_runs_trains_right(steps):
    """The team's workers do not survive a fork: the child is not held by
    the parent's epoch, and trains (on threads of its own, or on one: the
    parent's call was running when it forked; to rounding either way).
    Every product takes the small kernels, so that no thread is inside
    OpenBLAS's thread control when the fork comes: a lock of OpenBLAS's
    held then stays held in the child, whatever the caller."""
    with _kernels.small_products("always"):
        expected = fit("always", "adam", steps=steps)[0]
    stop = threading.Event()

    def keep_fitting():
        X, y = data(rows=4000)
        net = network()
        with _kernels.small_products("always"):  # (steps("always"): set around the thread)
            while not stop.is_set():
                net.fit(X, y, epochs=1, batch_size=64, verbose=0)

    background = threading.Thread(target=keep_fitting)
    with steps("always"):  # (for the whole of the background's fits)
        background.start()
        try:
            context = multiprocessing.get_context("fork")
            for _ in range(3):
                queue = context.Queue()
                child = context.Process(target=_fit_in_child, args=(queue, steps))
                child.start()
                child.join(timeout=60)
                assert child.exitcode == 0, "the child hung or crashed"
                got = queue.get(timeout=5)
                np.testing.assert_allclose(got, expected, **tolerance("float32"))
        finally:
            stop.set()
            background.join(timeout=60)
