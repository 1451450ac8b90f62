"""The activations and losses as plain functions on numpy arrays."""

import numpy as np
import pytest

from backprop import activations as A
from backprop import losses as L

Z = np.array([[-3.0, -0.5, 0.0, 0.5, 3.0], [10.0, -10.0, 1.0, 2.0, -1.0]])
REFERENCE = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "softmax": lambda z: (
        np.exp(z - z.max(-1, keepdims=True))
        / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
    ),
    "step": lambda z: (z >= 0).astype(float),
    "exp": np.exp,
}
DERIVATIVE = {
    "identity": lambda z: np.ones_like(z),
    "sigmoid": lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
    "tanh": lambda z: 1 / np.cosh(z) ** 2,
    "relu": lambda z: (z > 0) * 1.0,
    "leaky_relu": lambda z: np.where(z > 0, 1.0, 0.01),
    "exp": np.exp,
}


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_values(name, dtype):
    z = Z.astype(dtype)
    out = A.get(name)(z)
    assert out.dtype == dtype and out.shape == z.shape
    np.testing.assert_allclose(
        out,
        REFERENCE[name](Z),
        rtol=1e-6 if dtype == np.float32 else 1e-14,
        atol=1e-7 if dtype == np.float32 else 1e-15,
    )


@pytest.mark.parametrize("name", DERIVATIVE)
def test_activation_derivatives(name):
    np.testing.assert_allclose(
        A.get(name).derivative(Z), DERIVATIVE[name](Z), rtol=1e-12, atol=1e-15
    )


def test_softmax_backward_is_the_jacobian_product():
    z, g = Z[1], np.array([0.3, -1.0, 2.0, 0.5, 0.1])
    a = A.softmax(z)
    jacobian = np.diag(a) - np.outer(a, a)
    np.testing.assert_allclose(A.softmax.backward(a, g), jacobian @ g, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="Jacobian"):
        A.softmax.derivative(z)


def test_scalars_vectors_and_lists():
    assert A.sigmoid(0.0) == 0.5 and isinstance(A.sigmoid(0.0), float)
    assert A.relu(-2) == 0.0
    np.testing.assert_array_equal(A.relu([-1.0, 2.0]), [0.0, 2.0])
    np.testing.assert_allclose(A.softmax([1.0, 1.0]), [0.5, 0.5])
    np.testing.assert_allclose(A.LeakyReLU(0.2)([-1.0, 1.0]), [-0.2, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_stay_finite(dtype):
    z = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype)
    for name in ("sigmoid", "tanh", "softmax"):
        out = A.get(name)(z)
        assert np.isfinite(out).all(), name
    z64 = z.astype(np.float64)
    stable = np.where(
        z64 >= 0, 1 / (1 + np.exp(-np.abs(z64))), np.exp(-np.abs(z64)) / (1 + np.exp(-np.abs(z64)))
    )
    np.testing.assert_allclose(A.sigmoid(z), stable.astype(dtype), rtol=1e-6, atol=0)
    assert A.sigmoid(z)[0, 0] == 0 and A.sigmoid(z)[0, -1] == 1
    np.testing.assert_allclose(A.softmax(z)[0], [0, 0, 0, 0, 1], atol=1e-30)


def test_step_has_no_derivative():
    with pytest.raises(ValueError, match="step"):
        A.step.derivative([0.5])


def test_activation_lookup():
    assert A.get("ReLU") is A.relu and A.get("linear") is A.identity
    assert A.get(A.tanh) is A.tanh
    with pytest.raises(ValueError, match="activation must be one of"):
        A.get("mish")
    with pytest.raises(ValueError, match="negative_slope"):
        A.LeakyReLU(-0.1)
    with pytest.raises(TypeError, match="z must hold real numbers"):
        A.relu(np.array(["x"]))


# -- losses ---------------------------------------------------------------------
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
Y = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_values(dtype):
    p, tol = P.astype(dtype), (1e-6 if dtype == np.float32 else 1e-14)
    assert L.mse(p, Y) == pytest.approx(np.sum((P - Y) ** 2) / (2 * 3), rel=tol)
    assert L.cross_entropy(p, Y) == pytest.approx(-np.sum(Y * np.log(P)) / 3, rel=tol)
    assert L.cross_entropy(p, [0, 2, 1]) == pytest.approx(L.cross_entropy(p, Y), rel=tol)
    bce = -np.sum(Y * np.log(P) + (1 - Y) * np.log(1 - P)) / 3
    assert L.binary_cross_entropy(p, Y) == pytest.approx(bce, rel=tol)


def test_mse_is_half_the_mean_squared_norm():
    """C = 1/(2n) Σ‖y − a‖², n the number of samples (rows)."""
    a, y = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    assert L.mse(a, y) == (4 + 9) / (2 * 2)
    assert L.mse([0.5, 1.5], [1.0, 1.0]) == (0.25 + 0.25) / 4  # 1-D: one output


@pytest.mark.parametrize("loss", [L.mse, L.binary_cross_entropy, L.cross_entropy])
def test_loss_gradients_by_finite_differences(loss):
    p = P.copy()
    g = loss.gradient(p, Y)
    h = 1e-6
    for idx in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[idx] += h
        down[idx] -= h
        assert g[idx] == pytest.approx((loss(up, Y) - loss(down, Y)) / (2 * h), rel=1e-6, abs=1e-9)


def test_probabilities_are_clipped():
    assert np.isfinite(L.cross_entropy([[0.0, 1.0]], [[1.0, 0.0]]))
    assert np.isfinite(L.binary_cross_entropy([1.0], [0.0]))
    assert np.isfinite(L.binary_cross_entropy.gradient([0.0, 1.0], [1.0, 0.0])).all()


def test_loss_input_checks():
    with pytest.raises(ValueError, match="probabilities"):
        L.cross_entropy([[1.5, -0.5]], [0])
    with pytest.raises(ValueError, match="one row per sample"):
        L.mse(np.ones((3, 1)), np.ones(2))
    with pytest.raises(ValueError, match="loss must be one of"):
        L.get("hinge")
    assert L.get("bce") is L.binary_cross_entropy
