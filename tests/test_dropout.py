"""Dropout: the kernels and the mask stream against plain numpy, the layer,
and the network that trains with it.

The references are written from the formulas (csrc/kernels.pxd, the mask
stream of csrc/shuffle.pxd) in numpy, independently of backprop."""

import numpy as np
import pytest

from backprop import _ops
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss
from backprop._engine import Engine
from backprop.layout import Layout

GAMMA = 0x9E3779B97F4A7C15


# ------------------------------------------------------- numpy references ---


def mix64(z):
    """SplitMix64's output function, on Python integers modulo 2⁶⁴ or on
    arrays in uint64 arithmetic (which wraps)."""
    if isinstance(z, int):
        z %= 2**64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2**64
        return z ^ (z >> 31)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ref_mask(rows, cols, seed, step, layer, rate, first_row=0):
    """The mask of kernels' dropout_mask, from its comment: the stream of
    (seed, step, layer), row r's draws r·⌈cols/2⌉ + 1 …, each giving two
    units 32 bits each (low half first), kept when they are ≥ ⌊rate·2³²⌋."""
    key = mix64(mix64(seed + (step + 1) * GAMMA) + (layer + 1) * GAMMA)
    half = (cols + 1) // 2
    r = np.arange(first_row, first_row + rows, dtype=np.uint64)[:, None]
    counters = r * np.uint64(half) + np.arange(1, half + 1, dtype=np.uint64)[None, :]
    draws = mix64(np.uint64(key) + counters * np.uint64(GAMMA))
    bits = np.empty((rows, 2 * half), np.uint64)
    bits[:, 0::2] = draws & np.uint64(0xFFFFFFFF)
    bits[:, 1::2] = draws >> np.uint64(32)
    threshold = min(int(rate * 2**32), 2**32 - 1)
    return (bits[:, :cols] >= np.uint64(threshold)).astype(np.uint8)


def mask_of(rows, cols, seed=7, step=0, layer=0, rate=0.3, first_row=0):
    mask = np.empty((rows, cols), np.uint8)
    _ops.dropout_mask(mask, seed, step, layer, rate, first_row)
    return mask


# ---------------------------------------------------------------- kernels ---


@pytest.mark.parametrize("cols", [1, 2, 7, 64])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_the_mask_is_the_stream_its_comment_describes(cols, rate):
    for seed, step, layer, first in [(7, 0, 0, 0), (2**63 + 5, 10**12, 3, 40), (0, 1, 1, 2)]:
        np.testing.assert_array_equal(
            mask_of(50, cols, seed, step, layer, rate, first),
            ref_mask(50, cols, seed, step, layer, rate, first),
        )


def test_rows_of_a_mask_drawn_alone_are_those_of_the_whole_batch():
    whole = mask_of(100, 33)
    np.testing.assert_array_equal(mask_of(17, 33, first_row=40), whole[40:57])


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.8])
def test_the_fraction_of_zeros_is_the_rate(rate):
    n = 400 * 250
    mask = mask_of(400, 250, rate=rate)
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs((1 - mask.mean()) - rate) < 5 * sigma
    column = 1 - mask.mean(axis=0)  # every unit alike, even and odd
    assert np.abs(column - rate).max() < 5 * np.sqrt(rate * (1 - rate) / 400)
    assert mask_of(10, 10, rate=0.0).all()


def test_passes_layers_and_seeds_draw_independent_masks():
    rate, base = 0.3, mask_of(300, 100)
    for other in (
        mask_of(300, 100, step=1),
        mask_of(300, 100, layer=1),
        mask_of(300, 100, seed=8),
    ):
        agree = (other == base).mean()  # independent: p² + q²
        assert abs(agree - (rate**2 + (1 - rate) ** 2)) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_are_the_formula(dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 9)).astype(dtype)
    mask = (rng.random((20, 9)) > 0.4).astype(np.uint8)
    d = np.empty_like(a)
    _ops.dropout_forward(d, a, mask, 0.4)
    expected = a.astype(np.float64) * mask / (1 - 0.4)
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(d, expected, rtol=rtol)
    assert np.all((d == 0) == (mask == 0))
    g = rng.normal(size=(20, 9)).astype(dtype)
    g_a = np.empty_like(g)
    _ops.dropout_backward(g_a, g, mask, 0.4)
    np.testing.assert_allclose(g_a, g.astype(np.float64) * mask / 0.6, rtol=rtol)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan")])
def test_the_kernels_refuse_a_rate_outside_0_to_1(rate):
    mask, a = np.ones((2, 2), np.uint8), np.ones((2, 2))
    with pytest.raises(ValueError, match="rate must lie in"):
        _ops.dropout_mask(mask, 0, 0, 0, rate)
    with pytest.raises(ValueError, match="rate must lie in"):
        _ops.dropout_forward(np.empty_like(a), a, mask, rate)


def test_the_kernels_refuse_shapes_that_do_not_fit():
    a = np.ones((3, 4))
    with pytest.raises(ValueError, match="mask must have shape"):
        _ops.dropout_forward(np.empty_like(a), a, np.ones((3, 5), np.uint8), 0.5)
    with pytest.raises(ValueError, match="g_a must have shape"):
        _ops.dropout_backward(np.empty((2, 4)), a, np.ones((3, 4), np.uint8), 0.5)


# ----------------------------------------------------------------- engine ---


def engine_net(dtype, rates, seed=11):
    """An Engine of 5 → 8 (tanh) → 6 (sigmoid) → 3 (softmax) with dropout
    `rates`, and its parameters."""
    rng = np.random.default_rng(3)
    layout = Layout([5, 8, 6, 3])
    params = (0.5 * rng.normal(size=layout.n_params)).astype(dtype)
    engine = Engine(
        layout,
        [Act.TANH, Act.SIGMOID, Act.SOFTMAX],
        [0.0, 0.0, 0.0],
        Loss.CROSS_ENTROPY,
        params,
        np.zeros_like(params),
        capacity=16,
    )
    engine.set_dropout(rates, seed)
    return engine, layout


def ref_loss_and_grad(params, layout, X, Y, rates, seed, step, first_row=0):
    """Cross-entropy and its gradient through tanh → sigmoid → softmax with
    dropout after the hidden layers, by the reference masks, in numpy."""
    (W0, b0), (W1, b1), (W2, b2) = layout.views(params.astype(np.float64))
    rows = X.shape[0]
    m0 = ref_mask(rows, 8, seed, step, 0, rates[0], first_row) / (1 - rates[0])
    m1 = ref_mask(rows, 6, seed, step, 1, rates[1], first_row) / (1 - rates[1])
    a0 = np.tanh(X @ W0 + b0)
    d0 = a0 * m0
    a1 = 1 / (1 + np.exp(-(d0 @ W1 + b1)))
    d1 = a1 * m1
    z = d1 @ W2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(Y * np.log(p), axis=1))
    g2 = (p - Y) / rows
    g1 = (g2 @ W2.T) * m1 * a1 * (1 - a1)
    g0 = (g1 @ W1.T) * m0 * (1 - a0**2)
    grads = [d.T @ g for d, g in ((X, g0), (d0, g1), (d1, g2))]
    flat = np.concatenate(
        [np.concatenate([gW.ravel(), g.sum(axis=0)]) for gW, g in zip(grads, (g0, g1, g2))]
    )
    return loss, flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first_row", [0, 5])
def test_the_engines_training_pass_drops_by_the_masks_of_its_pass(dtype, first_row):
    engine, layout = engine_net(dtype, [0.5, 0.25, 0.0])
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 5)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 12)]
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for step in range(3):  # each call a pass of its own
        assert engine.dropout_steps == step
        loss = engine.loss_and_grad(X, Y, mask_row=first_row)
        expected, grads = ref_loss_and_grad(
            engine.params, layout, X, Y, [0.5, 0.25], 11, step, first_row
        )
        assert loss == pytest.approx(expected, rel=rtol)
        np.testing.assert_allclose(engine.grads, grads, rtol=rtol, atol=rtol * 1e-2)
    out = np.empty((12, 3), dtype)  # inference: no dropout, no pass counted
    engine.forward(X, out)
    engine.evaluate(X, Y, out)
    assert engine.dropout_steps == 3
    engine.reserve(40)  # a larger workspace: the dropout buffers grow too
    X, Y = np.tile(X, (3, 1)), np.tile(Y, (3, 1))
    expected, grads = ref_loss_and_grad(engine.params, layout, X, Y, [0.5, 0.25], 11, 3)
    assert engine.loss_and_grad(X, Y) == pytest.approx(expected, rel=rtol)
    np.testing.assert_allclose(engine.grads, grads, rtol=rtol, atol=rtol * 1e-2)


def test_the_engine_refuses_rates_it_cannot_take():
    engine, _ = engine_net(np.float64, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one entry for each of the 3 layers"):
        engine.set_dropout([0.1, 0.1], 0)
    with pytest.raises(ValueError, match=r"rates must lie in \[0, 1\)"):
        engine.set_dropout([1.0, 0.0, 0.0], 0)
    with pytest.raises(ValueError, match="the output layer takes no dropout"):
        engine.set_dropout([0.0, 0.0, 0.5], 0)
