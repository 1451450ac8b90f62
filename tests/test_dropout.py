"""Dropout: the kernels and the mask stream against plain numpy, the layer,
and the network that trains with it.

The references are written from the formulas (csrc/kernels.pxd, the mask
stream of csrc/shuffle.pxd) in numpy, independently of backprop."""

import copy
import json
import pickle

import numpy as np
import pytest

import backprop as bp
from backprop import _kernels, _ops
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


# ------------------------------------------------------------------ layer ---


def test_the_layer_keeps_the_expected_activation():
    x = np.linspace(-2, 3, 40).reshape(4, 10)
    drop = bp.Dropout(0.25, seed=0)
    outs = np.array([drop.forward(x, training=True) for _ in range(4000)])
    kept = outs != 0
    np.testing.assert_allclose(outs[kept], np.broadcast_to(x / 0.75, outs.shape)[kept])
    assert abs(1 - kept.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / kept.size)
    sigma = np.abs(x) / 0.75 * np.sqrt(0.25 * 0.75 / 4000)  # of the mean over 4000 masks
    assert np.all(np.abs(outs.mean(axis=0) - x) <= 5 * sigma + 1e-12)  # E[d] = x


def test_the_layer_is_the_identity_at_inference():
    x = np.arange(6.0).reshape(2, 3)
    drop = bp.Dropout(0.5, seed=0)
    np.testing.assert_array_equal(drop.forward(x), x)
    assert drop.mask is None
    np.testing.assert_array_equal(drop.backward(np.ones((2, 3))), np.ones((2, 3)))


def test_the_layers_backward_takes_its_forwards_mask():
    drop = bp.Dropout(0.4, seed=1)
    x = np.ones((5, 7), np.float32)
    d = drop.forward(x, training=True)
    assert d.dtype == np.float32 and drop.mask.dtype == bool
    np.testing.assert_array_equal(drop.mask, d != 0)
    g = np.arange(35.0).reshape(5, 7)
    np.testing.assert_allclose(drop.backward(g), g * drop.mask / np.float32(0.6), rtol=1e-6)
    one = drop.forward(np.ones(7), training=True)  # one sample
    assert one.shape == drop.mask.shape == drop.backward(np.ones(7)).shape == (7,)
    with pytest.raises(ValueError, match="shape of the last forward's output"):
        drop.backward(np.ones((2, 7)))


def test_the_layers_masks_follow_its_seed():
    x = np.ones((30, 30))
    a, b, c = bp.Dropout(0.5, seed=3), bp.Dropout(0.5, seed=3), bp.Dropout(0.5, seed=4)
    first = a.forward(x, training=True)
    np.testing.assert_array_equal(first, b.forward(x, training=True))
    assert not np.array_equal(first, c.forward(x, training=True))
    assert not np.array_equal(first, a.forward(x, training=True))  # a new mask each pass


def test_apply_takes_a_given_mask():
    drop = bp.Dropout(0.5)
    mask = np.array([[True, False, True]])
    np.testing.assert_array_equal(drop.apply([[1.0, 2.0, 3.0]], mask), [[2.0, 0.0, 6.0]])
    np.testing.assert_array_equal(drop.mask, mask)
    with pytest.raises(ValueError, match="mask must have the shape of x"):
        drop.apply(np.ones((1, 3)), [True, False])
    with pytest.raises(TypeError, match="mask must hold True/False"):
        drop.apply(np.ones((1, 2)), [[0.5, 1.0]])


@pytest.mark.parametrize("rate", [1.0, -0.1, 2, float("nan"), float("inf")])
def test_a_rate_outside_0_to_1_is_refused_naming_it(rate):
    with pytest.raises(ValueError, match=r"rate must"):
        bp.Dropout(rate)


@pytest.mark.parametrize("rate", ["0.5", None, True])
def test_a_rate_that_is_not_a_number_is_refused(rate):
    with pytest.raises(TypeError, match="rate must be a number"):
        bp.Dropout(rate)


def test_training_must_be_a_bool():
    with pytest.raises(TypeError, match="training must be True or False"):
        bp.Dropout(0.5).forward(np.ones(3), training=1)


# ---------------------------------------------------------------- network ---


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.8)


def make_net(rate=0.5, seed=0, dtype="float64", hidden="relu", dropout=True):
    drops = [bp.Dropout(rate), bp.Dropout(rate / 2)] if dropout else [None, None]
    stack = [
        bp.Dense(6, 16, hidden),
        drops[0],
        bp.Dense(16, 12, hidden),
        drops[1],
        bp.Dense(12, 3, "softmax"),
    ]
    return bp.Sequential(
        *[layer for layer in stack if layer is not None],
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


def test_layers_holds_the_dense_layers_and_stack_every_layer():
    net, plain = make_net(), make_net(dropout=False)
    assert [type(layer).__name__ for layer in net.stack] == [
        "Dense",
        "Dropout",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert net.layers == tuple(layer for layer in net.stack if isinstance(layer, bp.Dense))
    assert net.dropout == (0.5, 0.25, 0.0) and plain.dropout == (0.0, 0.0, 0.0)
    assert net.layout == plain.layout  # no parameters of its own
    np.testing.assert_array_equal(net.params, plain.params)  # the same initial weights
    assert net.layers[1].W.shape == (16, 12)
    assert "Dropout(0.5)" in repr(net) and "dropout 0.25" in net.summary()


@pytest.mark.parametrize(
    "stack, message",
    [
        (lambda: [bp.Dropout(0.2), bp.Dense(6, 3)], r"layers\[0\]: .*dropout of the inputs"),
        (lambda: [bp.Dense(6, 3), bp.Dropout(0.2)], r"layers\[1\]: .*after the output layer"),
        (
            lambda: [bp.Dense(6, 4), bp.Dropout(0.2), bp.Dropout(0.3), bp.Dense(4, 3)],
            r"layers\[2\]: .*two in a row",
        ),
        (lambda: [bp.Dense(6, 4), bp.Dropout(0.2), bp.Dense(5, 3)], r"layers\[2\] takes 5 inputs"),
    ],
)
def test_a_dropout_out_of_place_is_refused(stack, message):
    with pytest.raises(ValueError, match=message):
        bp.Sequential(*stack())


def test_the_same_dropout_twice_is_refused():
    drop = bp.Dropout(0.2)
    with pytest.raises(ValueError, match="the same Dropout object appears twice"):
        bp.Sequential(bp.Dense(6, 4), drop, bp.Dense(4, 4), drop, bp.Dense(4, 1))


def test_inference_runs_without_dropout():
    X, y = data()
    net = make_net()
    net.fit(X, y, epochs=2, batch_size=16)
    plain = net.copy(dropout=False)
    steps = net.dropout_steps
    np.testing.assert_array_equal(net.predict_proba(X), plain.predict_proba(X))
    np.testing.assert_array_equal(net.predict(X), plain.predict(X))
    assert net.evaluate(X, y) == plain.evaluate(X, y)
    for x in (X[3], X[3:4]):  # the one-row fast path
        np.testing.assert_array_equal(net.predict(x), plain.predict(x))
        np.testing.assert_array_equal(net.predict_proba(x), plain.predict_proba(x))
    np.testing.assert_array_equal(net.forward(X), plain.forward(X))
    traced, plain_trace = net.explain(X[0], y[0]), plain.explain(X[0], y[0])
    for t, u in zip(traced.layers, plain_trace.layers):
        np.testing.assert_array_equal(t.dW, u.dW)
    assert traced.max_rel_error_core < 1e-12 and traced.max_rel_error_numerical < 1e-6
    assert net.dropout_steps == steps  # no inference drew a mask


def test_training_drops_and_each_pass_draws_new_masks():
    X, y = data()
    net, plain = make_net(), make_net(dropout=False)
    plain.loss_and_grad(X, y)
    assert net.dropout_steps == 0
    net.loss_and_grad(X, y)
    first = net.grads.copy()
    assert net.dropout_steps == 1
    assert not np.allclose(first, plain.grads)
    net.loss_and_grad(X, y)
    assert not np.allclose(first, net.grads)
    net.dropout_steps = 0  # the first pass's masks again
    net.loss_and_grad(X, y)
    np.testing.assert_array_equal(net.grads, first)


def test_a_rate_of_0_trains_exactly_as_no_dropout():
    X, y = data()
    zero = make_net(rate=0.0)
    plain = make_net(dropout=False)
    for net in (zero, plain):
        net.fit(X, y, epochs=3, batch_size=16, optimizer=bp.Adam(0.01))
    np.testing.assert_array_equal(zero.params, plain.params)


def test_the_same_seed_trains_the_same_bit_for_bit():
    X, y = data()
    runs = [make_net(seed=seed) for seed in (5, 5, 6)]
    for net in runs:
        net.fit(X, y, epochs=3, batch_size=16, optimizer=bp.Adam(0.01))
    np.testing.assert_array_equal(runs[0].params, runs[1].params)
    assert runs[0].dropout_seed == runs[1].dropout_seed != runs[2].dropout_seed
    assert runs[0].dropout_steps == 3 * 6


def per_layer_epoch(net, X, y, batch, lr=None):
    """An epoch of unshuffled mini-batches by the per-layer path."""
    for start in range(0, len(X), batch):
        net.forward(X[start : start + batch], training=True)
        net.backward(y[start : start + batch])
        net.apply_gradients(lr)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["adam", "momentum", "sgd"])
def test_the_compiled_epoch_equals_the_per_layer_path_mask_for_mask(dtype, optimizer):
    X, y = data(100)
    make = {
        "adam": lambda: bp.Adam(0.01),
        "momentum": lambda: bp.SGD(0.1, momentum=0.9),
        "sgd": lambda: bp.SGD(0.1),  # (fit steps inside the backward pass: equal to rounding)
    }[optimizer]
    compiled, by_layer = make_net(dtype=dtype), make_net(dtype=dtype)
    compiled.fit(X, y, epochs=2, batch_size=16, shuffle=False, optimizer=make())
    by_layer.optimizer = make()
    for _ in range(2):
        per_layer_epoch(by_layer, X, y, 16)
    assert by_layer.dropout_steps == compiled.dropout_steps == 14
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(by_layer.params, compiled.params, rtol=tol, atol=tol)
    plain = make_net(dtype=dtype, dropout=False)  # (which differs by more)
    plain.fit(X, y, epochs=2, batch_size=16, shuffle=False, optimizer=make())
    assert np.abs(plain.params - compiled.params).max() > 100 * tol


@pytest.mark.parametrize("single", [False, True])
def test_train_step_and_the_per_layer_path_draw_the_same_masks(single):
    X, y = data(12)
    x, t = (X[0], y[0]) if single else (X, y)
    net = make_net(hidden="tanh")
    net.forward(x, training=True)
    per_layer = net.backward(t).copy()
    masks = [net.stack[1].mask, net.stack[3].mask]
    assert masks[0].shape == ((16,) if single else (12, 16))
    net.dropout_steps = 0
    net.loss_and_grad(x[None] if single else x, [t] if single else t)
    np.testing.assert_allclose(net.grads, per_layer, rtol=1e-12, atol=1e-15)
    want = np.empty((1 if single else 12, 16), np.uint8)
    _ops.dropout_mask(want, net.dropout_seed, 0, 0, 0.5)
    np.testing.assert_array_equal(masks[0], want.reshape(masks[0].shape).view(bool))


@pytest.mark.parametrize("hidden", ["tanh", "relu", "sigmoid"])
def test_gradcheck_holds_the_mask_fixed(hidden):
    X, y = data(10)
    net = make_net(hidden=hidden, seed=2)
    net.fit(X, y, epochs=1, batch_size=5)
    steps = net.dropout_steps
    result = bp.gradcheck(net, X, y)
    assert result.max_rel_error < 1e-6, result
    assert net.dropout_steps == steps  # (gradcheck checks a copy)
    net.loss_and_grad(X, y)  # … the gradient of the pass it checked
    np.testing.assert_allclose(result.analytic, net.grads, rtol=1e-12, atol=1e-15)


def test_a_backward_after_another_forward_of_a_dropout_is_refused():
    X, y = data(8)
    net = make_net()
    net.forward(X, training=True)
    net.stack[1].forward(np.ones((2, 16)), training=True)
    with pytest.raises(RuntimeError, match="ran forward on its own"):
        net.backward(y)
    with pytest.raises(TypeError, match="training must be True or False"):
        net.forward(X, training="yes")


# ------------------------------------------------------- files and resume ---


def test_files_pickles_and_copies_keep_the_dropout_and_its_stream(tmp_path):
    X, y = data()
    net = make_net()
    net.fit(X, y, epochs=2, batch_size=16, optimizer=bp.Adam(0.01))
    loaded = bp.load(net.save(tmp_path / "net"))
    copies = [loaded, pickle.loads(pickle.dumps(net)), copy.deepcopy(net), net.copy()]
    for other in copies:
        assert [repr(layer) for layer in other.stack] == [repr(layer) for layer in net.stack]
        assert (other.dropout_seed, other.dropout_steps) == (net.dropout_seed, net.dropout_steps)
    for other in copies[:3]:  # (copy() starts its optimizer afresh)
        other.fit(X, y, epochs=2, batch_size=16)
    net.fit(X, y, epochs=2, batch_size=16)
    for other in copies[:3]:
        np.testing.assert_array_equal(other.params, net.params)  # trained on as one run


def test_a_file_without_dropout_has_no_dropout_field(tmp_path):
    path = make_net(dropout=False).save(tmp_path / "plain")
    assert "dropout" not in json.loads(str(np.load(path)["meta"]))
    assert bp.load(path).dropout == (0.0, 0.0, 0.0)


def edited(tmp_path, edit):
    path = make_net().save(tmp_path / "net")
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "edited.npz", **arrays)
    return tmp_path / "edited.npz"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["dropout"]["rates"].__setitem__(0, 1.0), r"meta.dropout.rates\[0\] must be"),
        (lambda m: m["dropout"]["rates"].__setitem__(2, 0.1), r"rates\[2\] must be null"),
        (lambda m: m["dropout"]["rates"].pop(), "meta.dropout.rates must be a list of 3"),
        (lambda m: m["dropout"].pop("seed"), "missing meta.dropout.seed"),
        (lambda m: m["dropout"].__setitem__("seed", "-1"), "meta.dropout.seed must be"),
        (lambda m: m["dropout"].__setitem__("steps", -3), "meta.dropout.steps must be"),
        (lambda m: m["dropout"].__setitem__("extra", 1), "meta.dropout: unexpected field"),
    ],
)
def test_a_files_bad_dropout_is_refused_by_its_field(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        bp.load(edited(tmp_path, edit))


def test_an_epoch_undone_takes_its_masks_back():
    X, y = data(40)

    def batches():
        yield X[:20], y[:20]
        raise OSError("the second batch failed to load")

    net = make_net()
    net.fit(X, y, epochs=1, batch_size=10)
    before, steps = net.params.copy(), net.dropout_steps
    with pytest.raises(OSError):
        net.fit(batches(), epochs=1, batch_size=10)
    assert net.dropout_steps == steps
    np.testing.assert_array_equal(net.params, before)


def test_sparse_input_trains_with_dropout_as_its_dense_array():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = data()
    X[np.abs(X) < 1.2] = 0  # about 23 % nonzeros: gathered dense
    dense, sparse = make_net(), make_net()
    with _kernels.split_steps("never"):  # (as sparse input's steps, never split)
        dense.fit(X, y, epochs=2, batch_size=16)
    sparse.fit(scipy_sparse.csr_matrix(X), y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(sparse.params, dense.params)
    X[np.abs(X) < 2.2] = 0  # under 10 %: the first layer's sparse products
    dense, sparse = make_net(), make_net()
    with _kernels.split_steps("never"):
        dense.fit(X, y, epochs=2, batch_size=16)
    sparse.fit(scipy_sparse.csr_matrix(X), y, epochs=2, batch_size=16)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-10, atol=1e-12)


def test_dropout_steps_and_seed_are_checked():
    net = make_net()
    with pytest.raises(ValueError, match="dropout_steps must be at least 0"):
        net.dropout_steps = -1
    with pytest.raises(TypeError, match="dropout_seed must be an integer"):
        net.dropout_seed = 1.5
    with pytest.raises(ValueError, match="dropout_seed must be at most"):
        net.dropout_seed = 2**64
    with pytest.raises(TypeError, match="dropout must be True or False"):
        net.copy(dropout=None)
