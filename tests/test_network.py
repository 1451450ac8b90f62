"""Sequential: learning known problems, the compiled engine against the
per-layer path, determinism, prediction, files and bad input."""

import numpy as np
import pytest

import backprop as bp


def xor_net(seed=0, dtype="float64"):
    return bp.Sequential(
        bp.Dense(2, 4, activation="tanh"),
        bp.Dense(4, 1, activation="sigmoid"),
        loss="mse",
        dtype=dtype,
        seed=seed,
    )


# -- known outcomes --------------------------------------------------------------
def test_two_layers_learn_xor():
    X, y = bp.datasets.truth_table("xor")
    net = xor_net(seed=0)
    history = net.fit(X, y, epochs=3000, batch_size=4, lr=0.5)
    assert history.history["loss"][-1] < 0.01 < history.history["loss"][0]
    np.testing.assert_array_equal(net.predict(X) > 0.5, y == 1)


@pytest.mark.parametrize(
    "loss,act", [("binary_cross_entropy", "sigmoid"), ("mse", "sigmoid"), ("mse", "identity")]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_layer_cannot_learn_xor(loss, act, seed):
    """XOR is not linearly separable: whatever a single unit learns, at
    least one of the four rows comes out wrong."""
    X, y = bp.datasets.truth_table("xor")
    net = bp.Sequential(bp.Dense(2, 1, activation=act), loss=loss, seed=seed)
    net.fit(X, y, epochs=3000, batch_size=4, lr=0.5)
    correct = (np.ravel(net.predict_proba(X)) > 0.5) == (y == 1)
    assert correct.sum() <= 3


@pytest.mark.parametrize("gate", ["and", "or", "nand"])
def test_one_layer_learns_separable_gates(gate):
    X, y = bp.datasets.truth_table(gate)
    net = bp.Sequential(bp.Dense(2, 1, activation="sigmoid"), loss="binary_cross_entropy", seed=0)
    net.fit(X, y, epochs=2000, batch_size=4, lr=1.0)
    np.testing.assert_array_equal(net.predict(X), y)


def test_digits_reach_95_percent():
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, seed=0)
    net = bp.Sequential(
        bp.Dense(64, 32, activation="relu"),
        bp.Dense(32, 10, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    history = net.fit(X_train, y_train, epochs=30, batch_size=32, lr=0.1)
    losses = history.history["loss"]
    assert len(losses) == 30 and losses[-1] < losses[0] / 10
    result = net.evaluate(X_test, y_test)
    assert result["accuracy"] >= 0.95, result
    assert np.mean(net.predict(X_test) == y_test) == pytest.approx(result["accuracy"])


def test_spirals_need_a_hidden_layer():
    X, y = bp.datasets.make_spirals(300, noise=0.05, seed=0)
    deep = bp.Sequential(
        bp.Dense(2, 32, activation="relu"),
        bp.Dense(32, 32, activation="relu"),
        bp.Dense(32, 2, activation="softmax"),
        loss="cross_entropy",
        seed=0,
    )
    deep.fit(X, y, epochs=400, batch_size=16, lr=0.1)
    flat = bp.Sequential(bp.Dense(2, 2, activation="softmax"), loss="cross_entropy", seed=0)
    flat.fit(X, y, epochs=400, batch_size=16, lr=0.1)
    assert deep.evaluate(X, y)["accuracy"] > 0.95
    assert flat.evaluate(X, y)["accuracy"] < 0.75


# -- one engine, two paths ------------------------------------------------------------
NETS = {
    "mse-tanh": (lambda: [bp.Dense(3, 5, activation="tanh"), bp.Dense(5, 2)], "mse"),
    "bce": (
        lambda: [bp.Dense(3, 5, activation="relu"), bp.Dense(5, 2, activation="sigmoid")],
        "binary_cross_entropy",
    ),
    "ce": (
        lambda: [
            bp.Dense(3, 6, activation="leaky_relu"),
            bp.Dense(6, 4, activation="sigmoid"),
            bp.Dense(4, 3, activation="softmax"),
        ],
        "cross_entropy",
    ),
    "mse-softmax": (lambda: [bp.Dense(3, 3, activation="softmax")], "mse"),
}


def data_for(loss, rows, k, rng):
    X = rng.normal(size=(rows, 3))
    if loss == "cross_entropy":
        return X, rng.integers(0, k, rows)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (rows, k))
    return X, rng.normal(size=(rows, k))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NETS)
def test_engine_matches_per_layer_path(name, dtype):
    make, loss = NETS[name]
    net = bp.Sequential(*make(), loss=loss, dtype=dtype, seed=1)
    X, y = data_for(loss, 9, net.n_outputs, np.random.default_rng(0))
    tol = 1e-5 if dtype == "float32" else 1e-12
    out = net.forward(X)  # layer by layer
    np.testing.assert_allclose(net.predict_proba(X), out, rtol=tol, atol=tol)
    per_layer = net.backward(y).copy()
    value = net.loss_and_grad(X, y)  # compiled, fused
    np.testing.assert_allclose(net.grads, per_layer, rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(value, bp.losses.get(loss)(out, y), rtol=tol * 10)
    # The layer views see the same numbers as the flat buffer.
    assert np.shares_memory(net.layers[0].dW, net.grads)
    np.testing.assert_array_equal(net.layers[-1].db, net.grads[-net.n_outputs :])


def test_train_step_is_forward_backward_step():
    X, y = data_for("cross_entropy", 8, 3, np.random.default_rng(1))
    a, b = (bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", seed=3) for _ in range(2))
    before = a.params.copy()
    a.train_step(X, y, lr=0.2)
    b.forward(X)
    b.backward(y)
    b.step(0.2)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.params, before - 0.2 * a.grads, rtol=1e-12, atol=1e-14)


def test_fit_without_shuffle_is_plain_minibatch_sgd():
    X, y = data_for("mse", 10, 2, np.random.default_rng(2))
    a, b = (bp.Sequential(*NETS["mse-tanh"][0](), seed=4) for _ in range(2))
    a.fit(X, y, epochs=2, batch_size=4, lr=0.05, shuffle=False)
    for _ in range(2):
        for start in (0, 4, 8):  # the last batch is short
            b.train_step(X[start : start + 4], y[start : start + 4], lr=0.05)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)


def test_fit_with_plain_sgd_steps_inside_the_backward_pass():
    # fit takes plain SGD's step inside the backward pass (the weight
    # gradient goes straight into W); train_step computes grads first.
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 3, 50)
    a, b = (
        bp.Sequential(
            bp.Dense(6, 8, activation="relu"),
            bp.Dense(8, 5, activation="tanh"),
            bp.Dense(5, 3, activation="softmax"),
            loss="cross_entropy",
            dtype="float32",
            seed=1,
        )
        for _ in range(2)
    )
    a.fit(X, y, epochs=3, batch_size=8, lr=0.1, shuffle=False)
    for _ in range(3):
        for start in range(0, 50, 8):
            b.train_step(X[start : start + 8], y[start : start + 8], lr=0.1)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-6)
    assert a.optimizer_steps == b.optimizer_steps == 21


def test_fit_loss_is_the_mean_over_the_epoch():
    X, y = data_for("mse", 12, 2, np.random.default_rng(3))
    a, b = (bp.Sequential(*NETS["mse-tanh"][0](), seed=4) for _ in range(2))
    fitted = a.fit(X, y, epochs=1, batch_size=5, lr=0.05, shuffle=False).history["loss"][0]
    steps = [
        b.train_step(X[s : s + 5], y[s : s + 5], lr=0.05) * len(X[s : s + 5]) for s in (0, 5, 10)
    ]
    assert fitted == pytest.approx(sum(steps) / 12, rel=1e-12)


# -- determinism ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_training_bit_for_bit(dtype):
    X_train, _, y_train, _ = bp.datasets.load_digits(return_split=True)

    def run(seed):
        net = bp.Sequential(
            bp.Dense(64, 16, activation="relu"),
            bp.Dense(16, 10, activation="softmax"),
            loss="cross_entropy",
            dtype=dtype,
            seed=seed,
        )
        start = net.params.copy()
        net.fit(X_train, y_train, epochs=3, batch_size=32, lr=0.1)
        return start, net.params.copy()

    (s1, p1), (s2, p2), (s3, p3) = run(7), run(7), run(8)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(s1, s3) and not np.array_equal(p1, p3)


def test_layer_with_own_seed_keeps_its_weights():
    own = bp.Dense(3, 4, seed=11)
    W = own.W.copy()
    net = bp.Sequential(own, bp.Dense(4, 2), seed=0)
    np.testing.assert_array_equal(net.layers[0].W, W)


# -- prediction and evaluation ----------------------------------------------------------
def test_predict_shapes_and_single_samples():
    net = bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    proba = net.predict_proba(X)
    assert proba.shape == (5, 3)
    np.testing.assert_allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(net.predict(X), proba.argmax(1))
    assert net.predict_proba(X[0]).shape == (3,)
    assert net.predict(X[0]) == proba[0].argmax()
    out = net.forward(X[0])
    assert out.shape == (3,)
    grads = net.backward(1).copy()  # label of the one sample
    assert net.loss_and_grad(X[:1], [1]) > 0
    np.testing.assert_allclose(grads, net.grads, rtol=1e-12, atol=1e-15)


def test_predict_many_rows_beyond_workspace():
    net = bp.Sequential(*NETS["mse-tanh"][0](), seed=0)
    X = np.random.default_rng(0).normal(size=(1000, 3))
    np.testing.assert_allclose(net.predict(X), net.forward(X), rtol=1e-12)


def test_binary_classifier_predicts_labels():
    net = bp.Sequential(bp.Dense(3, 1, activation="sigmoid"), loss="binary_cross_entropy", seed=0)
    X = np.random.default_rng(0).normal(size=(6, 3))
    labels = net.predict(X)
    assert labels.shape == (6,) and set(labels) <= {0, 1}
    np.testing.assert_array_equal(labels, net.predict_proba(X)[:, 0] >= 0.5)
    result = net.evaluate(X, labels)
    assert result["accuracy"] == 1.0


def test_evaluate_matches_the_loss_formula():
    net = bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", seed=0)
    X, y = data_for("cross_entropy", 50, 3, np.random.default_rng(9))
    p = net.predict_proba(X)
    result = net.evaluate(X, y)
    assert result["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(50), y])), rel=1e-10)
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert set(bp.Sequential(bp.Dense(3, 1), loss="mse").evaluate(X, X[:, 0])) == {"loss"}


def test_one_hot_and_label_targets_agree():
    net = bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", seed=0)
    X, y = data_for("cross_entropy", 20, 3, np.random.default_rng(9))
    assert net.evaluate(X, y) == net.evaluate(X, np.eye(3)[y])


def test_save_and_load_round_trip(tmp_path):
    net = bp.Sequential(
        bp.Dense(3, 5, activation=bp.activations.LeakyReLU(0.2)),
        bp.Dense(5, 2, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    net.fit(*data_for("cross_entropy", 20, 2, np.random.default_rng(0)), epochs=2)
    net.save(tmp_path / "model.npz")
    back = bp.load(tmp_path / "model.npz")
    assert back.dtype == np.float32 and back.loss is bp.losses.cross_entropy
    assert back.layers[0].activation.negative_slope == pytest.approx(0.2)
    np.testing.assert_array_equal(back.params, net.params)
    X = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.arange(3))
    with pytest.raises(ValueError, match="missing"):
        bp.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a usable backprop model file: not an .npz"):
        bp.load(junk)


def test_divergence_stops_and_keeps_the_last_finite_weights():
    X = np.random.default_rng(0).normal(size=(32, 3)) * 100
    y = X @ np.ones((3, 1)) * 100
    net = bp.Sequential(bp.Dense(3, 8, activation="relu"), bp.Dense(8, 1), seed=0)

    class Keep(bp.callbacks.Callback):
        def on_epoch_begin(self, net, epoch, logs):
            self.before = net.params.copy()

    keep = Keep()
    with pytest.warns(RuntimeWarning, match="learning rate .* too large"):
        history = net.fit(X, y, epochs=50, lr=10.0, optimizer=None, callbacks=[keep])
    assert len(history.epoch) < 50 and not np.isfinite(history.history["loss"][-1])
    assert np.isfinite(net.params).all()
    np.testing.assert_array_equal(net.params, keep.before)  # from before the bad epoch
    assert np.isfinite(net.predict(X)).all()


def test_divergence_with_adam_restores_its_state_too():
    X = np.random.default_rng(0).normal(size=(32, 3))
    net = bp.Sequential(bp.Dense(3, 4), bp.Dense(4, 1), seed=0)
    opt = bp.Adam(lr=1e-2)
    net.fit(X, X[:, 0], epochs=3, optimizer=opt)  # a healthy start
    params, state = net.params.copy(), [s.copy() for s in net._opt_state]
    steps = net.optimizer_steps
    with pytest.warns(RuntimeWarning, match="training stopped at epoch 4"):
        net.fit(X, np.full(32, 1e160), epochs=5)  # (1e160)² overflows
    np.testing.assert_array_equal(net.params, params)
    for kept, now in zip(state, net._opt_state):
        np.testing.assert_array_equal(kept, now)
    assert net.optimizer_steps == steps


# -- bad input ------------------------------------------------------------------------
def test_layers_must_connect():
    with pytest.raises(ValueError, match=r"layers\[1\] takes 4 inputs but layers\[0\] gives 3"):
        bp.Sequential(bp.Dense(2, 3), bp.Dense(4, 1))


@pytest.mark.parametrize(
    "layers,loss,match",
    [
        (lambda: [bp.Dense(2, 3, activation="relu")], "cross_entropy", "softmax output"),
        (lambda: [bp.Dense(2, 1, activation="tanh")], "binary_cross_entropy", "sigmoid output"),
        (lambda: [bp.Dense(2, 1, activation="softmax")], "cross_entropy", "at least 2"),
        (
            lambda: [bp.Dense(2, 3, activation="softmax"), bp.Dense(3, 2)],
            "mse",
            "output layer only",
        ),
        (lambda: [bp.Dense(2, 3)], "hinge", "loss must be one of"),
        (lambda: [], "mse", "at least one"),
    ],
)
def test_bad_network_definitions(layers, loss, match):
    with pytest.raises(ValueError, match=match):
        bp.Sequential(*layers(), loss=loss)


def test_training_through_step_is_refused():
    net = bp.Sequential(
        bp.Dense(2, 2, activation="step"),
        bp.Dense(2, 1, activation="sigmoid"),
        loss="binary_cross_entropy",
    )
    X, y = bp.datasets.truth_table("xor")
    assert net.predict(X).shape == (4,)  # forward works
    with pytest.raises(ValueError, match="step"):
        net.fit(X, y)


@pytest.mark.parametrize(
    "y,exc,match",
    [
        (np.array([0, 1, 2, 3, 4, 5]), ValueError, r"class labels in 0 … 2"),
        (np.array([0, 1, -1, 0, 1, 0]), ValueError, "class labels"),
        (np.array([0, 1, 2]), ValueError, "one row per sample"),
        (np.array([0.5, 1, 2, 0, 1, 0]), ValueError, "whole class labels"),
        (np.array(["a"] * 6), TypeError, "numbers"),
        (np.ones((6, 3)), ValueError, "sum to 1"),
        (np.ones((6, 2)) / 2, ValueError, "3 columns"),
    ],
)
def test_bad_classification_targets(y, exc, match):
    net = bp.Sequential(*NETS["ce"][0](), loss="cross_entropy")
    with pytest.raises(exc, match=match):
        net.fit(np.zeros((6, 3)), y)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(lr=float("nan")), ValueError, "lr"),
        (dict(epochs=-1), ValueError, "epochs"),
        (dict(epochs=1.5), TypeError, "epochs"),
        (dict(batch_size=0), ValueError, "batch_size"),
    ],
)
def test_bad_fit_arguments(kwargs, exc, match):
    net = bp.Sequential(bp.Dense(3, 1))
    with pytest.raises(exc, match=match):
        net.fit(np.zeros((4, 3)), np.zeros(4), **kwargs)


def test_bad_inputs_name_the_argument():
    net = bp.Sequential(bp.Dense(3, 1), loss="mse")
    with pytest.raises(ValueError, match="X must have 3 columns"):
        net.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="X contains NaN"):
        net.fit(np.full((2, 3), np.nan), np.zeros(2))
    with pytest.raises(ValueError, match="y contains NaN"):
        net.fit(np.zeros((2, 3)), np.array([0.0, np.inf]))
    bce = bp.Sequential(bp.Dense(3, 1, activation="sigmoid"), loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        bce.fit(np.zeros((2, 3)), np.array([0, 2]))


def test_batch_larger_than_data_is_clipped():
    net = bp.Sequential(bp.Dense(3, 1), seed=0)
    history = net.fit(np.ones((5, 3)), np.ones(5), epochs=2, batch_size=1000)
    assert len(history.history["loss"]) == 2


# -- ready-made inputs skip conversion, with the same results ----------------------------
@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ready_made_inputs_take_the_same_step(name, dtype):
    make, loss = NETS[name]
    a, b = (bp.Sequential(*make(), loss=loss, dtype=dtype, seed=1) for _ in range(2))
    X, y = data_for(loss, 6, a.n_outputs, np.random.default_rng(4))
    X = X.astype(dtype)
    y = y.astype(np.int64) if loss == "cross_entropy" else y.astype(dtype)
    assert a._engine.step_ready(X, y, 0.1, True) is not None  # the fast path is taken
    b.train_step(X.tolist(), y.tolist(), lr=0.1)  # the checked path
    np.testing.assert_array_equal(a.params, b.params)
    assert a.loss_and_grad(X, y) == b.loss_and_grad(X.tolist(), y.tolist())
    np.testing.assert_array_equal(a.grads, b.grads)


def test_ready_made_single_row_prediction_matches_batch():
    for make, loss in NETS.values():
        net = bp.Sequential(*make(), loss=loss, seed=0)
        X = np.random.default_rng(0).normal(size=(3, 3))
        # (a 1-row and a 3-row product: equal to rounding, not bit for bit)
        np.testing.assert_allclose(np.asarray(net.predict(X[1])), net.predict(X)[1], rtol=1e-12)
        np.testing.assert_allclose(net.predict_proba(X[1]), net.predict_proba(X)[1], rtol=1e-12)


def test_ready_made_inputs_are_still_checked():
    net = bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", seed=0)
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match="NaN"):
        net.train_step(np.full((4, 3), np.nan), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="class labels"):
        net.train_step(X, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="lr"):
        net.train_step(X, np.zeros(4, np.int64), lr=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        net.predict(np.array([0.0, np.inf, 1.0]))
    bce = bp.Sequential(bp.Dense(3, 1, activation="sigmoid"), loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce.train_step(X, np.array([0.0, 2.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce.train_step(X, np.array([0, 2, 1, 0]))


def test_other_widths_are_cast_and_batches_of_one_keep_their_shape():
    a, b = (
        bp.Sequential(*NETS["ce"][0](), loss="cross_entropy", dtype="float32", seed=1)
        for _ in range(2)
    )
    X, y = data_for("cross_entropy", 6, 3, np.random.default_rng(4))
    a.train_step(X, y.astype(np.int32), lr=0.1)  # float64 X, int32 labels
    b.train_step(X.astype(np.float32), y.astype(np.int64), lr=0.1)
    np.testing.assert_array_equal(a.params, b.params)
    one = X[:1].astype(np.float32)
    assert a.predict(one).shape == (1,) and a.predict_proba(one).shape == (1, 3)
    np.testing.assert_array_equal(a.predict(one), a.predict(X[:2])[:1])


def test_finite_inputs_that_overflow_the_network_are_refused():
    """Found by the property tests: float32 inputs near 3e38 overflow x·W,
    and the outputs would be NaN: each call returns finite values or raises
    an error naming X."""
    net = bp.Sequential(
        bp.Dense(3, 4, activation="relu"),
        bp.Dense(4, 3, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    x = np.full(3, 2.1433564e38, np.float32)
    with pytest.raises(ValueError, match="X: the network's outputs overflow float32"):
        net.predict_proba(x)
    for call in (
        lambda: net.predict(x),
        lambda: net.predict_proba(x[None]),
        lambda: net.evaluate(x[None], [0]),
    ):
        try:
            result = call()
        except ValueError as exc:
            assert "X: the network's outputs overflow" in str(exc)
        else:
            values = list(result.values()) if isinstance(result, dict) else result
            assert np.isfinite(np.asarray(values, dtype=float)).all()
    assert np.isfinite(
        bp.Sequential(
            *[la.copy("float64") for la in net.layers], loss="cross_entropy"
        ).predict_proba(x)
    ).all()


def test_loss_and_grad_with_sample_weights_is_repetition():
    # 1/n Σ w_i ℓ_i with whole weights: the rows repeated w_i times, and the
    # loss and gradient of the repeated batch scaled by its size over n.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 3)), rng.integers(0, 3, 12)
    net = bp.Sequential(
        bp.Dense(3, 5, activation="tanh"),
        bp.Dense(5, 3, activation="softmax"),
        loss="cross_entropy",
        dtype="float64",
        seed=0,
    )
    w = np.arange(12) % 3
    loss = net.loss_and_grad(X, y, sample_weight=w)
    grads = net.grads.copy()
    rows = np.repeat(np.arange(12), w)
    repeated = net.loss_and_grad(X[rows], y[rows]) * len(rows) / 12
    np.testing.assert_allclose(loss, repeated, rtol=1e-12)
    np.testing.assert_allclose(grads, net.grads * len(rows) / 12, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="sample_weight"):
        net.loss_and_grad(X, y, sample_weight=-np.ones(12))
