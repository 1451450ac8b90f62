"""Every optimizer, step by step, against its formula written in numpy."""

import copy
import json
import warnings

import numpy as np
import pytest

import backprop as bp
from backprop import _ops
from backprop import optimizers as O
from backprop._codes import OptimizerKind


def numpy_steps(
    kind,
    w,
    grads,
    lr,
    momentum=0.0,
    nesterov=False,
    beta1=0.9,
    beta2=0.999,
    rho=0.9,
    eps=1e-8,
    l2=0.0,
    weight_decay=0.0,
    clip_norm=0.0,
    decay_biases=True,
    biases=(),
):
    """The update rules, in float64, applied to the successive gradients;
    with decay_biases False, the entries of `biases` ((offset, length)
    pairs) take l2 = weight_decay = 0."""
    w = w.astype(np.float64).copy()
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    l2, weight_decay = np.full_like(w, l2), np.full_like(w, weight_decay)
    for offset, length in () if decay_biases else biases:
        l2[offset : offset + length] = weight_decay[offset : offset + length] = 0
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) + l2 * w
        norm = np.sqrt(np.sum(g * g))
        if clip_norm and norm > clip_norm:
            g = g * clip_norm / norm
        w = w * (1 - lr * weight_decay)
        if kind == "sgd" and momentum == 0:
            w = w - lr * g
        elif kind == "sgd":
            s1 = momentum * s1 + g
            w = w - lr * (g + momentum * s1 if nesterov else s1)
        elif kind == "adam":
            s1 = beta1 * s1 + (1 - beta1) * g
            s2 = beta2 * s2 + (1 - beta2) * g * g
            m_hat, v_hat = s1 / (1 - beta1**t), s2 / (1 - beta2**t)
            w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        elif kind == "rmsprop":
            s1 = rho * s1 + (1 - rho) * g * g
            w = w - lr * g / (np.sqrt(s1) + eps)
        elif kind == "adagrad":
            s1 = s1 + g * g
            w = w - lr * g / (np.sqrt(s1) + eps)
    return w


KINDS = {kind.name.lower(): kind for kind in OptimizerKind}
CASES = [
    ("sgd", {}),
    ("sgd", dict(momentum=0.9)),
    ("sgd", dict(momentum=0.9, nesterov=True)),
    ("adam", {}),
    ("adam", dict(beta1=0.5, beta2=0.9, eps=1e-6)),
    ("adam", dict(weight_decay=0.1)),  # AdamW
    ("rmsprop", {}),
    ("rmsprop", dict(rho=0.5)),
    ("adagrad", dict(eps=1e-10)),
    ("sgd", dict(l2=0.05)),
    ("sgd", dict(momentum=0.5, clip_norm=0.5)),
    ("adam", dict(l2=0.01, clip_norm=1.0)),
    ("rmsprop", dict(weight_decay=0.2, clip_norm=0.3)),
    # decays within 1e-8 of 1: float32 rounds them to 1 (and 1 − β to 0 if taken there)
    ("adam", dict(beta1=0.99999999)),
    ("adam", dict(beta2=0.99999999)),
    ("rmsprop", dict(rho=0.99999999)),
    ("sgd", dict(momentum=0.99999999, nesterov=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", CASES)
def test_kernel_matches_numpy_step_by_step(kind, kw, dtype):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=37)
    grads = [rng.normal(size=37) for _ in range(6)]
    w = w0.astype(dtype)
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    steps = 0
    for k, g in enumerate(grads, start=1):
        steps = _ops.optimizer_update(
            w, g.astype(dtype), s1, s2, KINDS[kind], 0.05, steps=steps, **kw
        )
        assert steps == k
        expect = numpy_steps(kind, w0, grads[:k], 0.05, **kw)
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(w, expect, rtol=tol, atol=tol * max(1, np.abs(expect).max()))


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "adagrad"])
def test_an_eps_that_underflows_float32_never_divides_0_by_0(kind):
    """eps=1e-50 is 0 in float32: a parameter whose gradient was always 0
    must not take a step of 0 / 0."""
    g = np.array([0.0, 1.5, 0.0, -0.25])
    w = np.ones(4, np.float32)
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    steps = 0
    for _ in range(3):
        steps = _ops.optimizer_update(
            w, g.astype(np.float32), s1, s2, KINDS[kind], 0.05, eps=1e-50, steps=steps
        )
    expect = numpy_steps(kind, np.ones(4), [g] * 3, 0.05, eps=1e-50)
    assert expect[0] == expect[2] == 1
    np.testing.assert_allclose(w, expect, rtol=2e-6)


@pytest.mark.parametrize(
    "optimizer",
    [
        O.Adam(0.01, betas=(0.9, 0.99999999)),
        O.Adam(0.01, betas=(0.99999999, 0.999)),
        O.RMSProp(1e-4, rho=0.99999999),
        O.Adam(0.01, eps=1e-50),
        O.RMSProp(0.01, eps=1e-50),
    ],
)
def test_float32_training_follows_float64_where_settings_round(optimizer):
    """Settings that round to 1 (β, ρ) or to 0 (ε) in float32 train as in
    float64: no NaN, no warning, weights that move as they do there.  (A
    dead ReLU unit keeps some gradients at 0.)"""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(64, 4)), rng.normal(size=64)
    nets = [
        bp.Sequential(bp.Dense(4, 8, activation="relu"), bp.Dense(8, 1), dtype=dtype, seed=0)
        for dtype in ("float32", "float64")
    ]
    for n in nets:
        n.layers[0].b[:2] = -100  # two units that never fire
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            n.fit(X, y, epochs=5, optimizer=copy.deepcopy(optimizer), shuffle=False)
    start = bp.Sequential(bp.Dense(4, 8, activation="relu"), bp.Dense(8, 1), seed=0).params
    moved = np.abs(nets[1].params - start)
    assert moved.max() > 1e-3
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=0, atol=1e-4 * moved.max())


def net(dtype="float64"):
    return bp.Sequential(
        bp.Dense(4, 8, activation="tanh"),
        bp.Dense(8, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )


def train_steps(a, b, X, y, steps=3):
    """`steps` train_steps of network a on (X, y): the gradient of each,
    which network b (given a's parameters) reports, and a's parameters
    after each."""
    grads, after = [], []
    for _ in range(steps):
        b.params[...] = a.params
        b.loss_and_grad(X, y)
        grads.append(b.grads.copy())
        a.train_step(X, y)
        after.append(a.params.copy())
    return grads, after


@pytest.mark.parametrize(
    "optimizer",
    [
        O.SGD(0.1, momentum=0.9),
        O.SGD(0.1, momentum=0.9, nesterov=True),
        O.Adam(0.01),
        O.AdamW(0.01),
        O.RMSProp(0.01),
        O.AdaGrad(0.1),
        O.Adam(0.01, l2=0.01, clip_norm=0.5),
    ],
)
def test_network_training_follows_the_formula(optimizer):
    """Three train_steps of a network equal the numpy rule applied to the
    three gradients the network reports."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    a, b = net(), net()
    a.optimizer = optimizer
    w0 = a.params.copy()
    grads, _ = train_steps(a, b, X, y)
    s = optimizer.settings()
    kw = {k: v for k, v in s.items() if k != "kind"}
    kind = {v: k for k, v in KINDS.items()}[s["kind"]]
    np.testing.assert_allclose(
        a.params, numpy_steps(kind, w0, grads, optimizer.lr, **kw), rtol=1e-12, atol=1e-14
    )
    assert a.optimizer_steps == 3


def test_fit_with_adam_learns_xor_and_keeps_state_between_calls():
    X, y = bp.datasets.truth_table("xor")
    a = bp.Sequential(
        bp.Dense(2, 8, activation="tanh"),
        bp.Dense(8, 1, activation="sigmoid"),
        loss="binary_cross_entropy",
        seed=0,
    )
    a.fit(X, y, epochs=300, batch_size=4, optimizer=bp.Adam(lr=0.05))
    np.testing.assert_array_equal(a.predict(X), y)
    # one fit of 20 epochs = two fits of 10 with the same optimizer object
    b, c = (
        bp.Sequential(
            bp.Dense(2, 8, activation="tanh"),
            bp.Dense(8, 1, activation="sigmoid"),
            loss="binary_cross_entropy",
            seed=1,
        )
        for _ in range(2)
    )
    b.fit(X, y, epochs=20, batch_size=4, optimizer=bp.Adam(lr=0.05), shuffle=False)
    opt = bp.Adam(lr=0.05)
    c.fit(X, y, epochs=10, batch_size=4, optimizer=opt, shuffle=False)
    c.fit(X, y, epochs=10, batch_size=4, optimizer=opt, shuffle=False)
    np.testing.assert_array_equal(b.params, c.params)
    assert c.optimizer_steps == 20


def test_momentum_speeds_up_digits():
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True)

    def final_test_loss(optimizer, epochs=3):
        n = bp.Sequential(
            bp.Dense(64, 32, activation="relu"),
            bp.Dense(32, 10, activation="softmax"),
            loss="cross_entropy",
            seed=0,
        )
        n.fit(X_train, y_train, epochs=epochs, batch_size=32, optimizer=optimizer)
        return n.evaluate(X_test, y_test)["loss"]

    assert final_test_loss(bp.SGD(0.01, momentum=0.9)) < final_test_loss(bp.SGD(0.01))


def test_plain_lr_means_sgd():
    X, y = bp.datasets.truth_table("xor")
    n = net()
    n.fit(np.ones((4, 4)), y, lr=0.3)
    assert type(n.optimizer) is bp.SGD and n.optimizer.lr == 0.3
    n.fit(np.ones((4, 4)), y, optimizer="adam")
    assert type(n.optimizer) is bp.Adam
    n.fit(np.ones((4, 4)), y, lr=0.2)
    assert type(n.optimizer) is bp.SGD and n.optimizer.lr == 0.2
    with pytest.raises(ValueError, match="lr"):
        n.fit(np.ones((4, 4)), y, lr=0.1, optimizer=bp.Adam())


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: bp.SGD(lr=0), "lr"),
        (lambda: bp.SGD(momentum=1.0), "momentum"),
        (lambda: bp.SGD(nesterov=True), "nesterov"),
        (lambda: bp.Adam(betas=(0.9,)), "betas"),
        (lambda: bp.Adam(betas=(0.9, 1.5)), r"betas\[1\]"),
        (lambda: bp.RMSProp(rho=-0.1), "rho"),
        (lambda: bp.AdaGrad(eps=0), "eps"),
        (lambda: bp.Adam(clip_norm=0), "clip_norm"),
        (lambda: O.get("lbfgs"), "optimizer must be one of"),
    ],
)
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_partial_fit_continues_where_fit_left_off():
    X, y = bp.datasets.load_digits()
    a, b = (
        bp.Sequential(
            bp.Dense(64, 16, activation="relu"),
            bp.Dense(16, 10, activation="softmax"),
            loss="cross_entropy",
            seed=4,
        )
        for _ in range(2)
    )
    a.fit(X, y, epochs=1, optimizer=bp.SGD(0.05, momentum=0.9))
    a.fit(X, y, epochs=1)
    b.fit(X, y, epochs=1, optimizer=bp.SGD(0.05, momentum=0.9))
    loss = b.partial_fit(X, y)
    np.testing.assert_array_equal(a.params, b.params)
    assert loss > 0 and b.optimizer_steps == 2 * 57
    chunks = np.array_split(np.arange(len(X)), 4)  # a stream in chunks
    for chunk in chunks:
        before = b.params.copy()
        b.partial_fit(X[chunk], y[chunk])
        assert not np.array_equal(before, b.params)
    assert b.optimizer_steps == 2 * 57 + sum(-(-len(c) // 32) for c in chunks)


# -- settings changed after construction -------------------------------------------
@pytest.mark.parametrize(
    "make,name,value,error",
    [
        (O.SGD, "lr", -0.05, ValueError),
        (O.SGD, "lr", 0, ValueError),
        (O.SGD, "lr", float("nan"), ValueError),
        (O.Adam, "lr", "0.1", TypeError),
        (lambda: O.SGD(momentum=0.5), "momentum", 1.5, ValueError),
        (O.SGD, "l2", -5, ValueError),
        (O.AdamW, "weight_decay", -100, ValueError),
        (O.Adam, "eps", -1, ValueError),
        (O.RMSProp, "eps", 0.0, ValueError),
        (O.Adam, "betas", (2, 0.5), ValueError),
        (O.Adam, "betas", (0.9,), ValueError),
        (O.Adam, "betas", None, TypeError),
        (O.Adam, "betas", (0.9, True), TypeError),
        (O.RMSProp, "rho", 1.0, ValueError),
        (O.AdaGrad, "clip_norm", 0, ValueError),
        (O.SGD, "nesterov", True, ValueError),
        (O.SGD, "nesterov", "yes", TypeError),
        (lambda: O.SGD(momentum=0.9, nesterov=True), "momentum", 0, ValueError),
    ],
)
def test_a_bad_setting_assigned_after_construction_is_refused(make, name, value, error):
    opt = make()
    before = dict(vars(opt))
    with pytest.raises(error, match=name):
        setattr(opt, name, value)
    assert vars(opt) == before


def test_fit_never_runs_with_a_refused_setting():
    """The issue's case: lr = -0.05 trained the loss from 4 to 1e12."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)), rng.normal(size=64)
    n = bp.Sequential(bp.Dense(4, 8, activation="tanh"), bp.Dense(8, 1), seed=0)
    n.optimizer = bp.SGD(0.05)
    with pytest.raises(ValueError, match="lr"):
        n.optimizer.lr = -0.05
    history = n.fit(X, y, epochs=5)
    assert history.history["lr"] == [0.05] * 5
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_settings_assigned_after_construction_train_as_given_to_it(tmp_path):
    """Assigned settings reach fit, and a model file keeps them."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    a, b = net(), net()
    opt = bp.SGD(0.1)
    opt.momentum, opt.nesterov, opt.l2, opt.clip_norm = 0.9, True, 0.01, 1.0
    a.fit(X, y, epochs=3, optimizer=opt)
    b.fit(
        X, y, epochs=3, optimizer=bp.SGD(0.1, momentum=0.9, nesterov=True, l2=0.01, clip_norm=1.0)
    )
    np.testing.assert_array_equal(a.params, b.params)
    adam = bp.Adam()
    adam.betas, adam.eps = [0.5, 0.75], 1e-6  # (a list becomes a tuple)
    a.fit(X, y, epochs=2, optimizer=adam)
    b.fit(X, y, epochs=2, optimizer=bp.Adam(betas=(0.5, 0.75), eps=1e-6))
    np.testing.assert_array_equal(a.params, b.params)
    back = bp.load(a.save(tmp_path / "m"))
    assert type(back.optimizer) is bp.Adam and vars(back.optimizer) == vars(adam)
    assert vars(adam) == dict(
        lr=1e-3,
        l2=0.0,
        weight_decay=0.0,
        clip_norm=None,
        decay_biases=True,
        betas=(0.5, 0.75),
        eps=1e-6,
    )


def test_an_optimizer_has_no_attributes_but_its_settings():
    """A misspelt setting is an error, not an attribute that does nothing
    (and that a model file could not be read back with)."""
    opt = bp.Adam()
    with pytest.raises(AttributeError, match="learning_rate.*lr, l2, weight_decay"):
        opt.learning_rate = 0.1
    with pytest.raises(AttributeError):
        opt.kind = O.KIND_SGD
    assert "learning_rate" not in vars(opt) and opt.kind == O.KIND_ADAM


def test_a_changed_setting_reaches_train_step_and_apply_gradients_at_once(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    a, b, c = net(), net(), net()
    a.optimizer, b.optimizer = bp.SGD(0.1), bp.SGD(0.1, momentum=0.9, l2=0.01)
    c.optimizer = bp.SGD(0.1)
    a.optimizer.momentum = c.optimizer.momentum = 0.9
    a.optimizer.l2 = c.optimizer.l2 = 0.01
    for _ in range(3):
        a.train_step(X, y)
        b.train_step(X, y)
        c.loss_and_grad(X, y)
        c.apply_gradients()
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(c.params, b.params)
    back = bp.load(a.save(tmp_path / "m"))  # (the velocity it now keeps is saved)
    np.testing.assert_array_equal(back._opt_state[0], a._opt_state[0])


def test_a_setting_changed_by_a_callback_takes_effect_from_the_next_epoch():
    class MomentumAfterOne(bp.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            net.optimizer.momentum = 0.9

    X, y = bp.datasets.load_digits()
    X, y = X[:200], y[:200]
    a, b = net64(), net64()
    a.fit(X, y, epochs=2, optimizer=bp.SGD(0.05), shuffle=False, callbacks=[MomentumAfterOne()])
    b.fit(X, y, epochs=1, optimizer=bp.SGD(0.05), shuffle=False)
    b.optimizer.momentum = 0.9
    b.fit(X, y, epochs=1, shuffle=False)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a._opt_state[0], b._opt_state[0])


def net64():
    return bp.Sequential(
        bp.Dense(64, 16, activation="relu"),
        bp.Dense(16, 10, activation="softmax"),
        loss="cross_entropy",
        seed=4,
    )


def test_a_change_a_network_refuses_is_undone_for_every_network():
    """One optimizer, two networks; the second refuses the change (as an
    engine busy in another thread does): neither keeps it."""

    class Refusing:
        def __init__(self, engine):
            self.engine = engine

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def set_optimizer(self, **settings):
            if settings["momentum"] == 0.5:
                raise RuntimeError("busy")
            self.engine.set_optimizer(**settings)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    opt = bp.SGD(0.1, momentum=0.9)
    first, second, alone = net(), net(), net()
    first.optimizer = second.optimizer = opt
    alone.optimizer = bp.SGD(0.1, momentum=0.9)
    second._engine = Refusing(second._engine)
    with pytest.raises(RuntimeError, match="busy"):
        opt.momentum = 0.5
    assert opt.momentum == 0.9
    for _ in range(2):
        first.train_step(X, y)
        alone.train_step(X, y)
    np.testing.assert_array_equal(first.params, alone.params)


# -- the optimizer's state overflowing ---------------------------------------------
@pytest.mark.parametrize("make", [bp.Adam, bp.RMSProp, bp.AdaGrad])
def test_an_optimizer_state_that_overflows_stops_fit_and_is_undone(make):
    """float32, inputs around 1e12: the squared gradients overflow the state
    to inf, and the weights would stop moving with a finite loss."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)), rng.normal(size=64)
    n = bp.Sequential(bp.Dense(4, 8, activation="relu"), bp.Dense(8, 1), dtype="float32", seed=0)
    n.fit(X, y, epochs=2, optimizer=make())  # a healthy start
    params, state = n.params.copy(), [s.copy() for s in n._opt_state]
    steps = n.optimizer_steps
    with pytest.warns(RuntimeWarning) as caught:
        history = n.fit(X * 1e12, y, epochs=5)
    message = str(caught[0].message)
    assert message.startswith(
        f"training stopped at epoch 3: the optimizer's state ({make.__name__}"
    )
    assert "overflowed float32" in message and "train in float64" in message
    assert "learning rate" not in message
    assert len(history.epoch) == 1 and np.isfinite(history.history["loss"][0])
    np.testing.assert_array_equal(n.params, params)
    for kept, now in zip(state, n._opt_state):
        np.testing.assert_array_equal(kept, now)
    assert n.optimizer_steps == steps
    n.optimizer.clip_norm = 1.0  # what the message offers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n.fit(X * 1e12, y, epochs=2)
    assert not np.array_equal(n.params, params)


def test_a_state_overflow_in_float64_offers_no_float64():
    X = np.full((8, 1), 1e160)
    n = bp.Sequential(bp.Dense(1, 1, init="zeros"), seed=0)
    n.layers[0].b[:] = 1e-5  # a residual of 1e-5, a weight gradient of 1e155
    with pytest.warns(RuntimeWarning, match="overflowed float64") as caught:
        n.fit(X, np.zeros(8), epochs=1, optimizer=bp.AdaGrad())
    assert "train in float64" not in str(caught[0].message)


# -- decay_biases=False: l2 and weight decay for the weights only -------------------
def biased(dtype="float64"):
    """net() with biases away from 0, which l2 and decay would then move."""
    n = net(dtype)
    for layer in n.layers:
        layer.b[...] = np.linspace(-1, 1, layer.n_out)
    return n


def bias_ranges(network):
    """Where network's biases lie in its flat buffer: (offset, length) pairs."""
    return [(e.offset, e.size) for e in network.layout.entries if e.name == "b"]


def reference(optimizer, w0, grads, biases):
    """numpy_steps with the settings of `optimizer`."""
    kw = optimizer.settings()
    kind = {v: k for k, v in KINDS.items()}[kw.pop("kind")]
    return numpy_steps(kind, w0, grads, optimizer.lr, biases=biases, **kw)


# every kind, each with l2 and decoupled weight decay (AdamW's), one clipped
DECAYING = {
    "sgd": lambda **kw: O.SGD(0.1, l2=0.05, weight_decay=0.2, **kw),
    "momentum": lambda **kw: O.SGD(0.1, momentum=0.9, l2=0.05, weight_decay=0.2, **kw),
    "nesterov": lambda **kw: O.SGD(0.1, momentum=0.9, nesterov=True, l2=0.05, **kw),
    "adam": lambda **kw: O.Adam(0.01, l2=0.05, **kw),
    "adamw": lambda **kw: O.AdamW(0.01, l2=0.05, weight_decay=0.5, **kw),
    "rmsprop": lambda **kw: O.RMSProp(0.01, l2=0.05, weight_decay=0.2, **kw),
    "adagrad": lambda **kw: O.AdaGrad(0.1, l2=0.05, weight_decay=0.2, **kw),
    "adam_clipped": lambda **kw: O.Adam(0.01, l2=0.5, clip_norm=0.05, **kw),
}
KERNEL_BIASES = [(0, 3), (10, 5), (30, 7)]  # of 37 entries: one first, one last


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kind,kw",
    [(kind, dict(kw, l2=0.05, weight_decay=0.1)) for kind, kw in CASES[:9]]
    + [("adam", dict(l2=0.5, clip_norm=0.3)), ("sgd", dict(momentum=0.5, l2=0.5, clip_norm=0.3))],
)
def test_the_kernel_leaves_the_biases_undecayed(kind, kw, dtype):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=37)
    grads = [rng.normal(size=37) for _ in range(6)]
    apart = dict(decay_biases=False, biases=KERNEL_BIASES)
    w = w0.astype(dtype)
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    steps = 0
    for k, g in enumerate(grads, start=1):
        steps = _ops.optimizer_update(
            w, g.astype(dtype), s1, s2, KINDS[kind], 0.05, steps=steps, **kw, **apart
        )
        assert steps == k  # (one step, however many pieces)
        expect = numpy_steps(kind, w0, grads[:k], 0.05, **kw, **apart)
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(w, expect, rtol=tol, atol=tol * max(1, np.abs(expect).max()))
    assert not np.allclose(w, numpy_steps(kind, w0, grads, 0.05, **kw))  # (it matters)


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop", "adagrad"])
def test_undecayed_biases_step_as_with_l2_0_and_the_weights_as_before(kind):
    """Bit for bit: the biases as the same rule with l2 = weight_decay = 0
    gives them, every other entry as with decay_biases True (or no biases
    named)."""
    rng = np.random.default_rng(1)
    w0, g = rng.normal(size=37), rng.normal(size=37)
    is_bias = np.zeros(37, bool)
    for offset, length in KERNEL_BIASES:
        is_bias[offset : offset + length] = True

    def step(biases=KERNEL_BIASES, **kw):
        w, s1, s2 = w0.copy(), np.full(37, 0.5), np.full(37, 0.5)
        _ops.optimizer_update(w, g, s1, s2, KINDS[kind], 0.05, steps=3, biases=biases, **kw)
        return w, s1, s2

    apart = step(l2=0.05, weight_decay=0.1, decay_biases=False)
    decayed = step(l2=0.05, weight_decay=0.1)
    plain = step()
    for got, everywhere, undecayed in zip(apart, decayed, plain):
        np.testing.assert_array_equal(got[is_bias], undecayed[is_bias])
        np.testing.assert_array_equal(got[~is_bias], everywhere[~is_bias])
    for got, alike in zip(decayed, step(biases=(), l2=0.05, weight_decay=0.1)):
        np.testing.assert_array_equal(got, alike)


def test_the_clipped_norm_leaves_out_the_biases_l2():
    """g = 0: the gradient is l2·W alone, and its norm ‖l2·W‖ (not the
    biases' large l2·b) sets the clipping."""
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=12), np.full(4, 100.0)
    w = np.concatenate([W, b])
    s = np.zeros_like(w)
    l2, clip, lr = 0.5, 0.1, 0.2
    apart = dict(decay_biases=False, biases=[(12, 4)])
    _ops.optimizer_update(
        w, np.zeros_like(w), s, s, KINDS["sgd"], lr, l2=l2, clip_norm=clip, **apart
    )
    scale = clip / np.linalg.norm(l2 * W)
    assert scale < 1
    np.testing.assert_allclose(w[:12], W - lr * scale * l2 * W, rtol=1e-14)
    np.testing.assert_array_equal(w[12:], b)


@pytest.mark.parametrize(
    "biases", [[(5, 3), (4, 2)], [(5, 3), (7, 2)], [(35, 3)], [(-1, 2)], [(3, -1)], [(1, 2, 3)]]
)
def test_the_kernel_takes_only_biases_in_order_and_apart(biases):
    w = np.zeros(37)
    with pytest.raises(ValueError, match="biases"):
        _ops.optimizer_update(w, w, w, w, KINDS["sgd"], 0.1, biases=biases)


@pytest.mark.parametrize("decay_biases", [True, False])
@pytest.mark.parametrize("name", DECAYING)
def test_train_step_leaves_the_biases_undecayed_as_the_formula_says(name, decay_biases):
    """Three train_steps equal the numpy rule in which, unless decay_biases,
    the biases take no l2 and no decay; the first step leaves the biases as
    the same optimizer with l2 = weight_decay = 0 does, and the weights (no
    clipping aside) as with decay_biases True."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    optimizer = DECAYING[name](decay_biases=decay_biases)
    a, b = biased(), biased()
    a.optimizer = optimizer
    w0 = a.params.copy()
    grads, after = train_steps(a, b, X, y)
    first = after[0]
    np.testing.assert_allclose(
        a.params, reference(optimizer, w0, grads, bias_ranges(a)), rtol=1e-12, atol=1e-14
    )
    assert a.optimizer_steps == 3
    if decay_biases:
        return
    undecayed, decayed = biased(), biased()
    undecayed.optimizer, decayed.optimizer = DECAYING[name](), DECAYING[name]()
    undecayed.optimizer.l2 = undecayed.optimizer.weight_decay = 0
    undecayed.train_step(X, y)
    decayed.train_step(X, y)
    for l, (W, b_) in enumerate(a.layout.views(first)):
        if optimizer.clip_norm is None:  # (else each step is scaled by its own norm)
            np.testing.assert_array_equal(b_, undecayed.layers[l].b)
            np.testing.assert_array_equal(W, decayed.layers[l].W)
        assert not np.array_equal(b_, decayed.layers[l].b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", DECAYING)
def test_fit_leaves_the_biases_undecayed_as_train_step_does(name, dtype):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    fitted, stepped, decayed = biased(dtype), biased(dtype), biased(dtype)
    fitted.fit(
        X, y, epochs=2, batch_size=8, shuffle=False, optimizer=DECAYING[name](decay_biases=False)
    )
    stepped.optimizer = DECAYING[name](decay_biases=False)
    for _ in range(2):
        for i in range(0, 40, 8):
            stepped.train_step(X[i : i + 8], y[i : i + 8])
    np.testing.assert_array_equal(fitted.params, stepped.params)
    assert fitted.optimizer_steps == stepped.optimizer_steps == 10
    decayed.fit(X, y, epochs=2, batch_size=8, shuffle=False, optimizer=DECAYING[name]())
    assert not np.array_equal(fitted.params, decayed.params)


def test_plain_sgd_with_undecayed_biases_keeps_the_fused_path():
    """l2 = weight_decay = 0: decay_biases changes nothing, and fit still
    fuses plain SGD into the backward pass, which never stores the weights'
    gradient (grads keeps only the biases'; see csrc/epoch.pxi), where the
    other rules step layer by layer, clearing each gradient once used."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    fused, apart, unfused = biased(), biased(), biased()
    fit = dict(epochs=3, batch_size=16, shuffle=False)
    fused.fit(X, y, optimizer=bp.SGD(0.5), **fit)
    apart.fit(X, y, optimizer=bp.SGD(0.5, decay_biases=False), **fit)
    unfused.fit(X, y, optimizer=bp.SGD(0.5, l2=1e-300, decay_biases=False), **fit)
    np.testing.assert_array_equal(apart.params, fused.params)
    weights = np.ones(apart.layout.n_params, bool)
    for offset, length in bias_ranges(apart):
        weights[offset : offset + length] = False
    assert not apart.grads[weights].any() and apart.grads[~weights].any()
    assert not unfused.grads.any()


def test_decay_biases_set_after_construction_reaches_every_update_at_once():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(16, 4)), rng.integers(0, 3, 16)
    shared = bp.AdamW(0.01, l2=0.05, weight_decay=0.5)
    a, b, c = biased(), biased(), biased()
    a.optimizer = b.optimizer = shared  # (both networks hear the change)
    c.optimizer = bp.AdamW(0.01, l2=0.05, weight_decay=0.5, decay_biases=False)
    shared.decay_biases = False
    for _ in range(3):
        a.train_step(X, y)
        b.loss_and_grad(X, y)
        b.apply_gradients()
        c.train_step(X, y)
    np.testing.assert_array_equal(a.params, c.params)
    np.testing.assert_array_equal(b.params, c.params)
    a.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    c.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(a.params, c.params)
    back, decayed = biased(), biased()  # and back to True
    back.optimizer = bp.AdamW(0.01, l2=0.05, weight_decay=0.5, decay_biases=False)
    decayed.optimizer = bp.AdamW(0.01, l2=0.05, weight_decay=0.5)
    back.optimizer.decay_biases = True
    back.train_step(X, y)
    decayed.train_step(X, y)
    np.testing.assert_array_equal(back.params, decayed.params)


@pytest.mark.parametrize("cls", [O.SGD, O.Adam, O.AdamW, O.RMSProp, O.AdaGrad])
def test_decay_biases_must_be_true_or_false(cls):
    for bad in ["yes", None, 2, 0.5, [True], np.array([True])]:
        with pytest.raises(TypeError, match="decay_biases"):
            cls(decay_biases=bad)
        opt = cls(decay_biases=False)
        with pytest.raises(TypeError, match="decay_biases"):
            opt.decay_biases = bad
        assert opt.decay_biases is False
    opt = cls(decay_biases=np.bool_(False))
    assert opt.decay_biases is False and opt.settings()["decay_biases"] is False
    assert cls().decay_biases is True
    assert "decay_biases=False" in repr(opt) and "decay_biases" not in repr(cls())


def test_a_model_file_keeps_decay_biases_and_resumes_with_it(tmp_path):
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    a = biased()
    a.fit(X, y, epochs=2, batch_size=8, optimizer=bp.Adam(0.01, l2=0.05, decay_biases=False))
    path = a.save(tmp_path / "m")
    with np.load(path) as f:
        assert json.loads(str(f["meta"]))["optimizer"]["settings"]["decay_biases"] is False
    back = bp.load(path)
    assert back.optimizer.decay_biases is False and vars(back.optimizer) == vars(a.optimizer)
    a.fit(X, y, epochs=2, batch_size=8)
    back.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(back.params, a.params)


def test_a_model_file_from_before_decay_biases_loads_with_it_true(tmp_path):
    a = biased()
    a.optimizer = bp.SGD(0.1, momentum=0.9, l2=0.05)
    path = a.save(tmp_path / "m")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["optimizer"]["settings"]["decay_biases"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    back = bp.load(tmp_path / "old.npz")
    assert back.optimizer.decay_biases is True and vars(back.optimizer) == vars(a.optimizer)


class StopAfter(bp.callbacks.Callback):
    """Interrupts training once epoch `at` is over (and checkpointed)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, net, epoch, logs):
        if epoch == self.at + 1:
            raise KeyboardInterrupt


def test_a_checkpoint_keeps_decay_biases(tmp_path):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    path = tmp_path / "run.npz"

    def run(network, *callbacks, checkpoint=None):
        optimizer = bp.RMSProp(0.01, l2=0.1, weight_decay=0.1, decay_biases=False)
        network.fit(
            X,
            y,
            epochs=4,
            batch_size=8,
            optimizer=optimizer,
            callbacks=[*callbacks],
            checkpoint=checkpoint,
        )

    whole = biased()
    run(whole)
    with pytest.raises(KeyboardInterrupt):
        run(biased(), StopAfter(2), checkpoint=path)
    with np.load(path) as f:
        assert json.loads(str(f["meta"]))["optimizer"]["settings"]["decay_biases"] is False
    again = biased()
    run(again, checkpoint=path)
    assert again.optimizer.decay_biases is False
    np.testing.assert_array_equal(again.params, whole.params)
