"""Sample and class weights: the loss 1/n Σ w_i ℓ_i and its gradient."""

import numpy as np
import pytest

import backprop as bp
from backprop import _ops
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss

MSE, BCE, CE = Loss.MSE, Loss.BINARY_CROSS_ENTROPY, Loss.CROSS_ENTROPY


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss,act", [(MSE, Act.TANH), (BCE, Act.SIGMOID), (CE, Act.SOFTMAX)])
def test_weighted_loss_kernel_matches_numpy(loss, act, dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 3))
    y = np.eye(3)[rng.integers(0, 3, 6)] if loss == CE else rng.integers(0, 2, (6, 3)).astype(float)
    w = rng.uniform(0, 3, 6)
    a, delta = z.astype(dtype), np.empty((6, 3), dtype)
    value = _ops.loss_forward_backward(loss, act, 0.0, a, delta, y.astype(dtype), w.astype(dtype))
    if loss == CE:
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        per_row, grad = -(y * np.log(p)).sum(1), (p - y)
    elif loss == BCE:
        p = 1 / (1 + np.exp(-z))
        per_row = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(1)
        grad = p - y
    else:
        p = np.tanh(z)
        per_row, grad = 0.5 * ((p - y) ** 2).sum(1), (p - y) * (1 - p**2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx((w * per_row).sum() / 6, rel=tol)
    np.testing.assert_allclose(delta, w[:, None] * grad / 6, rtol=tol * 10, atol=tol)


def digits_net(seed=0):
    return bp.Sequential(
        bp.Dense(64, 16, activation="relu"),
        bp.Dense(16, 10, activation="softmax"),
        loss="cross_entropy",
        seed=seed,
    )


def test_an_integer_weight_counts_like_a_repeated_row():
    X, y = bp.datasets.load_digits()
    X, y = X[:12], y[:12]
    w = np.array([1, 2, 1, 3, 1, 1, 1, 2, 1, 1, 1, 1], float)
    net = digits_net()
    engine = net._engine
    engine.reserve(32)
    Y = np.eye(10)[y]
    weighted = engine.loss_and_grad(X, Y, w)
    g_weighted = net.grads.copy()
    rows = np.repeat(np.arange(12), w.astype(int))
    repeated = engine.loss_and_grad(np.ascontiguousarray(X[rows]), np.ascontiguousarray(Y[rows]))
    # 1/n Σ w_i ℓ_i over 12 rows = (Σ w / 12) · the mean over the repeated rows
    scale = w.sum() / 12
    assert weighted == pytest.approx(repeated * scale, rel=1e-12)
    np.testing.assert_allclose(g_weighted, net.grads * scale, rtol=1e-10, atol=1e-14)


def test_weights_of_one_change_nothing_and_zero_weights_drop_rows():
    X, y = bp.datasets.load_digits()
    a, b, c, d = digits_net(), digits_net(), digits_net(), digits_net()
    a.fit(X, y, epochs=2, lr=0.1)
    b.fit(X, y, epochs=2, lr=0.1, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(a.params, b.params)
    keep = y != 3
    c.fit(
        X, y, epochs=1, lr=0.1, shuffle=False, sample_weight=keep.astype(float), batch_size=len(X)
    )
    d.fit(
        X[keep], y[keep], epochs=1, lr=0.1 * keep.sum() / len(X), shuffle=False, batch_size=len(X)
    )
    np.testing.assert_allclose(c.params, d.params, rtol=1e-10, atol=1e-13)


def test_balanced_class_weights_help_the_rare_class():
    X, y = bp.datasets.load_digits()
    rare = np.flatnonzero(y == 1)[:8]  # digit 1 made rare: 8 rows
    rows = np.concatenate([np.flatnonzero(y != 1), rare])
    X_train, y_train = X[rows], y[rows]
    test = np.flatnonzero(y == 1)[8:]

    def recall(**kw):
        net = digits_net(2)
        net.fit(X_train, y_train, epochs=3, lr=0.05, **kw)
        return np.mean(net.predict(X[test]) == 1)

    assert recall(class_weight="balanced") > recall() + 0.1
    assert recall(class_weight={1: 20.0}) > recall() + 0.1


def test_bad_weights():
    X, y = bp.datasets.load_digits()
    with pytest.raises(ValueError, match="one entry per row"):
        digits_net().fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="negative"):
        digits_net().fit(X, y, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        digits_net().fit(X, y, sample_weight=np.full(len(X), np.nan))
    with pytest.raises(ValueError, match="no class 12"):
        digits_net().fit(X, y, class_weight={12: 1.0})
    with pytest.raises(TypeError, match="class_weight"):
        digits_net().fit(X, y, class_weight=[1, 2])
    regressor = bp.Sequential(bp.Dense(64, 1), loss="mse")
    with pytest.raises(ValueError, match="class_weight applies"):
        regressor.fit(X, y, class_weight="balanced")
