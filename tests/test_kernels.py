"""Every compiled kernel held against a plain numpy formula.

The references below are written from the formulas in csrc/kernels.pxd, in
float64 and independently of backprop: nothing in this file asks backprop for
an expected value, except that a labelled fast twin is held against the
reference it is the twin of.  Each kernel runs in float32 and in float64;
float32 results are compared with the float64 reference computed from the
same float32 inputs.
"""

import numpy as np
import pytest
from scipy.special import erf

import backprop as bp
from backprop import _ops
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss
from backprop._codes import OptimizerKind as Opt
from backprop._engine import Engine
from backprop.layout import Layout

TRAINABLE = [code for code in Act if code != Act.STEP]


def name(code):
    return code.name.lower()


SLOPE = 0.1  # leaky_relu's negative slope, elu's α
HUBER_DELTA = 1.0  # huber's δ (the kernels' default)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


# ------------------------------------------------------- numpy references ---


def sigmoid(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z):
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def ref_act(z, code, slope=SLOPE):
    """f(z), row-wise for softmax."""
    z = np.asarray(z, np.float64)
    return {
        Act.IDENTITY: lambda: z.copy(),
        Act.SIGMOID: lambda: sigmoid(z),
        Act.TANH: lambda: np.tanh(z),
        Act.RELU: lambda: np.maximum(z, 0),
        Act.LEAKY_RELU: lambda: np.where(z > 0, z, slope * z),
        Act.SOFTMAX: lambda: softmax(z),
        Act.STEP: lambda: np.where(z >= 0, 1.0, 0.0),
        Act.EXP: lambda: np.exp(z),
        Act.GELU: lambda: 0.5 * z * (1 + erf(z / np.sqrt(2))),
        Act.GELU_TANH: lambda: 0.5 * z * (1 + np.tanh(gelu_u(z))),
        Act.SILU: lambda: z * sigmoid(z),
        Act.SOFTPLUS: lambda: np.logaddexp(0, z),
        Act.ELU: lambda: np.where(z > 0, z, slope * np.expm1(np.minimum(z, 0))),
        Act.SELU: lambda: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0))),
    }[code]()


def gelu_u(z):
    return np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)


def ref_act_backward(g, a, code, slope=SLOPE, z=None):
    """g ⊙ f′(z), with f′ taken from the outputs a = f(z) for the units whose
    derivative the outputs tell, from z for the others."""
    g, a = np.asarray(g, np.float64), np.asarray(a, np.float64)
    if code == Act.SOFTMAX:
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    if code in FROM_Z:
        return g * ref_derivative_of_z(np.asarray(z, np.float64), code, slope)
    return (
        g
        * {
            Act.IDENTITY: lambda: np.ones_like(a),
            Act.SIGMOID: lambda: a * (1 - a),
            Act.TANH: lambda: 1 - a * a,
            Act.RELU: lambda: np.where(a > 0, 1.0, 0.0),
            Act.LEAKY_RELU: lambda: np.where(a > 0, 1.0, slope),
            Act.EXP: lambda: a,
        }[code]()
    )


# The units whose references take f′ from z (the kernels take softplus',
# elu's and selu's from a; the tests hold them against z's formula).
FROM_Z = (Act.GELU, Act.GELU_TANH, Act.SILU, Act.SOFTPLUS, Act.ELU, Act.SELU)


def ref_derivative_of_z(z, code, slope=SLOPE):
    """f′(z) of the smooth units, written from z."""
    if code == Act.GELU:  # Φ(z) + z φ(z)
        return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    if code == Act.GELU_TANH:  # d/dz ½z(1 + tanh u)
        t = np.tanh(gelu_u(z))
        du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * z * z)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    if code == Act.SILU:
        s = sigmoid(z)
        return s * (1 + z * (1 - s))
    if code == Act.SOFTPLUS:
        return sigmoid(z)
    alpha, scale = (slope, 1.0) if code == Act.ELU else (SELU_ALPHA, SELU_SCALE)
    return scale * np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0)))


def xlogy(y):
    """y log y, 0 at y = 0."""
    return np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0.0)


def ref_residual_loss(loss, p, y, delta=HUBER_DELTA):
    """(Σ ℓ(p − y), ∂ℓ/∂p) of mse (½r²), mae (|r|) and huber, elementwise."""
    r = np.asarray(p, np.float64) - np.asarray(y, np.float64)
    if loss == Loss.MSE:
        return 0.5 * (r**2).sum(), r
    if loss == Loss.MAE:
        return np.abs(r).sum(), np.sign(r)
    inside = np.abs(r) <= delta
    value = np.where(inside, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    return value, np.where(inside, r, delta * np.sign(r))


REGRESSION = (Loss.MSE, Loss.MAE, Loss.HUBER)


def ref_loss_forward_backward(loss, act, slope, z, y):
    """(a = f(z), delta = ∂L/∂z, mean loss) from the logits z."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    n = z.shape[0]
    if loss == Loss.POISSON:  # a = e^z; y log(y/a) − y + a, with log a = z
        a = np.exp(z)
        return a, (a - y) / n, (xlogy(y) - y * z - y + a).sum() / n
    if loss in REGRESSION:
        a = ref_act(z, act, slope)
        value, grad = ref_residual_loss(loss, a, y)
        return a, ref_act_backward(grad / n, a, act, slope, z), value / n
    if loss == Loss.BINARY_CROSS_ENTROPY:
        a = sigmoid(z)
        value = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum()
        return a, (a - y) / n, value / n
    a = softmax(z)
    return a, (a - y) / n, (y * (logsumexp(z) - z)).sum() / n


def ref_output_delta(loss, act, slope, a, y, z=None):
    a, y = np.asarray(a, np.float64), np.asarray(y, np.float64)
    if loss in REGRESSION:
        return ref_act_backward(ref_residual_loss(loss, a, y)[1] / len(a), a, act, slope, z)
    return (a - y) / len(a)


def ref_loss_value(loss, p, y, eps):
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if loss in REGRESSION:
        return ref_residual_loss(loss, p, y)[0] / len(p)
    if loss == Loss.POISSON:  # means p > 0, unclipped
        return (xlogy(y) - y * np.log(p) - y + p).sum() / len(p)
    q = np.clip(p, eps, 1 - eps)
    total = -(y * np.log(q)).sum()
    if loss == Loss.BINARY_CROSS_ENTROPY:
        total -= ((1 - y) * np.log(1 - q)).sum()
    return total / len(p)


def ref_loss_gradient(loss, p, y, eps):
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    n = len(p)
    if loss in REGRESSION:
        return ref_residual_loss(loss, p, y)[1] / n
    if loss == Loss.POISSON:
        return (1 - y / p) / n
    q = np.clip(p, eps, 1 - eps)
    if loss == Loss.BINARY_CROSS_ENTROPY:
        return (q - y) / (q * (1 - q) * n)
    return -y / (q * n)


# --- a whole network: flat params hold W0 (row-major), b0, W1, b1, ...


def split_params(flat, sizes):
    layers, off = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = flat[off : off + n_in * n_out].reshape(n_in, n_out)
        off += n_in * n_out
        layers.append((W, flat[off : off + n_out]))
        off += n_out
    assert off == flat.size
    return layers


def ref_net_forward(flat, sizes, acts, slopes, X):
    a = np.asarray(X, np.float64)
    for (W, b), act, slope in zip(split_params(flat, sizes), acts, slopes):
        a = ref_act(a @ W + b, act, slope)
    return a


def ref_net_loss_and_grad(flat, sizes, acts, slopes, loss, X, Y):
    """Hand-written backprop: (mean loss, flat gradient, outputs)."""
    layers = split_params(np.asarray(flat, np.float64), sizes)
    inputs, zs, x = [], [], np.asarray(X, np.float64)
    for l, (W, b) in enumerate(layers):
        inputs.append(x)
        z = x @ W + b
        zs.append(z)
        if l < len(layers) - 1:
            x = ref_act(z, acts[l], slopes[l])
    out, delta, value = ref_loss_forward_backward(loss, acts[-1], slopes[-1], z, Y)
    grads = []
    for l in range(len(layers) - 1, -1, -1):
        W = layers[l][0]
        grads = [(inputs[l].T @ delta).ravel(), delta.sum(axis=0)] + grads
        if l > 0:
            delta = ref_act_backward(delta @ W.T, inputs[l], acts[l - 1], slopes[l - 1], zs[l - 1])
    return value, np.concatenate(grads), out


# ---------------------------------------------------------------- helpers ---


def assert_close(actual, expected, dtype):
    """actual ≈ expected to the dtype's rtol; the absolute floor is that rtol
    times the largest |expected|, so rounding near zero does not count."""
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual)
    assert np.all(np.isfinite(actual)), actual
    rtol = RTOL[dtype]
    atol = rtol * max(np.abs(expected).max(initial=0.0), np.finfo(np.float64).tiny)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def normal(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


def nans(shape, dtype):
    """An output buffer the kernel must overwrite completely."""
    return np.full(shape, np.nan, dtype=dtype)


def one_hot(rng, rows, cols, dtype):
    y = np.zeros((rows, cols), dtype)
    y[np.arange(rows), rng.integers(0, cols, rows)] = 1
    return y


def prob_rows(rng, rows, cols, dtype):
    p = rng.random((rows, cols)) + 0.05
    return np.ascontiguousarray(p / p.sum(axis=1, keepdims=True), dtype=dtype)


def logits(rng, dtype):
    """Random rows, plus a row of extremes, an exact zero and a row far below
    zero (whose exponentials all underflow unless shifted by the maximum)."""
    z = rng.standard_normal((5, 7)) * 3
    z[0] = [-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4]
    z[1, 2] = 0.0
    z[2] -= 1000.0
    return np.ascontiguousarray(z, dtype=dtype)


def logits_for(code, rng, dtype):
    """logits(), but within ±80 for exp, whose e^z overflows beyond ln DBL_MAX
    ≈ 709.78 (ln FLT_MAX ≈ 88.72 in float32): what it does there is
    tests/test_poisson.py's."""
    z = logits(rng, dtype)
    return np.clip(z, -80, 80) if code == Act.EXP else z


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20240531)


# ------------------------------------------------------------ activations ---


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("code", list(Act), ids=name)
def test_act_forward(code, with_bias, dtype, rng):
    z = logits_for(code, rng, dtype)
    b = normal(rng, z.shape[1], dtype) if with_bias else None
    expected = ref_act(z.astype(np.float64) + (0 if b is None else b), code)
    a = z.copy()
    assert _ops.act_forward(a, code, SLOPE, b) is None
    assert_close(a, expected, dtype)


def test_act_forward_step_and_relu_at_zero(dtype):
    z = np.array([[-1e-30, 0.0, 1e-30]], dtype)
    for code, expected in [
        (Act.STEP, [0, 1, 1]),
        (Act.RELU, [0, 0, 1e-30]),
        (Act.LEAKY_RELU, [-SLOPE * 1e-30, 0, 1e-30]),
    ]:
        a = z.copy()
        _ops.act_forward(a, code, SLOPE)
        assert_close(a, [expected], dtype)


@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("code", TRAINABLE, ids=name)
def test_act_backward(code, in_place, dtype, rng):
    z = logits_for(code, rng, dtype)
    a = ref_act(z, code).astype(dtype)
    g = normal(rng, a.shape, dtype)
    expected = ref_act_backward(g, a, code, SLOPE, z)
    delta = g if in_place else nans(a.shape, dtype)
    g_before = g.copy()
    assert _ops.act_backward(delta, g, a, code, SLOPE, z) is None
    assert_close(delta, expected, dtype)
    if not in_place:
        np.testing.assert_array_equal(g, g_before)


# ----------------------------------------------------------------- losses ---


@pytest.mark.parametrize("act", TRAINABLE, ids=name)
def test_mse_forward_backward(act, dtype, rng):
    z = normal(rng, (6, 4), dtype, 2.0)
    y = normal(rng, (6, 4), dtype)
    a_exp, delta_exp, value_exp = ref_loss_forward_backward(Loss.MSE, act, SLOPE, z, y)
    a, delta = z.copy(), nans(z.shape, dtype)
    value = _ops.loss_forward_backward(Loss.MSE, act, SLOPE, a, delta, y)
    assert_close(a, a_exp, dtype)
    assert_close(delta, delta_exp, dtype)
    assert_close(value, value_exp, dtype)


def test_mse_forward_with_step_value(dtype, rng):
    # Step is never trained through, but evaluate() still takes its loss.
    z = normal(rng, (6, 4), dtype)
    y = (rng.random((6, 4)) < 0.5).astype(dtype)
    a = z.copy()
    value = _ops.loss_forward_backward(Loss.MSE, Act.STEP, 0.0, a, nans(z.shape, dtype), y)
    step = (z >= 0).astype(np.float64)
    assert_close(a, step, dtype)
    assert_close(value, ((step - y) ** 2).sum() / (2 * 6), dtype)


@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["moderate", "extreme"])
def test_bce_forward_backward(scale, dtype, rng):
    z = np.ascontiguousarray(rng.uniform(-scale, scale, (8, 5)), dtype=dtype)
    y = (rng.random((8, 5)) < 0.5).astype(dtype)
    y[-1] = rng.random(5)  # soft targets too
    a_exp, delta_exp, value_exp = ref_loss_forward_backward(
        Loss.BINARY_CROSS_ENTROPY, Act.SIGMOID, 0.0, z, y
    )
    a, delta = z.copy(), nans(z.shape, dtype)
    value = _ops.loss_forward_backward(Loss.BINARY_CROSS_ENTROPY, Act.SIGMOID, 0.0, a, delta, y)
    assert_close(a, a_exp, dtype)
    assert_close(delta, delta_exp, dtype)
    assert_close(value, value_exp, dtype)


def test_bce_extreme_by_hand(dtype):
    # Per element: z=1e4,y=0 → 1e4; z=−1e4,y=1 → 1e4; the right answers → 0.
    z = np.array([[1e4, -1e4, 1e4, -1e4]], dtype)
    y = np.array([[0, 1, 1, 0]], dtype)
    a, delta = z.copy(), nans(z.shape, dtype)
    value = _ops.loss_forward_backward(Loss.BINARY_CROSS_ENTROPY, Act.SIGMOID, 0.0, a, delta, y)
    assert_close(value, 2e4, dtype)
    assert_close(a, [[1, 0, 1, 0]], dtype)
    assert_close(delta, [[1, -1, 0, 0]], dtype)


@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["moderate", "extreme"])
@pytest.mark.parametrize("targets", [one_hot, prob_rows], ids=["onehot", "soft"])
def test_ce_forward_backward(targets, scale, dtype, rng):
    z = np.ascontiguousarray(rng.uniform(-scale, scale, (8, 5)), dtype=dtype)
    z[0] = z[0, 0]  # a row of ties
    z[1] -= 2 * scale + 1000  # a row far below zero
    y = targets(rng, 8, 5, dtype)
    a_exp, delta_exp, value_exp = ref_loss_forward_backward(
        Loss.CROSS_ENTROPY, Act.SOFTMAX, 0.0, z, y
    )
    a, delta = z.copy(), nans(z.shape, dtype)
    value = _ops.loss_forward_backward(Loss.CROSS_ENTROPY, Act.SOFTMAX, 0.0, a, delta, y)
    assert_close(a, a_exp, dtype)
    assert_close(delta, delta_exp, dtype)
    assert_close(value, value_exp, dtype)


def test_ce_extreme_by_hand(dtype):
    z = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype)
    y = np.array([[0, 1], [0, 1]], dtype)  # wrong by 2e4, then right
    a, delta = z.copy(), nans(z.shape, dtype)
    value = _ops.loss_forward_backward(Loss.CROSS_ENTROPY, Act.SOFTMAX, 0.0, a, delta, y)
    assert_close(value, 2e4 / 2, dtype)
    assert_close(a, [[1, 0], [0, 1]], dtype)
    assert_close(delta, [[0.5, -0.5], [0, 0]], dtype)


@pytest.mark.parametrize(
    "loss, act",
    [(Loss.MSE, c) for c in TRAINABLE]
    + [(Loss.MAE, Act.IDENTITY), (Loss.HUBER, Act.IDENTITY), (Loss.HUBER, Act.GELU)]
    + [
        (Loss.BINARY_CROSS_ENTROPY, Act.SIGMOID),
        (Loss.CROSS_ENTROPY, Act.SOFTMAX),
        (Loss.POISSON, Act.EXP),
    ],
    ids=[f"mse-{name(c)}" for c in TRAINABLE]
    + ["mae-identity", "huber-identity", "huber-gelu"]
    + ["bce-sigmoid", "ce-softmax", "poisson-exp"],
)
def test_output_delta(loss, act, dtype, rng):
    z = normal(rng, (6, 4), dtype, 2.0)
    a = ref_act(z, act).astype(dtype)
    y = prob_rows(rng, 6, 4, dtype)
    delta = nans(a.shape, dtype)
    assert _ops.output_delta(loss, act, SLOPE, delta, a, y, z) is None
    assert_close(delta, ref_output_delta(loss, act, SLOPE, a, y, z), dtype)


def probabilities_and_targets(loss, rng, dtype):
    """p in [0, 1] with exact 0s and 1s (clipped), and matching targets;
    for poisson, means from 1e-12 to 1e30 and counts with zeros among them."""
    if loss == Loss.POISSON:
        p = np.exp(rng.uniform(-3, 3, (6, 4)))
        p[0] = [1e-12, 1e30, 1.0, 3.0]
        y = rng.poisson(2.0, (6, 4)).astype(np.float64)
        y[0] = [0.0, 5.0, 0.0, 3.0]
        y[-1] = rng.uniform(0, 4, 4)  # rates, not only whole counts
        return np.ascontiguousarray(p, dtype), np.ascontiguousarray(y, dtype)
    if loss in (Loss.MAE, Loss.HUBER):  # residuals on both sides of δ = 1, and 0
        y = rng.standard_normal((6, 4))
        p = y + rng.uniform(-3, 3, (6, 4))
        p[0] = y[0] + [0.0, 1.0, -1.0, 1e-3]
        return np.ascontiguousarray(p, dtype), np.ascontiguousarray(y, dtype)
    p = rng.uniform(0.01, 0.99, (6, 4))
    p[0, :3] = [0.0, 1.0, 1e-12]
    y = {
        Loss.MSE: lambda: rng.standard_normal((6, 4)),
        Loss.BINARY_CROSS_ENTROPY: lambda: (rng.random((6, 4)) < 0.5) * 1.0,
        Loss.CROSS_ENTROPY: lambda: one_hot(rng, 6, 4, np.float64),
    }[loss]()
    y[0, :2] = [1.0, 0.0] if loss == Loss.CROSS_ENTROPY else [1.0, 1.0]
    y[-1] = prob_rows(rng, 1, 4, np.float64)  # a soft row
    return np.ascontiguousarray(p, dtype), np.ascontiguousarray(y, dtype)


@pytest.mark.parametrize("loss", list(Loss), ids=name)
def test_loss_value(loss, dtype, rng):
    eps = float(np.finfo(dtype).eps)
    p, y = probabilities_and_targets(loss, rng, dtype)
    value = _ops.loss_value(loss, p, y, eps)
    assert_close(value, ref_loss_value(loss, p, y, eps), dtype)


@pytest.mark.parametrize("loss", list(Loss), ids=name)
def test_loss_gradient(loss, dtype, rng):
    eps = float(np.finfo(dtype).eps)
    p, y = probabilities_and_targets(loss, rng, dtype)
    g = nans(p.shape, dtype)
    assert _ops.loss_gradient(loss, g, p, y, eps) is None
    assert_close(g, ref_loss_gradient(loss, p, y, eps), dtype)


def test_mse_standalone_is_the_fused_pass(dtype, rng):
    # One home, squared_error: losses.mse's value and gradient are, bit for
    # bit, what training's fused pass gives for an identity output.
    p, y = normal(rng, (6, 4), dtype), normal(rng, (6, 4), dtype)
    a, delta = p.copy(), nans(p.shape, dtype)
    fused = _ops.loss_forward_backward(Loss.MSE, Act.IDENTITY, 0.0, a, delta, y)
    g = nans(p.shape, dtype)
    _ops.loss_gradient(Loss.MSE, g, p, y, 0.0)
    assert _ops.loss_value(Loss.MSE, p, y, 0.0) == fused
    np.testing.assert_array_equal(g, delta)


@pytest.mark.parametrize(
    "loss", [Loss.BINARY_CROSS_ENTROPY, Loss.CROSS_ENTROPY, Loss.POISSON], ids=name
)
def test_loss_value_matches_fused_loss(loss, dtype, rng):
    # The loss of f(z) on moderate logits is what the fused stable pass returns.
    z = normal(rng, (6, 4), dtype)
    y = prob_rows(rng, 6, 4, dtype)
    act = {
        Loss.BINARY_CROSS_ENTROPY: Act.SIGMOID,
        Loss.CROSS_ENTROPY: Act.SOFTMAX,
        Loss.POISSON: Act.EXP,
    }[loss]
    p = ref_act(z, act).astype(dtype)
    value = _ops.loss_value(loss, p, y, 1e-30)
    assert_close(value, ref_loss_forward_backward(loss, act, 0.0, z, y)[2], dtype)


# ----------------------------------------------------------------- labels ---


def ref_labels(loss, A):
    """The label rule: the row's argmax for cross-entropy (numpy's: the first
    of equal maxima); [a ≥ ½] per output for sigmoid outputs, one a row for one."""
    if loss == Loss.CROSS_ENTROPY:
        return np.argmax(A, axis=1)
    labels = (np.asarray(A, np.float64) >= 0.5).astype(np.int64)
    return labels[:, 0] if A.shape[1] == 1 else labels


def outputs_with_ties(rng, rows, cols, dtype):
    """Random outputs in [0, 1] with ties: equal maxima in a row (first,
    middle, last), a constant row, and values of exactly ½ and next to it."""
    A = rng.random((rows, cols))
    A[0] = 0.25
    A[1, [0, -1]] = 2.0
    A[2, [cols // 2, cols - 1]] = 2.0
    A[3, -1] = 0.5
    A[4, :] = 0.5
    A[5, 0] = np.nextafter(dtype(0.5), dtype(0))
    return np.ascontiguousarray(A, dtype)


@pytest.mark.parametrize(
    "loss, cols",
    [
        (Loss.CROSS_ENTROPY, 1),
        (Loss.CROSS_ENTROPY, 5),
        (Loss.BINARY_CROSS_ENTROPY, 1),
        (Loss.BINARY_CROSS_ENTROPY, 4),
    ],
    ids=["ce-1", "ce-5", "bce-1", "bce-4"],
)
def test_labels(loss, cols, dtype, rng):
    A = outputs_with_ties(rng, 40, cols, dtype)
    labels = _ops.labels(loss, A)
    expected = ref_labels(loss, A)
    assert labels.dtype == np.int64 and labels.shape == expected.shape
    np.testing.assert_array_equal(labels, expected)
    assert _ops.labels(loss, A[:0]).shape == expected[:0].shape


@pytest.mark.parametrize("cols", [1, 2, 3, 4, 9, 10, 11, 16, 33])
def test_the_argmax_is_the_first_of_equals_at_every_width(cols, dtype, rng):
    """The class label is numpy's argmax, the first of equal maxima,
    wherever the maxima lie (rows of many ties; both ends; odd and even
    widths)."""
    A = rng.integers(0, 3, size=(300, cols)).astype(dtype)
    A[0], A[1, -1], A[2, 0] = 1, 9, 9
    np.testing.assert_array_equal(_ops.labels(Loss.CROSS_ENTROPY, A), A.argmax(axis=1))


def test_labels_of_ties_and_half_by_hand(dtype):
    A = np.array([[0.5, 0.5, 0.1], [0.1, 0.7, 0.7], [0.2, 0.1, 0.2]], dtype)
    np.testing.assert_array_equal(_ops.labels(Loss.CROSS_ENTROPY, A), [0, 1, 0])
    np.testing.assert_array_equal(
        _ops.labels(Loss.BINARY_CROSS_ENTROPY, A), [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    )
    with pytest.raises(ValueError, match="mse has no label rule"):
        _ops.labels(Loss.MSE, A)
    with pytest.raises(ValueError, match="poisson has no label rule"):
        _ops.labels(Loss.POISSON, A)


# ------------------------------------------------------------ dense layer ---

SHAPES = [
    (7, 5, 3),
    (1, 5, 3),
    (7, 1, 3),
    (7, 5, 1),
    (1, 1, 1),
    (3, 8, 2),
    (64, 100, 70),
    (1, 300, 70),
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def dense_inputs(rng, rows, n_in, n_out, dtype):
    x = normal(rng, (rows, n_in), dtype)
    W = normal(rng, (n_in, n_out), dtype, 1 / np.sqrt(n_in))
    b = normal(rng, n_out, dtype, 0.5)
    return x, W, b


@pytest.mark.parametrize("code", list(Act), ids=name)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_dense_forward(shape, code, dtype, rng):
    x, W, b = dense_inputs(rng, *shape, dtype)
    z = x.astype(np.float64) @ W + b
    expected = ref_act(z, code)
    out = nans((shape[0], shape[2]), dtype)
    assert _ops.dense_forward(out, x, W, b, code, SLOPE) is None
    if code == Act.STEP:  # only where rounding cannot flip the sign
        keep = np.abs(z) > 1e-3
        assert keep.any()
        out, expected = out[keep], expected[keep]
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("with_dx", [True, False], ids=["dx", "nodx"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_dense_backward(shape, with_dx, dtype, rng):
    rows, n_in, n_out = shape
    x, W, _ = dense_inputs(rng, *shape, dtype)
    delta = normal(rng, (rows, n_out), dtype)
    dW, db = nans((n_in, n_out), dtype), nans(n_out, dtype)
    dx = nans((rows, n_in), dtype) if with_dx else None
    assert _ops.dense_backward(dW, db, delta, x, W, dx) is None
    x64, d64 = x.astype(np.float64), delta.astype(np.float64)
    assert_close(dW, x64.T @ d64, dtype)
    assert_close(db, d64.sum(axis=0), dtype)
    if with_dx:
        assert_close(dx, d64 @ W.astype(np.float64).T, dtype)


def test_sgd_update_is_optimizer_update_sgd(dtype, rng):
    # net.step's w ← w − η·g is optimizer_update's SGD with every other
    # setting 0: ×1 and +0 are exact, so it is the numpy formula bit for bit
    # (on the default build, which fuses no multiply-add into one rounding).
    w, g = normal(rng, 60, dtype, 100.0), normal(rng, 60, dtype)
    w[:6] = [0.0, -0.0, np.finfo(dtype).tiny, -np.finfo(dtype).max / 2, 1.0, -1.0]
    g[:6] = [1.0, -0.0, 0.0, -1e3, np.finfo(dtype).tiny, 0.0]
    lr = dtype(0.05)
    expected = w - lr * g
    by_rule, s = w.copy(), np.zeros_like(w)
    assert _ops.sgd_update(w, g, 0.05) is None
    np.testing.assert_array_equal(w, expected)
    _ops.optimizer_update(by_rule, g, s, s, Opt.SGD, 0.05)
    np.testing.assert_array_equal(w, by_rule)
    assert not s.any()  # no state read or written


# ----------------------------------------------------------------- engine ---

# (sizes, acts, slopes, loss); the first is the network of the brief.
NETS = [
    ([4, 6, 3], [Act.RELU, Act.SOFTMAX], [0.0, 0.0], Loss.CROSS_ENTROPY),
    ([4, 6, 3], [Act.TANH, Act.SIGMOID], [0.0, 0.0], Loss.BINARY_CROSS_ENTROPY),
    ([4, 5, 6, 2], [Act.LEAKY_RELU, Act.SIGMOID, Act.IDENTITY], [SLOPE, 0.0, 0.0], Loss.MSE),
    ([4, 6, 3], [Act.TANH, Act.EXP], [0.0, 0.0], Loss.POISSON),
    ([4, 3, 2], [Act.EXP, Act.IDENTITY], [0.0, 0.0], Loss.MSE),
    ([4, 6, 3], [Act.GELU, Act.IDENTITY], [0.0, 0.0], Loss.HUBER),
    ([4, 5, 6, 2], [Act.SILU, Act.GELU_TANH, Act.IDENTITY], [0.0, 0.0, 0.0], Loss.MAE),
    ([4, 5, 6, 3], [Act.ELU, Act.SOFTPLUS, Act.SILU], [0.7, 0.0, 0.0], Loss.MSE),
    ([4, 6, 3], [Act.SELU, Act.SOFTMAX], [0.0, 0.0], Loss.CROSS_ENTROPY),
]
NET_IDS = [
    "relu-softmax-ce",
    "tanh-sigmoid-bce",
    "leaky-sigmoid-identity-mse",
    "tanh-exp-poisson",
    "exp-identity-mse",
    "gelu-identity-huber",
    "silu-gelutanh-identity-mae",
    "elu-softplus-silu-mse",
    "selu-softmax-ce",
]
CAPACITY = 8


def n_params(sizes):
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def targets_for(loss, rng, rows, cols, dtype):
    if loss == Loss.CROSS_ENTROPY:
        return one_hot(rng, rows, cols, dtype)
    if loss == Loss.BINARY_CROSS_ENTROPY:
        return (rng.random((rows, cols)) < 0.5).astype(dtype)
    if loss == Loss.POISSON:
        return rng.poisson(1.5, (rows, cols)).astype(dtype)
    return normal(rng, (rows, cols), dtype)


@pytest.fixture(params=NETS, ids=NET_IDS)
def net(request, dtype, rng):
    """(engine, spec, X, Y) for 19 rows: two full batches and a short one."""
    sizes, acts, slopes, loss = request.param
    params = normal(rng, n_params(sizes), dtype, 0.7)
    grads = nans(n_params(sizes), dtype)
    engine = Engine(
        layout=Layout(sizes),
        acts=acts,
        slopes=slopes,
        loss=loss,
        params=params,
        grads=grads,
        capacity=CAPACITY,
    )
    X = normal(rng, (19, sizes[0]), dtype)
    Y = targets_for(loss, rng, 19, sizes[-1], dtype)
    return engine, (sizes, acts, slopes, loss), X, Y


def test_engine_shares_buffers(net):
    engine, (sizes, *_), _, _ = net
    assert engine.capacity == CAPACITY
    assert engine.params.shape == engine.grads.shape == (n_params(sizes),)
    engine.params[:] = 0.25  # the engine must read the caller's buffer
    X = np.zeros((1, sizes[0]), engine.dtype)
    out = nans((1, sizes[-1]), engine.dtype)
    engine.forward(X, out)
    assert not np.allclose(out, 0)  # biases of 0.25 reached the outputs


@pytest.mark.parametrize("rows", [5, CAPACITY, 20], ids=["5", "cap", "20"])
def test_engine_forward(net, rows, dtype, rng):
    engine, (sizes, acts, slopes, loss), _, _ = net
    X = normal(rng, (rows, sizes[0]), dtype)
    out = nans((rows, sizes[-1]), dtype)
    params_before = engine.params.copy()
    engine.forward(X, out)
    assert_close(
        out, ref_net_forward(engine.params.astype(np.float64), sizes, acts, slopes, X), dtype
    )
    np.testing.assert_array_equal(engine.params, params_before)


def test_engine_forward_brief_formula(dtype, rng):
    # The brief's network written out: softmax(relu(X @ W0 + b0) @ W1 + b1).
    params = normal(rng, 4 * 6 + 6 + 6 * 3 + 3, dtype)
    engine = Engine(
        layout=Layout([4, 6, 3]),
        acts=[Act.RELU, Act.SOFTMAX],
        slopes=[0.0, 0.0],
        loss=Loss.CROSS_ENTROPY,
        params=params,
        grads=np.zeros_like(params),
        capacity=8,
    )
    p = params.astype(np.float64)
    W0, b0, W1, b1 = p[:24].reshape(4, 6), p[24:30], p[30:48].reshape(6, 3), p[48:]
    X = normal(rng, (20, 4), dtype)
    out = nans((20, 3), dtype)
    engine.forward(X, out)
    assert_close(out, softmax(np.maximum(X @ W0 + b0, 0) @ W1 + b1), dtype)


def test_engine_evaluate(net, dtype):
    engine, (sizes, acts, slopes, loss), X, Y = net
    out = nans(Y.shape, dtype)  # 19 rows: more than the capacity
    value = engine.evaluate(X, Y, out)
    ref_value, _, ref_out = ref_net_loss_and_grad(engine.params, sizes, acts, slopes, loss, X, Y)
    assert_close(out, ref_out, dtype)
    assert_close(value, ref_value, dtype)


def test_engine_loss_and_grad(net, dtype):
    engine, (sizes, acts, slopes, loss), X, Y = net
    X, Y = X[:CAPACITY].copy(), Y[:CAPACITY].copy()
    params_before = engine.params.copy()
    value = engine.loss_and_grad(X, Y)
    ref_value, ref_grads, _ = ref_net_loss_and_grad(params_before, sizes, acts, slopes, loss, X, Y)
    assert_close(value, ref_value, dtype)
    assert_close(engine.grads, ref_grads, dtype)
    np.testing.assert_array_equal(engine.params, params_before)


def test_engine_train_step(net, dtype):
    engine, (sizes, acts, slopes, loss), X, Y = net
    X, Y = X[:5].copy(), Y[:5].copy()
    lr = 0.3
    p0 = engine.params.astype(np.float64)
    value = engine.train_step(X, Y, lr)
    ref_value, ref_grads, _ = ref_net_loss_and_grad(p0, sizes, acts, slopes, loss, X, Y)
    assert_close(value, ref_value, dtype)
    assert_close(engine.grads, ref_grads, dtype)
    assert_close(engine.params, p0 - lr * ref_grads, dtype)
    assert not np.allclose(engine.params, p0)


def ref_epoch(params, spec, X, Y, order, batch, lr):
    """Mini-batch SGD by hand: (params after, mean loss over the epoch)."""
    sizes, acts, slopes, loss = spec
    p, total = np.asarray(params, np.float64).copy(), 0.0
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        value, grads, _ = ref_net_loss_and_grad(p, sizes, acts, slopes, loss, X[rows], Y[rows])
        p -= lr * grads
        total += value * len(rows)
    return p, total / len(order)


@pytest.mark.parametrize("shuffled", [True, False], ids=["perm", "noperm"])
def test_engine_train_epoch(net, shuffled, dtype, rng):
    engine, spec, X, Y = net
    sizes, acts, slopes, loss = spec
    batch, lr = CAPACITY, 0.2  # 19 rows: batches of 8, 8 and 3
    perm = rng.permutation(len(X)).astype(np.intp) if shuffled else None
    order = perm if shuffled else np.arange(len(X))
    p0 = engine.params.copy()
    ref_params, ref_value = ref_epoch(p0, spec, X, Y, order, batch, lr)

    value = engine.train_epoch(X, Y, perm, batch, lr)
    assert_close(value, ref_value, dtype)
    assert_close(engine.params, ref_params, dtype)

    # ... and the same as train_step on X[order] batches by hand.
    params2, grads2 = p0.copy(), np.zeros_like(p0)
    by_hand = Engine(
        layout=Layout(sizes),
        acts=acts,
        slopes=slopes,
        loss=loss,
        params=params2,
        grads=grads2,
        capacity=CAPACITY,
    )
    total = 0.0
    for start in range(0, len(X), batch):
        rows = order[start : start + batch]
        total += by_hand.train_step(X[rows], Y[rows], lr) * len(rows)
    assert_close(engine.params, params2, dtype)
    assert_close(value, total / len(X), dtype)


def test_engine_train_epoch_batch_not_dividing(dtype, rng):
    # batch 3 over 19 rows: six full batches and one of a single row.
    sizes, acts, slopes, loss = NETS[0]
    params = normal(rng, n_params(sizes), dtype, 0.7)
    engine = Engine(
        layout=Layout(sizes),
        acts=acts,
        slopes=slopes,
        loss=loss,
        params=params,
        grads=np.zeros_like(params),
        capacity=CAPACITY,
    )
    X = normal(rng, (19, 4), dtype)
    Y = one_hot(rng, 19, 3, dtype)
    perm = rng.permutation(19).astype(np.intp)
    ref_params, ref_value = ref_epoch(params.copy(), NETS[0], X, Y, perm, 3, 0.5)
    value = engine.train_epoch(X, Y, perm, 3, 0.5)
    assert_close(value, ref_value, dtype)
    assert_close(engine.params, ref_params, dtype)


# hidden activation, output activation, loss, outputs
TWINS = [
    ("tanh", "softmax", "cross_entropy", 3),
    ("relu", "sigmoid", "binary_cross_entropy", 2),
    ("leaky_relu", "identity", "mse", 2),
    ("sigmoid", "tanh", "mse", 1),
    ("tanh", "exp", "poisson", 2),
    ("gelu", "identity", "huber", 2),
    ("silu", "identity", "mae", 2),
    ("elu", "gelu_tanh", "mse", 1),
]


@pytest.mark.parametrize("hidden, output, loss, k", TWINS, ids=[t[2] + "-" + t[0] for t in TWINS])
def test_fused_sgd_is_dense_backward_then_optimizer_update(hidden, output, loss, k):
    # The fast twin dense_sgd_part (kernels.pxd), which fit runs for plain
    # SGD, against its reference dense_backward followed by optimizer_update
    # (SGD), which train_step runs (it never fuses): the same steps from the
    # same start give the same parameters, to rounding.
    rng = np.random.default_rng(11)
    X = rng.standard_normal((24, 5))
    y = (
        rng.integers(0, k, 24)
        if loss == "cross_entropy"
        else (rng.random((24, k)) < 0.5) * 1.0
        if loss == "binary_cross_entropy"
        else rng.poisson(1.0, (24, k)) * 1.0
        if loss == "poisson"
        else rng.standard_normal((24, k))
    )

    def network():
        return bp.Sequential(
            bp.Dense(5, 7, activation=hidden),
            bp.Dense(7, 6, activation=hidden),
            bp.Dense(6, k, activation=output),
            loss=loss,
            dtype="float64",
            seed=3,
        )

    fused, unfused = network(), network()
    start = fused.params.copy()
    np.testing.assert_array_equal(unfused.params, start)
    fused.fit(X, y, epochs=3, batch_size=len(X), shuffle=False, optimizer=bp.SGD(0.2))
    unfused.optimizer = bp.SGD(0.2)
    for _ in range(3):
        unfused.train_step(X, y)
    assert all(not layer.dW.any() for layer in fused.layers)  # the twin ran: no dW stored
    assert all(layer.dW.any() for layer in unfused.layers)
    assert not np.allclose(fused.params, start)
    np.testing.assert_allclose(
        fused.params, unfused.params, rtol=1e-12, atol=1e-12 * np.abs(unfused.params).max()
    )


def test_engine_refuses_batches_past_capacity(net, dtype):
    engine, (sizes, *_), X, Y = net
    p0 = engine.params.copy()
    with pytest.raises(ValueError):
        engine.train_step(X, Y, 0.1)  # 19 rows > capacity 8
    with pytest.raises(ValueError):
        engine.loss_and_grad(X, Y)
    with pytest.raises(ValueError):
        engine.train_epoch(X, Y, None, CAPACITY + 1, 0.1)
    with pytest.raises(ValueError):
        bad = np.arange(len(X), dtype=np.intp)
        bad[3] = len(X)
        engine.train_epoch(X, Y, bad, CAPACITY, 0.1)
    np.testing.assert_array_equal(engine.params, p0)


# ------------------------------------------------- the core's exponential ---


def test_float32_exp_is_within_2_ulp_everywhere():
    """fastexp.h against double-precision exp, over every float32 in the
    range where e^x is a normal float, plus the edges."""
    bits = np.arange(int(np.float32(-87.33).view(np.uint32)), 0x80000000, -1021)
    top = np.float32(np.log(np.finfo(np.float32).max))  # ln FLT_MAX, rounded up
    below = np.nextafter(top, np.float32(0))  # the largest float whose e^x is finite
    x = np.concatenate(
        [
            bits.astype(np.uint32).view(np.float32),  # -87.33 … -0, every 1021st
            np.linspace(0, 88.37, 200_001, dtype=np.float32),
            # the top, where n = round(x / ln 2) reaches 128: every float to ln FLT_MAX
            np.arange(int(np.float32(88.37).view(np.uint32)), int(below.view(np.uint32)) + 1)
            .astype(np.uint32)
            .view(np.float32),
        ]
    )
    got = x.copy()
    _ops.exp(got)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 2.0
    assert np.isfinite(got).all() and got[-1] > np.finfo(np.float32).max / 2
    edges = np.array([-1e4, -87.4, -np.inf, top, 89.0, np.inf, np.nan], np.float32)
    _ops.exp(edges)
    np.testing.assert_array_equal(edges[:3], 0)
    assert (edges[3:6] == np.inf).all() and np.isnan(edges[6])


def test_float64_exp_is_libm():
    x = np.linspace(-700, 700, 10001)
    got = x.copy()
    _ops.exp(got)
    np.testing.assert_allclose(got, np.exp(x), rtol=2.3e-16, atol=0)  # within 1 ulp


# ---------------------------------------------------------------- shuffle ---


def test_shuffle_is_a_seeded_uniform_permutation():
    from backprop._engine import shuffled

    counts = {}
    for seed in range(60_000):
        perm = np.arange(3)
        shuffled(perm, seed)
        counts[tuple(perm)] = counts.get(tuple(perm), 0) + 1
    assert len(counts) == 6  # every order occurs …
    assert all(abs(c - 10_000) < 500 for c in counts.values())  # … about equally (σ ≈ 91)
    a, b, c = np.arange(1000), np.arange(1000), np.arange(1000)
    shuffled(a, 7), shuffled(b, 7), shuffled(c, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    # each position takes each value about equally often
    hits = np.zeros((10, 10))
    for seed in range(20_000):
        p = np.arange(10)
        shuffled(p, 10**6 + seed)
        hits[np.arange(10), p] += 1
    assert np.abs(hits - 2000).max() < 250  # σ ≈ 42


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_every_nan_and_inf(dtype):
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 16, 17, 100, 1001):
        x = (rng.uniform(-1, 1, size=n) * (np.finfo(dtype).max / 2)).astype(dtype)
        assert _ops.all_finite(x)
        for bad in (np.nan, np.inf, -np.inf):
            for where in {0, n // 2, n - 1}:
                y = x.copy()
                y[where] = bad
                assert not _ops.all_finite(y), (n, bad, where)
    tiny = np.array([np.finfo(dtype).tiny / 2, -0.0, np.finfo(dtype).max], dtype)
    assert _ops.all_finite(tiny)  # subnormals, -0 and the largest float are finite
