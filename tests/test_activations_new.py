"""The smooth activations: gelu (exact), gelu_tanh, silu (swish), softplus,
elu(α) and selu.

    gelu       z Φ(z)                                f′ = Φ(z) + z φ(z)
    gelu_tanh  ½ z (1 + tanh u), u = √(2/π)(z + 0.044715 z³)
    silu       z σ(z)                                f′ = σ(z) (1 + z (1 − σ(z)))
    softplus   log(1 + e^z)                          f′ = σ(z)
    elu        z if z > 0 else α (e^z − 1)           f′ = 1 if z > 0 else α e^z
    selu       λ elu_α(z), α = 1.6732632…, λ = 1.0507009…

Every expected value is one of these formulas written here in float64 with
numpy and scipy.special (erf, erfc, expit), central finite differences in
float64, or PyTorch's autograd (when PyTorch is installed).
"""

import json
import pickle

import numpy as np
import pytest
from scipy.special import erf, erfc, expit

import backprop as bp
from backprop import _format
from backprop import activations as A
from backprop._codes import ActivationCode as Act

ALPHA = 0.7  # elu's α in these tests (1 is its default)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
NEW = ["gelu", "gelu_tanh", "silu", "softplus", "elu", "selu"]


def unit(name):
    return A.Elu(ALPHA) if name == "elu" else A.get(name)


def u(z):
    return np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)


def Phi(z):
    return 0.5 * erfc(-z / np.sqrt(2))  # the normal distribution function, exact in its tails


def phi(z):
    return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def neg_expm1(z, scale):
    return scale * np.expm1(np.minimum(z, 0))


FORWARD = {
    "gelu": lambda z: z * Phi(z),
    "gelu_tanh": lambda z: z * expit(2 * u(z)),  # = ½ z (1 + tanh u), without cancelling
    "silu": lambda z: z * expit(z),
    "softplus": lambda z: np.logaddexp(0, z),
    "elu": lambda z: np.where(z > 0, z, neg_expm1(z, ALPHA)),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, neg_expm1(z, SELU_ALPHA)),
}
DERIVATIVE = {
    "gelu": lambda z: Phi(z) + z * phi(z),
    "gelu_tanh": lambda z: (
        expit(2 * u(z))
        + z * 2 * expit(2 * u(z)) * expit(-2 * u(z)) * np.sqrt(2 / np.pi) * (1 + 0.134145 * z * z)
    ),
    "silu": lambda z: expit(z) * (1 + z * expit(-z)),
    "softplus": expit,
    "elu": lambda z: np.where(z > 0, 1.0, ALPHA * np.exp(np.minimum(z, 0))),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0))),
}
# Relative error of the values: float32 loses about 2z²·ε in gelu's tails,
# where erfc(−z/√2) is as sensitive as that to the rounding of its argument.
RTOL = {np.float32: 2e-5, np.float64: 5e-13}
# Absolute error of the derivatives, which are of order 1: a few ε (elu's
# and selu's from a = f(z) as a + α, exact to ε·α absolutely).
ATOL = {np.float32: 4 * 1.2e-7, np.float64: 4 * 2.3e-16}


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def grid(dtype):
    """z across the float range: fine steps over ±12 (both tails of every
    unit), the powers of ten from 1e-30 to 1e4 on both sides, exact zeros,
    and near the largest float."""
    powers = np.logspace(-30, 4, 69)
    z = np.concatenate(
        [
            np.linspace(-12, 12, 2401),
            powers,
            -powers,
            [0.0, -0.0, -0.7518, -1.2785, 1e4, -1e4],  # (gelu's and silu's minima)
        ]
    )
    big = np.finfo(dtype).max / 4
    return np.concatenate([z.astype(dtype), np.array([big, -big], dtype)])


# -- each unit against its formula --------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_values_and_derivatives_against_the_formulas(name, dtype):
    z = grid(dtype)
    z64 = z.astype(np.float64)
    f = unit(name)
    a, fprime = f(z), f.derivative(z)
    assert a.dtype == dtype and fprime.dtype == dtype
    assert np.isfinite(a).all() and np.isfinite(fprime).all()
    moderate = np.abs(z64) <= 1e4
    with np.errstate(over="ignore"):  # (z³ and z² of 1e4 are fine; exp of them is not)
        expected, slope = FORWARD[name](z64[moderate]), DERIVATIVE[name](z64[moderate])
    normal = np.abs(expected) > 1e3 * np.finfo(dtype).tiny  # (subnormals carry few digits)
    np.testing.assert_allclose(a[moderate][normal], expected[normal], rtol=RTOL[dtype], atol=0)
    np.testing.assert_allclose(a[moderate][~normal], expected[~normal], rtol=0, atol=1e-36)
    np.testing.assert_allclose(fprime[moderate], slope, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("name", NEW)
def test_derivatives_are_central_differences(name):
    z = np.linspace(-6, 6, 241) + 0.013  # (no kink of elu at a sample)
    h = 1e-5
    f = unit(name)
    numeric = (f(z + h) - f(z - h)) / (2 * h)
    np.testing.assert_allclose(f.derivative(z), numeric, rtol=1e-8, atol=1e-10)


LIMITS = {  # f(−1e4), f(0), f(1e4); f′ of the same
    "gelu": ((0.0, 0.0, 1e4), (0.0, 0.5, 1.0)),
    "gelu_tanh": ((0.0, 0.0, 1e4), (0.0, 0.5, 1.0)),
    "silu": ((0.0, 0.0, 1e4), (0.0, 0.5, 1.0)),
    "softplus": ((0.0, np.log(2), 1e4), (0.0, 0.5, 1.0)),
    "elu": ((-ALPHA, 0.0, 1e4), (0.0, ALPHA, 1.0)),  # f′(0) = α, as PyTorch's
    "selu": (
        (-SELU_SCALE * SELU_ALPHA, 0.0, SELU_SCALE * 1e4),
        (0.0, SELU_SCALE * SELU_ALPHA, SELU_SCALE),
    ),
}


@pytest.mark.parametrize("name", NEW)
def test_limits_at_extremes_and_at_zero(name, dtype):
    z = np.array([-1e4, 0.0, 1e4], dtype)
    values, slopes = LIMITS[name]
    f = unit(name)
    np.testing.assert_allclose(f(z), values, rtol=RTOL[dtype], atol=0)
    np.testing.assert_allclose(f.derivative(z), slopes, rtol=RTOL[dtype], atol=0)
    # across the float range (to half the largest float, where selu's λz
    # still fits): finite, and the limits' values
    top = np.array([-np.finfo(dtype).max / 2, np.finfo(dtype).max / 2], dtype)
    assert np.isfinite(f(top)).all() and np.isfinite(f.derivative(top)).all()
    np.testing.assert_allclose(f.derivative(top), [slopes[0], slopes[2]], rtol=RTOL[dtype])


def test_gelu_keeps_its_precision_far_below_zero(dtype):
    # Φ(z) by erfc: 1 + erf(z/√2) in the same float type loses Φ's digits
    # (all of them at z = −10 in float64, most at z = −5 in float32).
    z = np.array([-5.0, -8.0, -10.0], dtype)
    exact = z.astype(np.float64) * Phi(z.astype(np.float64))
    np.testing.assert_allclose(A.gelu(z), exact, rtol=RTOL[dtype])
    naive = dtype(0.5) * z * (1 + erf(z / dtype(np.sqrt(2))))
    assert naive.dtype == dtype
    assert np.max(np.abs(naive - exact) / np.abs(exact)) > 1e-2  # what erfc saves


# -- against PyTorch ------------------------------------------------------------------------


def torch_unit(torch, name):
    F = torch.nn.functional
    return {
        "gelu": lambda t: F.gelu(t, approximate="none"),
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "softplus": F.softplus,
        "elu": lambda t: F.elu(t, alpha=ALPHA),
        "selu": F.selu,
    }[name]


@pytest.mark.parametrize("name", NEW)
def test_against_pytorch_autograd(name, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    z = np.concatenate([rng.normal(0, 3, 500), [-1e4, -30, -1e-6, 0.0, 1e-6, 30, 1e4]]).astype(
        dtype
    )
    g = rng.normal(size=z.size).astype(dtype)
    t = torch.tensor(z, requires_grad=True)
    out = torch_unit(torch, name)(t)
    out.backward(torch.tensor(g))
    f = unit(name)
    # PyTorch's gelu takes 1 + erf(z/√2) and its gelu_tanh ½z(1 + tanh u),
    # whose float32 tails cancel (by up to ~1e-7 and ~1e-6 absolutely, here;
    # ours are z·½erfc(−z/√2) and z σ(2u)); its softplus returns z itself
    # beyond z = 20.
    # How far PyTorch's float32 kernels are from the exact values depends on
    # the CPU they run on (its AVX-512 gelu tail is off by up to ~8e-7): that
    # distance, against the formulas in float64, is allowed on top.
    atol = 2e-6 if name == "gelu_tanh" else 3e-7
    rtol, atol = (1e-5, atol) if dtype == np.float32 else (1e-12, 1e-14)
    z64, g64 = z.astype(np.float64), g.astype(np.float64)
    pairs = [
        (f(z), out.detach().numpy(), FORWARD[name](z64)),
        (f.backward(f(z), g, z), t.grad.numpy(), DERIVATIVE[name](z64) * g64),
    ]
    for ours, theirs, exact in pairs:
        slack = np.abs(theirs - exact) if dtype == np.float32 else 0
        bound = atol + rtol * np.abs(theirs) + slack
        np.testing.assert_array_less(np.abs(ours.astype(np.float64) - theirs), bound)


# -- what the units are ----------------------------------------------------------------------


def test_names_codes_and_aliases():
    for name in NEW:
        act = A.get(name)
        assert act.name == name and act.code is Act[name.upper()] and act.differentiable
        assert name in A.NAMES and A.get(name.upper()) is act
    assert A.get("swish") is A.silu and "swish" in A.NAMES
    assert [n for n in NEW if A.get(n).keeps_z] == ["gelu", "gelu_tanh", "silu"]
    assert A.get("elu") == A.Elu(1.0) and A.elu.alpha == 1.0
    assert A.selu.default_init == "normal" and A.gelu.default_init == "he"


def test_elu_alpha_is_its_parameter():
    e = A.Elu(0.5)
    assert e.alpha == 0.5 and e.parameter == 0.5 and e.negative_slope == 0.0
    assert repr(e) == "Elu(alpha=0.5)" and e == A.Elu(0.5) and e != A.elu
    assert hash(e) == hash(A.Elu(0.5)) and len({e, A.Elu(0.5), A.elu}) == 2
    np.testing.assert_allclose(e([-1.0, 2.0]), [0.5 * np.expm1(-1.0), 2.0], rtol=1e-15)
    with pytest.raises(AttributeError, match="fixed at construction"):
        e.alpha = 2.0


@pytest.mark.parametrize(
    "bad, error",
    [
        (0, ValueError),
        (-1.0, ValueError),
        (np.nan, ValueError),
        (np.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
@pytest.mark.parametrize(
    "make, name", [(A.Elu, "alpha"), (bp.losses.Huber, "delta")], ids=["elu", "huber"]
)
def test_elu_and_huber_refuse_a_bad_parameter_naming_it(make, name, bad, error):
    with pytest.raises(error, match=name):
        make(bad)


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
def test_units_that_keep_z_need_it_for_their_derivative(name):
    z = np.array([[-2.0, -0.5, 0.5]])
    f = A.get(name)
    with pytest.raises(ValueError, match="z: "):
        f.backward(f(z), np.ones_like(z))
    with pytest.raises(ValueError, match="z must have the shape"):
        f.backward(f(z), np.ones_like(z), z[:, :2])
    # softplus, elu and selu take theirs from the outputs alone
    for other in ("softplus", "elu", "selu"):
        f = unit(other)
        np.testing.assert_allclose(
            f.backward(f(z), np.ones_like(z)), DERIVATIVE[other](z), rtol=1e-13
        )


# -- in layers and networks -------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_dense_keeps_z_only_where_the_derivative_needs_it(name):
    layer = bp.Dense(3, 4, activation=unit(name), seed=0)
    x = np.random.default_rng(0).normal(size=(5, 3))
    a = layer.forward(x)
    z = x @ layer.W + layer.b
    np.testing.assert_allclose(a, FORWARD[name](z), rtol=1e-13, atol=1e-15)
    if layer.activation.keeps_z:
        np.testing.assert_allclose(layer.preactivation, z, rtol=1e-14)
    else:
        assert layer.preactivation is None
    g = np.random.default_rng(1).normal(size=a.shape)
    dx = layer.backward(g)
    delta = g * DERIVATIVE[name](z)
    np.testing.assert_allclose(layer.dW, x.T @ delta, rtol=1e-12)
    np.testing.assert_allclose(dx, delta @ layer.W.T, rtol=1e-12)
    assert bp.gradcheck(layer, x, np.zeros((5, 4))).max_rel_error < 1e-7


def network(hidden, output="identity", loss="mse", dtype="float64", seed=0, k=2):
    return bp.Sequential(
        bp.Dense(4, 6, activation=hidden),
        bp.Dense(6, 5, activation=hidden),
        bp.Dense(5, k, activation=output),
        loss=loss,
        dtype=dtype,
        seed=seed,
    )


@pytest.mark.parametrize("name", NEW)
def test_gradcheck_through_hidden_layers(name):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 2))
    net = network(unit(name))
    assert bp.gradcheck(net, X, y).max_rel_error < 1e-7
    # the per-layer path (Dense.forward/backward) is the compiled step
    net.loss_and_grad(X, y)
    compiled = net.grads.copy()
    net.forward(X)
    np.testing.assert_allclose(net.backward(y), compiled, rtol=1e-12, atol=1e-14)
    assert net.explain(X[0], y[0]).max_rel_error_core < 1e-9


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "softplus"])
def test_gradcheck_through_an_output_layer_that_keeps_z(name):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    net = network("tanh", output=name, k=3)
    assert bp.gradcheck(net, X, y).max_rel_error < 1e-7
    net.forward(X)
    grads = net.backward(y).copy()
    net.loss_and_grad(X, y)
    np.testing.assert_allclose(grads, net.grads, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["gelu", "silu", "elu"])
def test_batches_beyond_the_first_workspace_and_float32(name, dtype):
    # fit's workspace grows (capacity 32 at first); z's grows with it.
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(100, 4)).astype(dtype), rng.normal(size=(100, 2)).astype(dtype)
    net = network(unit(name), dtype=np.dtype(dtype).name)
    value = net.loss_and_grad(X, y)
    compiled = net.grads.copy()
    net.forward(X)
    by_layer = net.backward(y)
    rtol = 2e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(compiled, by_layer, rtol=rtol, atol=rtol * np.abs(by_layer).max())
    assert value == pytest.approx(
        net.evaluate(X, y)["loss"], rel=1e-6 if dtype == np.float32 else 1e-13
    )


def test_a_sparse_first_layer_keeps_z_too():
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(6)
    X = sparse.random(64, 200, density=0.01, format="csr", random_state=7)
    y = rng.normal(size=(64, 1))
    on_sparse = bp.Sequential(bp.Dense(200, 8, "gelu"), bp.Dense(8, 1), seed=0)
    on_dense, start = on_sparse.copy(), on_sparse.params.copy()
    on_sparse.fit(X, y, epochs=3, batch_size=16, shuffle=False)
    on_dense.fit(X.toarray(), y, epochs=3, batch_size=16, shuffle=False)
    assert not np.allclose(on_sparse.params, start)
    np.testing.assert_allclose(on_sparse.params, on_dense.params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NEW)
def test_xor_is_learned(name):
    X, y = bp.datasets.truth_table("xor")
    net = bp.Sequential(
        bp.Dense(2, 8, activation=unit(name)),
        bp.Dense(8, 1, activation="sigmoid"),
        loss="binary_cross_entropy",
        seed=0,
    )
    net.fit(X, y, epochs=300, batch_size=4, optimizer=bp.Adam(0.05))
    np.testing.assert_array_equal(net.predict(X), np.ravel(y))
    assert net.evaluate(X, y)["loss"] < 0.01


# -- files and copies ------------------------------------------------------------------------


def elu_net():
    return bp.Sequential(
        bp.Dense(3, 5, activation=A.Elu(0.3)),
        bp.Dense(5, 4, activation="gelu"),
        bp.Dense(4, 2, activation="selu"),
        seed=1,
    )


def test_save_load_and_pickle_keep_elu_alpha(tmp_path):
    net = elu_net()
    X = np.random.default_rng(0).normal(size=(9, 3))
    net.fit(X, X[:, :2], epochs=2)
    for back in (bp.load(net.save(tmp_path / "m")), pickle.loads(pickle.dumps(net)), net.copy()):
        assert [layer.activation for layer in back.layers] == [A.Elu(0.3), A.gelu, A.selu]
        assert back.layers[0].activation.alpha == 0.3
        np.testing.assert_array_equal(back.predict(X), net.predict(X))
    layers = _format.parse_meta(str(bp.io.state_of(net)["meta"])).activations
    assert layers == [A.Elu(0.3), A.gelu, A.selu]


def meta_of(net):
    return json.loads(str(bp.io.state_of(net)["meta"]))


def test_files_write_alpha_for_elu_layers_only():
    meta = meta_of(elu_net())
    assert meta["layers"][0] == {
        "n_in": 3,
        "n_out": 5,
        "activation": "elu",
        "negative_slope": 0.0,
        "alpha": 0.3,
    }
    assert (
        set(meta["layers"][1])
        == set(meta["layers"][2])
        == {"n_in", "n_out", "activation", "negative_slope"}
    )


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda m: m["layers"][0].update(alpha=-1.0), r"meta.layers\[0\].alpha"),
        (lambda m: m["layers"][0].update(alpha=0), r"meta.layers\[0\].alpha"),
        (lambda m: m["layers"][0].update(alpha="1"), r"meta.layers\[0\].alpha"),
        (lambda m: m["layers"][0].update(alpha=float("nan")), r"meta.layers\[0\].alpha"),
        (lambda m: m["layers"][0].pop("alpha"), r"meta.layers\[0\].alpha"),
        (lambda m: m["layers"][1].update(alpha=1.0), r"meta.layers\[1\]: unexpected field"),
        (lambda m: m["layers"][0].update(negative_slope=0.1), r"meta.layers\[0\].negative_slope"),
    ],
)
def test_files_with_a_bad_alpha_are_refused_naming_it(change, where):
    state = bp.io.state_of(elu_net())
    meta = json.loads(str(state["meta"]))
    change(meta)
    state["meta"] = np.array(json.dumps(meta))
    with pytest.raises(ValueError, match=where):
        bp.io.from_state(state)


# -- the other front ends --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gelu", "swish", "elu"])
def test_the_command_line_takes_them(name, tmp_path):
    from backprop.cli import main

    path = tmp_path / "m.npz"
    code = main(
        [
            "train",
            "--data",
            "xor",
            "--activation",
            name,
            "--epochs",
            "300",
            "--quiet",
            "--save",
            str(path),
        ]
    )
    assert code == 0
    assert bp.load(path).layers[0].activation == A.get(name)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "swish", "softplus", "elu", "selu"])
def test_the_scikit_learn_estimators_take_them(name):
    pytest.importorskip("sklearn")
    from backprop.sklearn import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X @ [1.0, -2.0, 0.5]
    model = MLPRegressor(hidden_layer_sizes=(8,), activation=name, max_iter=300, random_state=0)
    model.fit(X, y)
    assert model.net_.layers[0].activation == A.get(name)
    assert model.score(X, y) > 0.8


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu", "softplus", "elu", "selu"])
def test_gradients_with_dropout_after_the_smooth_units(act):
    # Dropout scales a copy of the layer's output: the derivative of the
    # units that keep z, and of those that take it from a, still see the
    # layer's own values (the mask held fixed by gradcheck).
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 4)), rng.integers(0, 3, 16)
    net = bp.Sequential(
        bp.Dense(4, 6, act),
        bp.Dropout(0.4),
        bp.Dense(6, 5, act),
        bp.Dropout(0.2),
        bp.Dense(5, 3, "softmax"),
        loss="cross_entropy",
        dtype="float64",
        seed=1,
    )
    assert bp.gradcheck(net, X, y).max_rel_error < 1e-5
