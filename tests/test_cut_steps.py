"""Cut steps (csrc/epoch.pxi): a large layer's products cut between two
threads by the columns of their result, each thread taking the step on its
own rows of W.  A cut step computes the uncut step's formulas, so fit trains
to the same numbers either way; with every product in the small kernels
(whose sums do not depend on how C is cut) they are the same bit for bit."""

import numpy as np
import pytest
from test_kernel_builds import run
from test_split_steps import OPTIMIZERS, network, tolerance
from test_split_steps import fit as split_fit

import backprop as bp
from backprop import _engine, _kernels


def fit(mode, *args, **kw):
    """(params, losses) of three epochs of fit with cut_steps(mode)."""
    return split_fit(mode, *args, steps=_kernels.cut_steps, **kw)


def assert_same_training(a, b, dtype="float32"):
    np.testing.assert_allclose(a[0], b[0], **tolerance(dtype))
    np.testing.assert_allclose(a[1], b[1], **tolerance(dtype))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_cut_fit_trains_as_the_uncut_one(optimizer, dtype):
    assert_same_training(fit("always", optimizer, dtype), fit("never", optimizer, dtype), dtype)


@pytest.mark.parametrize(
    "case",
    [
        dict(weights=True),
        dict(dropout=0.3),
        dict(dropout=0.3, optimizer="adam", weights=True),
        dict(batch=1),  # one row a step: the forward product is a gemv
        dict(activation="tanh"),
        dict(activation="gelu", optimizer="adam"),  # keeps z for f′
        dict(sizes=(24, 5)),  # one layer: no input gradient
        dict(sizes=(24, 1, 5)),  # a hidden layer of one unit: one part is empty
        dict(sizes=(24, 1, 5), dropout=0.3, activation="tanh"),  # … and its dropout
        dict(dtype="float64", dropout=0.3, optimizer="adam"),
        dict(shuffle=False, optimizer="adam"),  # the rows as stored, not gathered
        dict(n_threads=3),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_a_cut_fit_trains_as_the_uncut_one_with(case):
    assert_same_training(fit("always", **case), fit("never", **case))


@pytest.mark.parametrize("build", [b for b, runs in _kernels.kernel_builds().items() if runs])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "clipped"])
def test_with_every_product_in_the_kernels_a_cut_fit_is_the_uncut_one_bit_for_bit(build, optimizer):
    with _kernels.use_kernels(build), _kernels.small_products("always"):
        cut, _ = fit("always", optimizer, dropout=0.2)
        whole, _ = fit("never", optimizer, dropout=0.2)
    np.testing.assert_array_equal(cut, whole)


def test_a_cut_fit_is_the_same_each_time():
    first = fit("always", "adam", batch=64, weights=True)
    again = fit("always", "adam", batch=64, weights=True)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_on_one_thread_nothing_is_cut():
    """n_threads=1: the call may not use two threads, so "always" trains
    exactly as "never"."""
    cut = fit("always", "adam", n_threads=1)
    whole = fit("never", "adam", n_threads=1)
    np.testing.assert_array_equal(cut[0], whole[0])


def test_the_rule_cuts_a_large_network_and_trains_as_blas():
    """By the rule (the default), 256 inputs to 128 units at batch 64 are
    large enough to cut (2·64·256·128 ≈ 4.2 million operations a product),
    the rest of the network is not."""
    sizes = (256, 128, 16, 5)
    assert _engine.cuts(sizes, 64) and not _engine.cuts(sizes, 16)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 256)).astype("float32")  # (the last batch, 44 rows, not cut)
    y = rng.integers(0, 5, 300)
    results = []
    for mode in ("rule", "never"):
        net = network(sizes=sizes)
        with _kernels.cut_steps(mode):
            history = net.fit(X, y, epochs=2, batch_size=64, optimizer=bp.SGD(0.05), verbose=0)
        results.append((net.params.copy(), np.asarray(history.history["loss"])))
    assert_same_training(*results)


# (the variable, the line of backprop info, the modes, the default, a mode)
SETTINGS = [
    (_kernels.CUT_ENV, "cut steps", "rule, never, always", _kernels.cut_mode, "never"),
    (_kernels.SPLIT_ENV, "split steps", "never, rule, always", _kernels.split_mode, "rule"),
]


@pytest.mark.parametrize("env, line, modes, mode_now, mode", SETTINGS, ids=lambda v: str(v))
def test_the_mode_is_read_from_the_environment_and_named_by_backprop_info(
    env, line, modes, mode_now, mode
):
    result = run("from backprop.cli import main", "main(['info'])", env={env: mode})
    assert result.returncode == 0, result.stderr
    assert f"{line}: {mode} ({env}={mode})" in result.stdout
    assert mode_now() == modes.split(", ")[0]  # (this process: the default)


@pytest.mark.parametrize("env, line, modes, mode_now, mode", SETTINGS, ids=lambda v: str(v))
def test_an_unknown_mode_is_refused_naming_the_variable(env, line, modes, mode_now, mode):
    result = run("import backprop", env={env: "sometimes"})
    assert result.returncode != 0
    assert f"{env} must be one of {modes}; got 'sometimes'" in result.stderr


def test_cut_steps_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of never, rule, always"):
        with _kernels.cut_steps("sometimes"):
            pass
