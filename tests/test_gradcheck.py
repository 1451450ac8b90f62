"""Every analytic gradient against central finite differences, in float64."""

import numpy as np
import pytest

import backprop as bp

TOL = 1e-6
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
# Every output activation with every loss it pairs with.
PAIRS = [(act, "mse") for act in HIDDEN + ["softmax"]] + [
    ("sigmoid", "binary_cross_entropy"),
    ("softmax", "cross_entropy"),
]


def targets(loss, rows, k, rng):
    if loss == "cross_entropy":
        return rng.integers(0, k, rows)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (rows, k)).astype(float)
    return rng.normal(size=(rows, k))


@pytest.mark.parametrize("act,loss", PAIRS)
def test_single_layer(act, loss):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 4))
    y = targets(loss, 6, 3, rng)
    result = bp.gradcheck(bp.Dense(4, 3, activation=act, seed=1), X, y, loss=loss)
    assert result.n_checked == 4 * 3 + 3 + 6 * 4  # W, b and the input x
    assert result.max_rel_error < TOL, result


@pytest.mark.parametrize("act,loss", PAIRS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_three_layer_network(act, loss, hidden):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(7, 3))
    y = targets(loss, 7, 4, rng)
    net = bp.Sequential(
        bp.Dense(3, 6, activation=hidden),
        bp.Dense(6, 5, activation=hidden),
        bp.Dense(5, 4, activation=act),
        loss=loss,
        seed=2,
    )
    result = bp.gradcheck(net, X, y)
    assert result.n_checked == net.params.size
    assert result.max_rel_error < TOL, result


def test_float32_network_is_checked_in_float64():
    rng = np.random.default_rng(0)
    net = bp.Sequential(
        bp.Dense(3, 5, activation="tanh"),
        bp.Dense(5, 2, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    result = bp.gradcheck(net, rng.normal(size=(4, 3)), [0, 1, 1, 0])
    assert result.analytic.dtype == np.float64
    assert result.max_rel_error < TOL
    assert net.dtype == np.float32  # the model itself is untouched


def test_gradcheck_detects_a_wrong_gradient():
    """A gradient check that cannot fail proves nothing: break one weight's
    gradient and see it reported at that very weight."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    net = bp.Sequential(bp.Dense(2, 3, activation="tanh"), bp.Dense(3, 1), seed=0)

    class Broken(bp.Sequential):
        def loss_and_grad(self, X, y):
            value = super().loss_and_grad(X, y)
            self.grads[4] *= 1.01
            return value

    broken = Broken(*[layer.copy() for layer in net.layers], loss="mse")
    broken.copy = lambda dtype=None: broken
    result = bp.gradcheck(broken, X, y)
    assert result.max_rel_error > 1e-3
    assert result.where == "layers[0].W[1, 1]"


def test_gradcheck_rejects_other_models():
    with pytest.raises(TypeError, match="model"):
        bp.gradcheck("net", [[1.0]], [1.0])


def test_nearly_zero_entries_of_a_trained_network_are_no_false_alarm():
    """After training, many entries are ~1e-9 while others are ~1: their
    rounding noise is judged on the gradient's scale (atol), not as a
    relative error of a tiny number."""
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, seed=0)
    net = bp.Sequential(
        bp.Dense(64, 32, activation="relu"),
        bp.Dense(32, 10, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    net.fit(X_train, y_train, epochs=40, batch_size=32, lr=0.1)
    result = bp.gradcheck(net, X_test[:4], y_test[:4])
    assert np.abs(result.analytic).min() < 1e-8 < 0.1 < np.abs(result.analytic).max()
    assert result.max_rel_error < TOL, result
    strict = bp.gradcheck(net, X_test[:4], y_test[:4], atol=1e-15)  # a floor of one's own
    assert strict.max_rel_error > result.max_rel_error


@pytest.mark.parametrize("h", [1e200, 0.2, 1e-9, 5e-324, float("nan"), float("inf"), 0.0, -1e-4])
def test_steps_that_cannot_give_a_derivative_are_refused(h):
    net = bp.Sequential(bp.Dense(2, 3, activation="tanh"), bp.Dense(3, 1), seed=0)
    with pytest.raises(ValueError, match=r"^h must"):
        bp.gradcheck(net, [[0.5, -1.0]], [0.2], h=h)
    with pytest.raises(TypeError, match=r"^h must"):
        bp.gradcheck(net, [[0.5, -1.0]], [0.2], h=True)


@pytest.mark.parametrize("h", [1e-8, 0.1])
def test_the_bounds_of_the_step_still_tell_right_from_wrong(h):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    net = bp.Sequential(bp.Dense(3, 5, activation="tanh"), bp.Dense(5, 2), seed=2)
    assert bp.gradcheck(net, X, y, h=h).max_rel_error < 1e-4


def test_a_loss_that_overflows_is_an_error_not_nan():
    """Where the loss is not finite, at the point checked or a step away,
    the differences are inf or NaN: an error naming where, never a NaN."""
    layer = bp.Dense(1, 1, activation="identity", seed=0)
    layer.W[...] = 1.3e154  # the loss (1.3e154 · x)² is finite at x = 1 …
    with pytest.raises(ValueError, match=r"not finite at x\[0, 0\]"):
        bp.gradcheck(layer, [[1.0]], [[0.0]])  # … and overflows a step of x away
    net = bp.Sequential(bp.Dense(2, 3, activation="identity"), bp.Dense(3, 1), seed=0)
    net.layers[0].W[...] = 1e200  # overflows everywhere
    with pytest.raises(ValueError, match=r"not finite at layers\[\d\]"):
        bp.gradcheck(net, [[0.5, -1.0]], [0.2])
