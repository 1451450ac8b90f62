"""The exp activation and the poisson loss (the half Poisson deviance).

    a = e^z ;  f′ = a
    C = 1/n Σ_i w_i Σ_j [y log(y/a) − y + a]   (y log(y/a) = 0 where y = 0)
    ∂C/∂z = w (a − y)/n  (fused with exp) ;  ∂C/∂a = (1 − y/a)/n  (standalone)

Every expected value is a plain numpy formula written from these lines (the
deviance as y log(y/a) − y + a, in float64), scikit-learn's HalfPoissonLoss
or mean_poisson_deviance, or central finite differences in float64.
"""

import pickle

import numpy as np
import pytest
from scipy.special import xlogy

import backprop as bp
from backprop import _ops
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss

RTOL = {np.float32: 2e-6, np.float64: 1e-13}
LN_MAX = {np.float32: float(np.log(np.finfo(np.float32).max)), np.float64: 709.78}


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def deviance(y, a):
    """y log(y/a) − y + a per entry, in float64 (0 log 0 = 0)."""
    y, a = np.asarray(y, np.float64), np.asarray(a, np.float64)
    return xlogy(y, y / a) - y + a


def wide_logits(dtype, rng, rows=6, cols=5):
    """Logits from −80 to 80 (to 88.7, near ln FLT_MAX, in float32; 709 in
    float64), with moderate ones among them."""
    z = rng.uniform(-3, 3, (rows, cols))
    z[0] = [-80.0, -30.0, 0.0, 30.0, 80.0]
    z[1, :3] = [88.7, -87.0, 1e-8] if dtype == np.float32 else [709.0, -708.0, 1e-8]
    return np.ascontiguousarray(z, dtype)


def counts(rng, shape, dtype):
    """Poisson counts with zeros among them, and a row of rates."""
    y = rng.poisson(2.0, shape).astype(np.float64)
    y[0, ::2] = 0.0
    y[1, 1] = 0.0
    y[-1] = rng.uniform(0, 5, shape[1])
    return np.ascontiguousarray(y, dtype)


# -- the exp activation ------------------------------------------------------------------


def test_exp_forward_and_backward_against_numpy(dtype):
    rng = np.random.default_rng(1)
    z = wide_logits(dtype, rng)
    exact = np.exp(z.astype(np.float64))
    a = z.copy()
    _ops.act_forward(a, Act.EXP)
    np.testing.assert_allclose(a, exact, rtol=RTOL[dtype], atol=0)
    assert np.isfinite(a).all() and a.max() > np.finfo(dtype).max / 10
    np.testing.assert_allclose(bp.activations.exp(z), exact, rtol=RTOL[dtype], atol=0)
    # f′ = a, from the outputs: δ = g ⊙ a
    g = np.ascontiguousarray(rng.uniform(-1, 1, z.shape), dtype)
    delta = np.full_like(z, np.nan)
    _ops.act_backward(delta, g, a, Act.EXP)
    np.testing.assert_allclose(delta, g.astype(np.float64) * a, rtol=RTOL[dtype], atol=0)
    small = z[2:].astype(np.float64)  # f′(z) = e^z, against central differences
    h = 1e-6
    numeric = (np.exp(small + h) - np.exp(small - h)) / (2 * h)
    np.testing.assert_allclose(bp.activations.exp.derivative(small), numeric, rtol=1e-8)


def test_exp_is_the_activation_named_exp():
    assert bp.activations.get("exp") is bp.activations.exp
    assert bp.activations.exp.code == Act.EXP and bp.activations.exp.differentiable
    assert bp.activations.exp(0.0) == 1.0
    layer = bp.Dense(3, 2, activation="exp", seed=0)
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(layer.forward(x), np.exp(x @ layer.W + layer.b), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_overflow_is_an_error_naming_the_argument(dtype):
    past = np.array([1.0, LN_MAX[dtype] + 0.5], dtype)
    with pytest.raises(ValueError, match=f"z: exp\\(z\\) overflows {np.dtype(dtype).name}"):
        bp.activations.exp(past)
    with pytest.raises(ValueError, match="grad: "):
        bp.activations.exp.backward([np.finfo(dtype).max / 2], [4.0])
    layer = bp.Dense(1, 2, activation="exp", dtype=dtype, seed=0)
    layer.W[...] = 1.0
    with pytest.raises(ValueError, match=f"x: the layer's outputs overflow {np.dtype(dtype).name}"):
        layer.forward([LN_MAX[dtype] + 1])
    net = bp.Sequential(bp.Dense(1, 1, "exp"), loss="poisson", dtype=dtype, seed=0)
    net.layers[0].W[...], net.layers[0].b[...] = 1.0, 0.0
    big = np.array([[LN_MAX[dtype] + 1]], dtype)
    for call in (
        lambda: net.predict(big),
        lambda: net.predict(big[0]),
        lambda: net.predict_proba(big),
        lambda: net.evaluate(big, [1.0]),
    ):
        with pytest.raises(ValueError, match="X: the network's outputs overflow"):
            call()
    assert net.predict(np.array([[LN_MAX[dtype] - 1]], dtype))[0] < np.inf


def test_a_diverging_fit_of_an_exp_output_is_undone():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = rng.poisson(3.0, 64)
    net = bp.Sequential(bp.Dense(3, 4, "tanh"), bp.Dense(4, 1, "exp"), loss="poisson", seed=0)
    net.fit(X, y, epochs=2, lr=0.01)
    before = net.params.copy()
    with pytest.warns(RuntimeWarning, match="training stopped at epoch 3"):
        history = net.fit(X * 1e3, y * 1e3, epochs=3, lr=50.0)
    np.testing.assert_array_equal(net.params, before)
    assert not np.isfinite(history.history["loss"][-1])


# -- the fused loss: from the logits ---------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_fused_value_and_gradient_against_numpy(weighted, dtype):
    rng = np.random.default_rng(2)
    z = wide_logits(dtype, rng)
    y = counts(rng, z.shape, dtype)
    w = np.ascontiguousarray(rng.uniform(0, 3, z.shape[0]), dtype) if weighted else None
    a, delta = z.copy(), np.full_like(z, np.nan)
    value = _ops.loss_forward_backward(Loss.POISSON, Act.EXP, 0.0, a, delta, y, w)
    n = z.shape[0]
    w64 = np.ones(n) if w is None else w.astype(np.float64)
    e = np.exp(z.astype(np.float64))
    np.testing.assert_allclose(a, e, rtol=RTOL[dtype], atol=0)
    per_row = deviance(y, e).sum(axis=1)
    assert value == pytest.approx((w64 * per_row).sum() / n, rel=RTOL[dtype])
    expected = w64[:, None] * (e - y) / n
    atol = RTOL[dtype] * np.abs(expected).max()  # (e − y cancels where z ≈ log y)
    np.testing.assert_allclose(delta, expected, rtol=RTOL[dtype] * 10, atol=atol)
    # output_delta, from the outputs alone: (a − y)/n, the same δ unweighted
    from_outputs = np.full_like(z, np.nan)
    _ops.output_delta(Loss.POISSON, Act.EXP, 0.0, from_outputs, a, y)
    np.testing.assert_allclose(from_outputs, (e - y) / n, rtol=RTOL[dtype] * 10, atol=atol)


def test_fused_value_where_a_matches_y_is_zero_and_stays_finite_far_off(dtype):
    y = np.array([[0.0, 1.0, 4.0, 0.0, 3.0]], dtype)
    z = np.array([[-80.0, 0.0, np.log(4.0), 80.0, -80.0]], dtype)
    a, delta = z.copy(), np.empty_like(z)
    value = _ops.loss_forward_backward(Loss.POISSON, Act.EXP, 0.0, a, delta, y)
    # y = 0, z = −80: e^−80; a = y: 0; y = 0, z = 80: e^80; y = 3, z = −80: 240 − (3 − 3 log 3)
    z64 = z.astype(np.float64)[0]
    by_hand = np.exp(-80.0) + 0 + np.exp(z64[3]) + (np.exp(-80.0) + 240 + 3 * np.log(3) - 3)
    assert value == pytest.approx(by_hand, rel=RTOL[dtype])
    assert abs(delta[0, 2]) < 1e-6


def test_fused_loss_against_scikit_learn(dtype):
    sklearn_loss = pytest.importorskip("sklearn._loss.loss")
    rng = np.random.default_rng(3)
    z = np.ascontiguousarray(rng.uniform(-4, 4, (40, 1)), dtype)
    y = np.ascontiguousarray(rng.poisson(np.exp(z.astype(np.float64))), dtype)
    w = np.ascontiguousarray(rng.uniform(0.5, 2, 40), dtype)
    half = sklearn_loss.HalfPoissonLoss()
    z64, y64, w64 = (v.astype(np.float64) for v in (z[:, 0], y[:, 0], w))
    for weights in (None, w):
        a, delta = z.copy(), np.empty_like(z)
        value = _ops.loss_forward_backward(Loss.POISSON, Act.EXP, 0.0, a, delta, y, weights)
        sw = None if weights is None else w64
        # scikit-learn's loss leaves out the constant that makes it 0 at a = y, and
        # averages by Σ w; backprop's is 1/n Σ w_i ℓ_i.
        per_sample = half.loss(y64, z64) + half.constant_to_optimal_zero(y64)
        reference = np.average(per_sample, weights=sw) * (1 if sw is None else sw.sum() / 40)
        assert value == pytest.approx(reference, rel=RTOL[dtype] * 10)
        gradient = half.gradient(y64, z64, sample_weight=sw) / 40  # ∂/∂z of each sample's loss
        np.testing.assert_allclose(delta[:, 0], gradient, rtol=RTOL[dtype] * 10, atol=1e-12)


# -- the standalone loss: from the means a > 0 ------------------------------------------


def test_standalone_value_and_gradient_against_numpy(dtype):
    rng = np.random.default_rng(4)
    a = np.exp(rng.uniform(-5, 5, (7, 3)))
    a[0] = [1e-30, 1e30, 2.0]
    a = np.ascontiguousarray(a, dtype)
    y = counts(rng, a.shape, dtype)
    a64 = a.astype(np.float64)
    value = bp.losses.poisson(a, y)
    assert value == pytest.approx(deviance(y, a64).sum() / 7, rel=RTOL[dtype])
    g = bp.losses.poisson.gradient(a, y)
    assert g.dtype == dtype and g.shape == a.shape
    np.testing.assert_allclose(g, (1 - y.astype(np.float64) / a64) / 7, rtol=RTOL[dtype] * 10)
    # one output: (n,) shapes work too
    assert bp.losses.poisson(a[:, 0], y[:, 0]) == pytest.approx(
        deviance(y[:, 0], a64[:, 0]).mean(), rel=RTOL[dtype]
    )


def test_standalone_gradient_by_central_differences():
    rng = np.random.default_rng(5)
    a = rng.uniform(0.2, 6, (4, 3))
    y = rng.poisson(2.0, (4, 3)).astype(float)
    y[0, 0] = 0.0
    g = bp.losses.poisson.gradient(a, y)
    numeric = np.empty_like(a)
    h = 1e-6
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (bp.losses.poisson(up, y) - bp.losses.poisson(down, y)) / (2 * h)
    np.testing.assert_allclose(g, numeric, rtol=1e-7, atol=1e-10)


def test_standalone_loss_is_the_fused_one_and_scikit_learns():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(6)
    z = rng.uniform(-2, 3, (50, 1))
    y = rng.poisson(np.exp(z)).astype(float)
    a, delta = z.copy(), np.empty_like(z)
    fused = _ops.loss_forward_backward(Loss.POISSON, Act.EXP, 0.0, a, delta, y)
    standalone = bp.losses.poisson(np.exp(z), y)
    assert standalone == pytest.approx(fused, rel=1e-13)
    half_deviance = metrics.mean_poisson_deviance(y[:, 0], np.exp(z[:, 0])) / 2
    assert standalone == pytest.approx(half_deviance, rel=1e-12)


# -- the loss in a network ---------------------------------------------------------------


def network(dtype="float64", seed=0, k=1, hidden=8):
    return bp.Sequential(
        bp.Dense(3, hidden, activation="tanh"),
        bp.Dense(hidden, k, activation="exp"),
        loss="poisson",
        dtype=dtype,
        seed=seed,
    )


def test_poisson_is_a_regression_loss():
    loss = bp.losses.get("poisson")
    assert loss is bp.losses.poisson and loss.code == Loss.POISSON and loss.output == "exp"
    assert not loss.is_classification
    net = network(k=2)
    assert not net.is_classifier
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = np.random.default_rng(1).poisson(1.0, (10, 2))
    assert set(net.evaluate(X, y)) == {"loss"}
    history = net.fit(X, y, epochs=2)
    assert "accuracy" not in history.history
    with pytest.raises(ValueError, match="class_weight"):
        net.fit(X, y, epochs=1, class_weight={0: 2.0})
    with pytest.raises(ValueError, match="poisson has no label rule"):
        _ops.labels(Loss.POISSON, net.predict_proba(X))
    # one row, the engine's shortcut, gives what the checked path gives
    np.testing.assert_array_equal(net.predict(X[0]), net.predict_proba(X[:1])[0])
    np.testing.assert_array_equal(net.predict(X[:1]), net.predict_proba(X[:1]))
    one = network(k=1)
    assert one.predict(X).shape == (10,) and one.predict(X[0]) == one.predict_proba(X[0])[0]


def test_gradcheck_through_tanh_then_exp():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(9, 3))
    y = rng.poisson(1.5, (9, 2)).astype(float)
    y[:3, 0] = 0.0
    net = network(k=2, hidden=5)
    result = bp.gradcheck(net, X, y)
    assert result.max_rel_error < 1e-7, result
    # the same network in float32 is checked as its float64 copy
    assert bp.gradcheck(net.copy("float32"), X, y).max_rel_error < 1e-6
    # a Dense layer alone, through the standalone loss's ∂C/∂a and exp's f′ = a
    layer = bp.Dense(3, 2, activation="exp", seed=1)
    assert bp.gradcheck(layer, X, y, loss="poisson").max_rel_error < 1e-7
    # exp as a hidden activation, under mse
    hidden_exp = bp.Sequential(bp.Dense(3, 4, "exp"), bp.Dense(4, 2), seed=2)
    assert bp.gradcheck(hidden_exp, X * 0.5, rng.normal(size=(9, 2))).max_rel_error < 1e-7
    trace = net.explain(X[0], y[0])
    assert trace.max_rel_error_numerical < 1e-7 and trace.max_rel_error_core < 1e-10
    assert trace.loss == pytest.approx(deviance(y[0], net.predict_proba(X[0])).sum(), rel=1e-12)


def test_an_integer_weight_counts_like_a_repeated_row():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(10, 3))
    Y = rng.poisson(2.0, (10, 1)).astype(float)
    w = np.array([1, 2, 1, 3, 1, 1, 0, 2, 1, 1], float)
    net = network()
    net._engine.reserve(32)
    weighted = net._engine.loss_and_grad(X, Y, w)
    grads = net.grads.copy()
    rows = np.repeat(np.arange(10), w.astype(int))
    repeated = net._engine.loss_and_grad(
        np.ascontiguousarray(X[rows]), np.ascontiguousarray(Y[rows])
    )
    scale = w.sum() / 10  # 1/n Σ w_i ℓ_i = (Σ w / n) · the mean over the repeated rows
    assert weighted == pytest.approx(repeated * scale, rel=1e-12)
    np.testing.assert_allclose(grads, net.grads * scale, rtol=1e-10, atol=1e-14)


def poisson_data(seed, n):
    """X ~ N(0, 1) (n, 3); y ~ Poisson(e^(Xβ + β₀)); and the true means."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    mu = np.exp(X @ np.array([0.6, -0.4, 0.3]) + 0.5)
    return X, rng.poisson(mu).astype(float), mu


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_recovers_the_true_models_deviance(dtype):
    metrics = pytest.importorskip("sklearn.metrics")
    X, y, _ = poisson_data(0, 3000)
    X_test, y_test, mu_test = poisson_data(1, 3000)
    net = network(dtype)
    net.fit(X, y, epochs=30, batch_size=32, optimizer=bp.Adam(0.01))
    predicted = net.predict(X_test)
    assert predicted.shape == (3000,) and (predicted > 0).all()
    mine = metrics.mean_poisson_deviance(y_test, predicted) / 2
    truth = metrics.mean_poisson_deviance(y_test, mu_test) / 2
    constant = metrics.mean_poisson_deviance(y_test, np.full(3000, y.mean())) / 2
    assert truth < constant - 0.2  # the features carry information
    assert mine < truth + 0.05 * (constant - truth), (mine, truth, constant)
    assert net.evaluate(X_test, y_test)["loss"] == pytest.approx(
        mine, rel=1e-5 if dtype == "float32" else 1e-10
    )


def test_save_load_and_pickle_round_trip(tmp_path):
    X, y, _ = poisson_data(2, 200)
    net = network(k=1)
    net.fit(X, y, epochs=3, optimizer=bp.Adam(0.01))
    path = net.save(tmp_path / "poisson")
    for back in (bp.load(path), pickle.loads(pickle.dumps(net))):
        assert back.loss is bp.losses.poisson
        assert [layer.activation for layer in back.layers] == [
            bp.activations.tanh,
            bp.activations.exp,
        ]
        np.testing.assert_array_equal(back.params, net.params)
        np.testing.assert_array_equal(back.predict(X), net.predict(X))
    resumed, again = bp.load(path), bp.load(path)
    resumed.fit(X, y, epochs=2)
    again.fit(X, y, epochs=2)
    net.fit(X, y, epochs=2)
    np.testing.assert_array_equal(resumed.params, net.params)
    np.testing.assert_array_equal(again.params, net.params)


# -- what is refused ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, -1e-30, np.nan, np.inf])
def test_targets_must_be_finite_and_at_least_zero(bad):
    X = np.random.default_rng(0).normal(size=(4, 3))
    y = np.array([0.0, 1.0, bad, 3.0])
    net = network()
    before = net.params.copy()
    message = "y must be ≥ 0" if np.isfinite(bad) else "y contains NaN or infinity"
    for call in (
        lambda: net.fit(X, y, epochs=1),
        lambda: net.train_step(X, y),
        lambda: net.loss_and_grad(X, y),
        lambda: net.evaluate(X, y),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(net.params, before)
    wrong = "y_true must be ≥ 0" if np.isfinite(bad) else "y_true contains NaN"
    with pytest.raises(ValueError, match=wrong):
        bp.losses.poisson(np.ones(4), y)
    with pytest.raises(ValueError, match=wrong):
        bp.losses.poisson.gradient(np.ones(4), y)


@pytest.mark.parametrize("bad", [0.0, -2.0, np.nan])
def test_predictions_must_be_positive_means(bad):
    y_pred = np.array([1.0, bad, 2.0])
    match = "y_pred must hold means > 0" if np.isfinite(bad) else "y_pred contains NaN"
    with pytest.raises(ValueError, match=match):
        bp.losses.poisson(y_pred, [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=match):
        bp.losses.poisson.gradient(y_pred, [1.0, 0.0, 2.0])


@pytest.mark.parametrize("output", ["identity", "relu", "sigmoid", "softmax"])
def test_poisson_needs_an_exp_output_layer(output):
    with pytest.raises(
        ValueError, match=f"loss='poisson' needs an exp output layer, got '{output}'"
    ):
        bp.Sequential(bp.Dense(3, 4, "tanh"), bp.Dense(4, 2, output), loss="poisson")
    # exp elsewhere is fine: under mse, and in a hidden layer
    bp.Sequential(bp.Dense(3, 4, "exp"), bp.Dense(4, 2, "exp"), loss="mse")
    with pytest.raises(ValueError, match="needs a sigmoid output layer, got 'exp'"):
        bp.Sequential(bp.Dense(3, 1, "exp"), loss="binary_cross_entropy")
