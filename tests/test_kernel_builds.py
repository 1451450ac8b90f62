"""The builds of the vectorised kernels (csrc/simd/): each one this CPU runs
against the numpy formulas and against the portable build, the choice by
BACKPROP_KERNELS, and the optimizer update on several threads."""

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from test_optimizers import CASES, KINDS, numpy_steps

import backprop as bp
from backprop import _kernels, _ops
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss

BUILDS = _kernels.kernel_builds()
RUNNABLE = [name for name, runs in BUILDS.items() if runs]
LONG = 3 * 2**16 + 37  # four chunks of the threaded update, the last one short
# times(): the CPU time (clock ticks) each thread of the process was charged
CPU_TIMES = (
    "def times():",
    "    out = {}",
    "    for tid in os.listdir('/proc/self/task'):",
    "        with open(f'/proc/self/task/{tid}/stat') as f:",
    "            fields = f.read().rsplit(')', 1)[1].split()",
    "        out[tid] = int(fields[11]) + int(fields[12])",
    "    return out",
)


# Beside the package these tests import (installed, or built in place), so
# that a fresh process imports it too rather than a source folder.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(bp.__file__)))


def run(*code, env=None):
    """`python -c` in a fresh process with BACKPROP_KERNELS and
    BACKPROP_SPLIT_STEPS and BACKPROP_CUT_STEPS as `env` says (unset unless
    it names them)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in (_kernels.ENV, _kernels.SPLIT_ENV, _kernels.CUT_ENV)
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", "\n".join(code)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        cwd=HOME,
    )


def test_the_portable_build_runs_everywhere_and_auto_takes_the_widest():
    assert BUILDS["portable"] is True
    assert list(BUILDS) == ["portable", "avx2", "avx512"]
    assert _kernels.kernels_in_use() == (
        os.environ.get(_kernels.ENV) or [b for b in BUILDS if BUILDS[b]][-1]
    )


@pytest.mark.parametrize("name", RUNNABLE)
def test_backprop_kernels_chooses_the_build_at_import(name):
    out = run(
        "import backprop._kernels as k; print(k.kernels_in_use())", env={"BACKPROP_KERNELS": name}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_an_unknown_build_is_refused_naming_the_variable():
    out = run("import backprop", env={"BACKPROP_KERNELS": "sse9"})
    assert out.returncode != 0
    assert (
        "ValueError: BACKPROP_KERNELS must be one of auto, portable, avx2, avx512; got 'sse9'"
        in out.stderr
    )


@pytest.mark.skipif(all(BUILDS.values()), reason="this CPU runs every build")
def test_a_build_this_cpu_cannot_run_is_refused_not_run():
    missing = next(name for name, runs in BUILDS.items() if not runs)
    out = run("import backprop", env={"BACKPROP_KERNELS": missing})
    assert out.returncode != 0
    assert f"RuntimeError: BACKPROP_KERNELS={missing}: this CPU cannot run that build" in out.stderr


def test_backprop_info_names_the_build_in_use():
    out = run("import backprop.cli as c; c.main(['info'])", env={"BACKPROP_KERNELS": "portable"})
    assert out.returncode == 0, out.stderr
    assert "kernels: portable (BACKPROP_KERNELS=portable; builds: portable, avx2" in out.stdout


def update(build, kind, kw, w, grads, threads=1):
    """w after one update per gradient, in that build; and its state."""
    w = w.copy()
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    with _kernels.use_kernels(build):
        for t, g in enumerate(grads):
            _ops.optimizer_update(w, g, s1, s2, KINDS[kind], 0.05, steps=t, threads=threads, **kw)
    return w, s1, s2


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", CASES)
def test_every_build_updates_as_the_formula_and_the_portable_build(build, kind, kw, dtype):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=LONG)
    grads = [rng.normal(size=LONG).astype(dtype) for _ in range(3)]
    w, s1, s2 = update(build, kind, kw, w0.astype(dtype), grads, threads=2)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    expect = numpy_steps(kind, w0, grads, 0.05, **kw)
    np.testing.assert_allclose(w, expect, rtol=tol, atol=tol * max(1, np.abs(expect).max()))
    portable = update("portable", kind, kw, w0.astype(dtype), grads)
    for mine, theirs in zip((w, s1, s2), portable):
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol * max(1, np.abs(theirs).max()))


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("kind,kw", [("adam", {}), ("sgd", dict(momentum=0.9)), ("rmsprop", {})])
def test_the_update_is_the_same_on_one_thread_and_on_several(build, kind, kw):
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=LONG).astype(np.float32)
    grads = [rng.normal(size=LONG).astype(np.float32) for _ in range(3)]
    one = update(build, kind, kw, w0, grads, threads=1)
    for threads in (2, 3, 64):
        for mine, theirs in zip(update(build, kind, kw, w0, grads, threads=threads), one):
            np.testing.assert_array_equal(mine, theirs)


def test_updates_from_several_python_threads_at_once_each_finish_right():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=LONG).astype(np.float32)
    grads = [rng.normal(size=LONG).astype(np.float32) for _ in range(4)]
    expect = update(_kernels.kernels_in_use(), "adam", {}, w0, grads)[0]
    results, errors = [None] * 4, []

    def work(i):
        try:
            w, s1, s2 = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
            for _ in range(20):  # many runs, so that the threads' runs overlap
                w[:], s1[:], s2[:] = w0, 0, 0
                for t, g in enumerate(grads):
                    _ops.optimizer_update(w, g, s1, s2, KINDS["adam"], 0.05, steps=t, threads=2)
            results[i] = w
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for w in results:
        np.testing.assert_array_equal(w, expect)


def thread_ticks(*code, env):
    """The CPU ticks of threads in a fresh process running `code`, which
    prints them; `times()` there reads each thread's from /proc."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc")
    done = run("import os, threading, numpy as np, backprop as bp", *CPU_TIMES, *code, env=env)
    assert done.returncode == 0, done.stderr
    return [int(ticks) for ticks in done.stdout.split()]


def test_an_update_on_two_threads_takes_one_worker_after_one_on_four_started_three():
    # the team keeps the workers an earlier run started; a run that asks for
    # fewer threads leaves the rest waiting (seen in the CPU time that each
    # thread of a fresh process is charged, from /proc)
    charged = thread_ticks(
        "from backprop import _ops",
        "from backprop._codes import OptimizerKind",
        "w, g, s1, s2 = (np.ones(1 << 21, np.float32) for _ in range(4))",
        "def update(threads, calls):",
        "    for _ in range(calls):",
        "        _ops.optimizer_update(w, g, s1, s2, OptimizerKind.ADAM, 1e-6, threads=threads)",
        "update(4, 20)",
        "before = times()",
        "update(2, 200)",
        "after = times()",
        "me = str(threading.get_native_id())",
        "print(*(after[t] - before.get(t, 0) for t in after if t != me))",
        env={"OPENBLAS_NUM_THREADS": "1"},
    )
    # (a worker left out is still woken, and may be charged a tick for it)
    assert sum(ticks > sum(charged) / 4 for ticks in charged) == 1, charged


def test_apply_gradients_of_a_one_thread_network_runs_on_one_thread():
    # the update's threads follow the network's n_threads, not those of the
    # last call of another network (whose update started a worker)
    workers = thread_ticks(
        "def net(threads):",
        "    n = bp.Sequential(bp.Dense(1024, 1024, 'relu'), bp.Dense(1024, 2, 'softmax'),",
        "                      loss='cross_entropy', seed=0, n_threads=threads, dtype='float32')",
        "    n.optimizer = bp.Adam(1e-6)",
        "    return n",
        "X, y = np.ones((4, 1024), np.float32), np.array([0, 1, 0, 1])",
        "two, one = net(2), net(1)",
        "one.loss_and_grad(X, y)",
        "older = set(os.listdir('/proc/self/task'))",
        "two.train_step(X, y)",
        "before = times()",
        "for _ in range(300):",
        "    one.apply_gradients()",
        "after = times()",
        "print(*(after[t] - before.get(t, 0) for t in after if t not in older))",
        env={"OPENBLAS_NUM_THREADS": "2"},
    )
    assert not any(workers), workers


def _update_in_child(queue):
    w = np.ones(LONG, np.float32)
    _ops.optimizer_update(w, w.copy(), w.copy(), w.copy(), KINDS["adam"], 0.5, steps=0, threads=2)
    queue.put(float(w[0]))


def test_a_forked_child_updates_on_several_threads_after_its_parent_did():
    w = np.ones(LONG, np.float32)
    _ops.optimizer_update(w, w.copy(), w.copy(), w.copy(), KINDS["adam"], 0.5, steps=0, threads=2)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_update_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the child hung or crashed"
    assert queue.get(timeout=5) == float(w[0])


@pytest.mark.parametrize("build", RUNNABLE)
def test_every_build_trains_digits_with_adam(build):
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True)
    with _kernels.use_kernels(build):
        net, again = (
            bp.Sequential(
                bp.Dense(64, 32, "relu"), bp.Dense(32, 10, "softmax"), loss="cross_entropy", seed=0
            )
            for _ in range(2)
        )
        for n in (net, again):
            n.fit(X_train, y_train, epochs=10, batch_size=32, optimizer=bp.Adam(lr=0.01), verbose=0)
    assert net.evaluate(X_test, y_test)["accuracy"] > 0.95
    np.testing.assert_array_equal(net.params, again.params)  # same build: bit for bit


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("optimizer", [bp.Adam(1e-3), bp.SGD(0.01, momentum=0.9), bp.RMSProp(1e-3)])
def test_fit_steps_layer_by_layer_as_train_step_steps_after_the_backward_pass(build, optimizer):
    """fit takes each layer's step as its gradient is found, train_step one
    update after the whole backward pass: the same numbers, on a network
    long enough for the update's threads (203,530 parameters).  (fit's
    steps unsplit and uncut, as train_step's: tests/test_split_steps.py and
    tests/test_cut_steps.py compare the others.)"""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(96, 784)).astype(np.float32), rng.integers(0, 10, 96)
    with _kernels.use_kernels(build):
        fitted, stepped = (
            bp.Sequential(
                bp.Dense(784, 256, "relu"),
                bp.Dense(256, 10, "softmax"),
                loss="cross_entropy",
                dtype="float32",
                seed=0,
                n_threads=2,
            )
            for _ in range(2)
        )
        with _kernels.split_steps("never"), _kernels.cut_steps("never"):
            fitted.fit(X, y, epochs=2, batch_size=32, shuffle=False, optimizer=optimizer, verbose=0)
        stepped.optimizer = optimizer
        for _ in range(2):
            for i in range(0, 96, 32):
                stepped.train_step(X[i : i + 32], y[i : i + 32])
    assert fitted.optimizer_steps == stepped.optimizer_steps == 6
    np.testing.assert_array_equal(fitted.params, stepped.params)


def softmax_case(build, dtype, rows, cols, weighted):
    """Logits over a wide range (and rows of equal logits), softmax and the
    softmax cross-entropy of the chosen build on them."""
    rng = np.random.default_rng(rows * cols)
    z = (rng.normal(size=(rows, cols)) * rng.choice([0.1, 3, 40], size=(rows, 1))).astype(dtype)
    z[0] = 7.0  # (a row of ties)
    y = np.eye(cols, dtype=dtype)[rng.integers(0, cols, rows)]
    y[-1] = 1 / cols  # (soft targets)
    w = rng.uniform(0, 2, rows).astype(dtype) if weighted else None
    with _kernels.use_kernels(build):
        probs = z.copy()
        _ops.act_forward(probs, int(Act.SOFTMAX))
        a, delta = z.copy(), np.empty_like(z)
        loss = _ops.loss_forward_backward(
            int(Loss.CROSS_ENTROPY), int(Act.SOFTMAX), 0.0, a, delta, y, w
        )
    return z, y, w, probs, a, delta, loss


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (32, 10), (33, 17), (7, 100)])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_build_takes_softmax_and_its_cross_entropy_as_the_formula(
    build, dtype, rows, cols, weighted
):
    """softmax (the activation) and the fused softmax cross-entropy (value
    and ∂L/∂z) of each build, against scipy's log_softmax in float64 and
    against the portable build."""
    from scipy.special import log_softmax

    z, y, w, probs, a, delta, loss = softmax_case(build, dtype, rows, cols, weighted)
    log_p = log_softmax(z.astype(np.float64), axis=1)
    weights = np.ones(rows) if w is None else w.astype(np.float64)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(probs, np.exp(log_p), rtol=tol, atol=tol)
    np.testing.assert_array_equal(a, probs)  # (the same softmax)
    expect = weights[:, None] * (np.exp(log_p) - y) / rows
    np.testing.assert_allclose(delta, expect, rtol=tol, atol=tol / rows)
    value = -(weights * (y * log_p).sum(axis=1)).mean()
    assert loss == pytest.approx(value, rel=tol, abs=tol)
    portable = softmax_case("portable", dtype, rows, cols, weighted)
    for mine, theirs in zip((probs, a, delta), portable[3:6]):
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol / rows)
    assert loss == pytest.approx(portable[6], rel=tol, abs=tol)


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_finds_a_nan_or_an_infinity_anywhere(build, dtype):
    """The finiteness check of each build (every input fit takes passes it):
    one bad value at any position of short and long arrays, and none."""
    with _kernels.use_kernels(build):
        for n in (1, 7, 16, 33, 1000):
            x = np.linspace(-3e38 if dtype == np.float32 else -1e308, 1, n).astype(dtype)
            assert _ops.all_finite(x)
            for bad in (np.nan, np.inf, -np.inf):
                for at in sorted({0, n // 2, n - 1}):
                    y = x.copy()
                    y[at] = bad
                    assert not _ops.all_finite(y), (n, bad, at)


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_keeps_the_product_of_row_sums_below_overflow(build, dtype):
    """Unweighted, softmax_ce sums log s_i as the log of Π s_i, folded into
    the total whenever it passes 1e300: 500 rows of nearly equal logits over
    1000 classes make Π s_i ≈ 1000^500, far beyond any float."""
    from scipy.special import log_softmax

    rng = np.random.default_rng(11)
    rows, cols = 500, 1000
    z = (rng.normal(size=(rows, cols)) * 0.01).astype(dtype)
    y = np.eye(cols, dtype=dtype)[rng.integers(0, cols, rows)]
    with _kernels.use_kernels(build):
        a, delta = z.copy(), np.empty_like(z)
        loss = _ops.loss_forward_backward(
            int(Loss.CROSS_ENTROPY), int(Act.SOFTMAX), 0.0, a, delta, y
        )
    value = -(y * log_softmax(z.astype(np.float64), axis=1)).sum(axis=1).mean()
    assert np.isfinite(loss)
    assert loss == pytest.approx(value, rel=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("at", [0, 4, 9])
def test_every_build_spoils_only_the_row_of_a_bad_logit(build, dtype, bad, at):
    """A NaN or +inf logit makes its row's softmax and δ NaN, and the loss
    NaN (fit then undoes the epoch); the other rows are as without it."""
    rng = np.random.default_rng(12)
    z = rng.normal(size=(6, 10)).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 6)]
    with _kernels.use_kernels(build):
        clean_a, clean_d = z.copy(), np.empty_like(z)
        _ops.loss_forward_backward(
            int(Loss.CROSS_ENTROPY), int(Act.SOFTMAX), 0.0, clean_a, clean_d, y
        )
        z[2, at] = bad
        a, delta = z.copy(), np.empty_like(z)
        loss = _ops.loss_forward_backward(
            int(Loss.CROSS_ENTROPY), int(Act.SOFTMAX), 0.0, a, delta, y
        )
        probs = z.copy()
        _ops.act_forward(probs, int(Act.SOFTMAX))
    assert np.isnan(loss)
    assert np.isnan(a[2]).all() and np.isnan(delta[2]).all() and np.isnan(probs[2]).all()
    others = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(a[others], clean_a[others])
    np.testing.assert_array_equal(delta[others], clean_d[others])


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_takes_the_extremes_of_the_finite_values_as_finite(build, dtype):
    """±max (all exponent bits set but the lowest), the smallest subnormal
    and −0 are finite; the bit test must not take them for inf or NaN."""
    info = np.finfo(dtype)
    edges = np.array([info.max, -info.max, info.smallest_subnormal, -0.0, 0.0], dtype)
    with _kernels.use_kernels(build):
        for n in (1, 5, 17, 70):
            assert _ops.all_finite(np.resize(edges, n))


def test_the_avx512_rule_sends_narrow_results_and_weight_gradients_to_blas():
    """kernels.c's table for AVX-512: A @ B and A @ Bᵀ of results at least 16
    columns wide up to 2^20 multiply-adds, every Aᵀ @ B to BLAS; the other
    builds have no minimum width."""
    if not BUILDS["avx512"]:
        pytest.skip("this CPU does not run the AVX-512 build")
    with _kernels.use_kernels("avx512"):
        for f32 in (True, False):
            assert _ops.small_gemm_rule(f32, "nn", 32, 16, 64)
            assert not _ops.small_gemm_rule(f32, "nn", 32, 15, 64)
            assert _ops.small_gemm_rule(f32, "nt", 32, 16, 64)
            assert not _ops.small_gemm_rule(f32, "nt", 32, 10, 64)
            assert not _ops.small_gemm_rule(f32, "tn", 8, 16, 8)
    with _kernels.use_kernels("portable"):
        assert _ops.small_gemm_rule(True, "nn", 4, 1, 4)


def first_largest(row):
    """The label rule of kernels.pxd (row_argmax), in Python: best starts at
    0 and moves to j only where row[j] > row[best]."""
    best = 0
    for j in range(1, len(row)):
        if row[j] > row[best]:
            best = j
    return best


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_labels_a_row_by_its_first_largest_value(build, dtype):
    """rows.h's argmax at every width from 1 to past two vectors of the
    widest build: ties (small integers), ±inf, and NaN, which is never the
    largest (a NaN first gives 0), as the scalar rule and, NaN aside,
    numpy's argmax."""
    rng = np.random.default_rng(21)
    with _kernels.use_kernels(build):
        for cols in range(1, 41):
            A = rng.integers(-3, 4, size=(50, cols)).astype(dtype)
            A[1] = -np.inf
            A[2, rng.integers(0, cols)] = np.inf
            got = _ops.labels(int(Loss.CROSS_ENTROPY), A)
            np.testing.assert_array_equal(got, np.argmax(A, axis=1), err_msg=str(cols))
            A[3, 0] = np.nan
            A[4, rng.integers(0, cols)] = np.nan
            A[5] = np.nan
            A[6, : cols // 2] = np.nan
            got = _ops.labels(int(Loss.CROSS_ENTROPY), A)
            np.testing.assert_array_equal(got, [first_largest(r) for r in A], err_msg=str(cols))


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_build_sums_the_bias_gradient_in_row_order(build, dtype):
    """db = Σ_rows δ (rows.h's col_sums) at widths around the vector
    widths: each column summed in row order, so equal bit for bit to a
    running sum in the same dtype (numpy's add.accumulate) in every build,
    and to float64's sum within rounding."""
    rng = np.random.default_rng(22)
    with _kernels.use_kernels(build):
        for rows, cols in [(1, 1), (32, 10), (32, 32), (7, 17), (64, 70), (3, 129)]:
            delta = rng.normal(size=(rows, cols)).astype(dtype)
            x = rng.normal(size=(rows, 3)).astype(dtype)
            W = np.zeros((3, cols), dtype)
            dW, db = np.empty_like(W), np.full(cols, np.nan, dtype)
            _ops.dense_backward(dW, db, delta, x, W)
            np.testing.assert_array_equal(db, np.add.accumulate(delta, axis=0)[-1])
            exact = delta.astype(np.float64).sum(axis=0)
            bound = rows * np.finfo(dtype).eps * np.abs(delta).sum(axis=0)
            assert (np.abs(db - exact) <= bound).all()


@pytest.mark.parametrize("build", RUNNABLE)
def test_every_build_counts_the_rows_labelled_right(build):
    """A train_step's batch accuracy (rows.h's argmax_agree: the outputs'
    label against the targets') is the fraction numpy's argmax finds."""
    rng = np.random.default_rng(23)
    with _kernels.use_kernels(build):
        net = bp.Sequential(
            bp.Dense(8, 10, activation="softmax", dtype="float32"),
            loss="cross_entropy",
            dtype="float32",
            seed=3,
        )
        X = rng.normal(size=(40, 8)).astype(np.float32)
        Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 40)]
        net._engine_for(40, True)
        engine = net._engine
        engine.train_step(X, Y, 0.0)
        expect = np.mean(np.argmax(net.predict_proba(X), axis=1) == np.argmax(Y, axis=1))
        assert engine.batch_accuracy(Y) == pytest.approx(expect)
