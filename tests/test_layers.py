"""Dense on its own: shapes, numpy formulas, single samples, initialisation."""

import numpy as np
import pytest

import backprop as bp


def np_act(name, z):
    return {
        "identity": z,
        "tanh": np.tanh(z),
        "relu": np.maximum(z, 0),
        "sigmoid": 1 / (1 + np.exp(-z)),
    }[name]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["identity", "tanh", "relu", "sigmoid"])
def test_forward_backward_match_numpy(dtype, act):
    rng = np.random.default_rng(0)
    layer = bp.Dense(5, 3, activation=act, seed=0, dtype=dtype)
    assert layer.W.shape == (5, 3) and layer.b.shape == (3,)
    layer.b = rng.normal(size=3)
    x = rng.normal(size=(8, 5))
    W, b = layer.W.astype(float), layer.b.astype(float)
    a = layer.forward(x)
    assert a.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    expect = np_act(act, x @ W + b)
    np.testing.assert_allclose(a, expect, rtol=rtol, atol=rtol)

    g = rng.normal(size=(8, 3))
    dx = layer.backward(g)
    fprime = {
        "identity": 1,
        "tanh": 1 - expect**2,
        "relu": (expect > 0) * 1.0,
        "sigmoid": expect * (1 - expect),
    }[act]
    delta = g * fprime
    np.testing.assert_allclose(layer.dW, x.T @ delta, rtol=rtol * 10, atol=rtol * 10)
    np.testing.assert_allclose(layer.db, delta.sum(0), rtol=rtol * 10, atol=rtol * 10)
    np.testing.assert_allclose(dx, delta @ W.T, rtol=rtol * 10, atol=rtol * 10)


def test_one_sample_is_a_vector():
    layer = bp.Dense(3, 2, activation="tanh", seed=1)
    x = np.array([0.1, -0.2, 0.3])
    batch = layer.forward(x[None])
    a = layer.forward(x)
    assert a.shape == (2,)
    np.testing.assert_allclose(a, batch[0])
    dx = layer.backward(np.array([1.0, -1.0]))
    assert dx.shape == (3,)
    np.testing.assert_allclose(layer.dW, np.outer(x, np.array([1.0, -1.0]) * (1 - a**2)))


def test_non_contiguous_and_integer_inputs_are_converted():
    layer = bp.Dense(3, 2, seed=0)
    x = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::-1][:, :3]  # strided, reversed
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(layer.forward(x), x.astype(float) @ layer.W + layer.b)
    xf = np.asfortranarray(np.ones((2, 3), np.float32))
    assert layer.forward(xf).dtype == np.float64


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward"):
        bp.Dense(2, 2).backward(np.ones((1, 2)))


def test_step_is_forward_only():
    layer = bp.Dense(2, 1, activation="step")
    layer.W = [[1.0], [1.0]]
    layer.b = [-1.5]  # AND
    X, y = bp.datasets.truth_table("and")
    np.testing.assert_array_equal(layer.forward(X)[:, 0], y)
    with pytest.raises(ValueError, match="step"):
        layer.backward(np.ones((4, 1)))


def test_seeded_initialisation_is_reproducible():
    a, b = bp.Dense(10, 7, seed=42), bp.Dense(10, 7, seed=42)
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.array_equal(a.W, bp.Dense(10, 7, seed=43).W)
    np.testing.assert_array_equal(a.b, 0)


@pytest.mark.parametrize(
    "init,check",
    [
        ("he", lambda W, n_in, n_out: abs(W.std() - np.sqrt(2 / n_in)) < 0.05 * np.sqrt(2 / n_in)),
        (
            "xavier",
            lambda W, n_in, n_out: (
                np.abs(W).max() <= np.sqrt(6 / (n_in + n_out))
                and abs(W.std() - np.sqrt(2 / (n_in + n_out))) < 0.05 * np.sqrt(2 / (n_in + n_out))
            ),
        ),
        ("uniform", lambda W, n_in, n_out: np.abs(W).max() <= 1 / np.sqrt(n_in)),
        ("normal", lambda W, n_in, n_out: abs(W.std() - 1 / np.sqrt(n_in)) < 0.05 / np.sqrt(n_in)),
        ("zeros", lambda W, n_in, n_out: not W.any()),
    ],
)
def test_initialisation_schemes(init, check):
    layer = bp.Dense(400, 300, init=init, seed=0)
    assert check(layer.W, 400, 300)


def test_default_init_follows_the_activation():
    assert bp.Dense(2, 2, activation="relu").init == "he"
    assert bp.Dense(2, 2, activation="tanh").init == "xavier"


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(n_in=0, n_out=2), ValueError, "n_in"),
        (dict(n_in=2, n_out=2.5), TypeError, "n_out"),
        (dict(n_in=2, n_out=2, activation="mish"), ValueError, "activation"),
        (dict(n_in=2, n_out=2, init="lecun"), ValueError, "init"),
        (dict(n_in=2, n_out=2, dtype="int32"), TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bp.Dense(**kwargs)


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (np.ones((2, 4)), ValueError, "3 columns"),
        (np.ones(4), ValueError, "3 length"),
        (np.ones((2, 3, 1)), ValueError, "1-D or 2-D"),
        (np.array([[1, np.nan, 3]]), ValueError, "NaN"),
        (np.array([[1, np.inf, 3]]), ValueError, "NaN or infinity"),
        (np.ones((2, 3), complex), TypeError, "real numbers"),
        (np.array([["a", "b", "c"]]), TypeError, "real numbers"),
        (np.ones((0, 3)), ValueError, "empty"),
    ],
)
def test_bad_forward_inputs(x, exc, match):
    with pytest.raises(exc, match=match):
        bp.Dense(3, 2).forward(x)


def test_bad_backward_gradient_shape():
    layer = bp.Dense(3, 2)
    layer.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="grad"):
        layer.backward(np.ones((4, 3)))


def test_setting_weights_checks_shape():
    layer = bp.Dense(3, 2)
    with pytest.raises(ValueError, match="W must have shape"):
        layer.W = np.ones((2, 3))
