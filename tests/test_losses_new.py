"""The robust regression losses: mae (L1) and huber(δ).

    mae    C = 1/n Σ_i w_i Σ_j |r_ij|                     ∂C/∂a = w sign(r)/n  (0 at r = 0)
    huber  C = 1/n Σ_i w_i Σ_j ℓ_δ(r_ij),  r = a − y,     ∂C/∂a = w clip(r, −δ, δ)/n
           ℓ_δ(r) = ½r² for |r| ≤ δ, else δ(|r| − ½δ)

Every expected value is one of these formulas written here with numpy in
float64, central finite differences in float64, or PyTorch's autograd (when
PyTorch is installed).
"""

import json
import pickle

import numpy as np
import pytest

import backprop as bp
from backprop import _ops, losses
from backprop._codes import ActivationCode as Act
from backprop._codes import LossCode as Loss

RTOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def ref_loss(name, p, y, delta=1.0, w=None):
    """(mean loss, ∂C/∂p) of mae or huber, in float64."""
    r = np.asarray(p, np.float64) - np.asarray(y, np.float64)
    n = r.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    if name == "mae":
        each, grad = np.abs(r), np.sign(r)
    else:
        inside = np.abs(r) <= delta
        each = np.where(inside, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
        grad = np.where(inside, r, delta * np.sign(r))
    return (w @ each.sum(axis=1)) / n, w[:, None] * grad / n


def residuals(rng, dtype, delta=1.0):
    """Predictions and targets whose residuals lie on both sides of ±δ, at
    exactly 0 and ±δ, tiny, and as large as 1e6."""
    y = rng.normal(size=(8, 5))
    r = rng.uniform(-3 * delta, 3 * delta, (8, 5))
    r[0] = [0.0, delta, -delta, 1e-9, 1e6]
    r[1, :2] = [-1e6, -1e-9]
    p = y + r
    p[0, :3] = [y[0, 0], y[0, 1] + delta, y[0, 2] - delta]
    return np.ascontiguousarray(p, dtype), np.ascontiguousarray(y, dtype)


CASES = [("mae", 1.0), ("huber", 1.0), ("huber", 0.25), ("huber", 3.0)]
IDS = ["mae", "huber-1", "huber-0.25", "huber-3"]


def loss_of(name, delta):
    return losses.mae if name == "mae" else losses.Huber(delta)


@pytest.mark.parametrize("name, delta", CASES, ids=IDS)
def test_standalone_value_and_gradient_against_numpy(name, delta, dtype):
    p, y = residuals(np.random.default_rng(0), dtype, delta)
    # (the residual in the loss's arithmetic: p − y in float64 of the dtype's values)
    value, grad = ref_loss(name, p, y, delta)
    loss = loss_of(name, delta)
    assert loss(p, y) == pytest.approx(value, rel=RTOL[dtype])
    g = loss.gradient(p, y)
    assert g.dtype == dtype and g.shape == p.shape
    np.testing.assert_allclose(g, grad, rtol=RTOL[dtype], atol=0)
    if name == "mae":  # sign(0) = 0: no push where a = y
        assert g[0, 0] == 0 and g[0, 3] > 0


@pytest.mark.parametrize("name, delta", CASES, ids=IDS)
@pytest.mark.parametrize(
    "act", [Act.IDENTITY, Act.TANH, Act.GELU], ids=["identity", "tanh", "gelu"]
)
def test_fused_pass_with_sample_weights_against_numpy(name, delta, act, dtype):
    # loss_forward_backward: a = f(z), then ∂C/∂a ⊙ f′(z), with weights.
    rng = np.random.default_rng(1)
    z = np.ascontiguousarray(rng.normal(0, 2, (8, 5)), dtype)
    y = np.ascontiguousarray(rng.normal(size=(8, 5)), dtype)
    w = np.ascontiguousarray(rng.uniform(0, 3, 8), dtype)
    w[2] = 0.0
    z64 = z.astype(np.float64)
    a64, fprime = {
        Act.IDENTITY: (z64, np.ones_like(z64)),
        Act.TANH: (np.tanh(z64), 1 - np.tanh(z64) ** 2),
        Act.GELU: (bp.activations.gelu(z64), bp.activations.gelu.derivative(z64)),
    }[act]
    value, grad = ref_loss(name, a64, y, delta, w)
    a, d = z.copy(), np.full_like(z, np.nan)
    code = Loss.MAE if name == "mae" else Loss.HUBER
    got = _ops.loss_forward_backward(code, act, 0.0, a, d, y, w, huber_delta=delta)
    assert got == pytest.approx(value, rel=10 * RTOL[dtype])
    np.testing.assert_allclose(a, a64, rtol=RTOL[dtype] * 10, atol=1e-7)
    np.testing.assert_allclose(
        d, grad * fprime, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7
    )
    assert not d[2].any()  # weight 0: no gradient


@pytest.mark.parametrize("name, delta", CASES, ids=IDS)
def test_against_pytorch_autograd(name, delta, dtype):
    torch = pytest.importorskip("torch")
    p, y = residuals(np.random.default_rng(2), dtype, delta)
    tp = torch.tensor(p, requires_grad=True)
    ty = torch.tensor(y)
    F = torch.nn.functional
    # PyTorch averages over every element ('mean') or sums them ('sum');
    # here a sample's outputs are summed and the samples averaged.
    whole = (
        F.l1_loss(tp, ty, reduction="sum")
        if name == "mae"
        else F.huber_loss(tp, ty, reduction="sum", delta=delta)
    ) / p.shape[0]
    whole.backward()
    loss = loss_of(name, delta)
    assert loss(p, y) == pytest.approx(whole.item(), rel=10 * RTOL[dtype])
    np.testing.assert_allclose(loss.gradient(p, y), tp.grad.numpy(), rtol=RTOL[dtype], atol=0)


def test_huber_between_mse_and_mae():
    # within δ huber is mse's ½r²; far beyond it, δ·mae less ½δ² per residual
    r = np.array([[0.3, -0.2]])
    assert losses.huber(r, 0 * r) == pytest.approx(losses.mse(r, 0 * r), rel=1e-15)
    far = np.array([[50.0, -70.0]])
    assert losses.Huber(2.0)(far, 0 * far) == pytest.approx(2 * 120 - 2 * 2.0, rel=1e-15)
    assert losses.mae(far, 0 * far) == 120.0


# -- what the losses are -----------------------------------------------------------


def test_names_codes_and_the_parameter():
    assert losses.get("mae") is losses.mae and losses.get("L1") is losses.mae
    assert losses.get("mean_absolute_error") is losses.mae
    assert losses.get("huber") is losses.huber and losses.huber.delta == 1.0
    assert losses.mae.code is Loss.MAE and losses.huber.code is Loss.HUBER
    h = losses.Huber(0.5)
    assert h.delta == 0.5 and h.name == "huber" and repr(h) == "Huber(delta=0.5)"
    assert h == losses.Huber(0.5) and h != losses.huber and hash(h) == hash(losses.Huber(0.5))
    assert losses.get(h) is h
    for loss in (losses.mae, h):
        assert not loss.is_classification and loss.output is None
    with pytest.raises(AttributeError, match="fixed at construction"):
        h.delta = 2.0
    with pytest.raises(ValueError, match="mae has no label rule"):
        _ops.labels(Loss.MAE, np.ones((2, 2)))


def test_the_core_refuses_a_bad_delta_naming_it():
    p = np.ones((2, 2))
    for call in (
        lambda: _ops.loss_value(Loss.HUBER, p, p, 1e-12, 0.0),
        lambda: _ops.loss_gradient(Loss.HUBER, p.copy(), p, p, 1e-12, -1.0),
        lambda: _ops.loss_forward_backward(
            Loss.HUBER, 0, 0.0, p.copy(), p.copy(), p, huber_delta=np.nan
        ),
    ):
        with pytest.raises(ValueError, match="huber_delta"):
            call()


# -- in networks -----------------------------------------------------------------------


def network(loss, hidden="tanh", dtype="float64", seed=0):
    return bp.Sequential(
        bp.Dense(3, 6, activation=hidden),
        bp.Dense(6, 2, activation="identity"),
        loss=loss,
        dtype=dtype,
        seed=seed,
    )


def away_from_the_kinks(net, X, y, delta=None, margin=1e-2):
    """Targets moved so that no residual lies within margin of 0 (mae) or
    ±δ (huber), where the loss is not twice differentiable."""
    r = net.predict(X) - y
    bad = np.abs(r) < margin if delta is None else np.abs(np.abs(r) - delta) < margin
    return y + np.where(bad, 3 * margin, 0.0)


@pytest.mark.parametrize("loss", [losses.mae, losses.huber, losses.Huber(0.2)], ids=repr)
@pytest.mark.parametrize("hidden", ["tanh", "gelu", "elu"])
def test_gradcheck_through_networks(loss, hidden):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    net = network(loss, hidden)
    y = away_from_the_kinks(net, X, y, None if loss is losses.mae else loss.delta)
    assert bp.gradcheck(net, X, y).max_rel_error < 1e-7
    net.forward(X)
    by_layer = net.backward(y).copy()
    net.loss_and_grad(X, y)
    np.testing.assert_allclose(by_layer, net.grads, rtol=1e-12, atol=1e-15)
    assert net.explain(X[0], y[0]).max_rel_error_numerical < 1e-6


@pytest.mark.parametrize("loss", [losses.mae, losses.Huber(0.4)], ids=repr)
def test_evaluate_and_fit_take_the_loss(loss, dtype):
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(50, 3)).astype(dtype), rng.normal(size=(50, 2)).astype(dtype)
    net = network(loss, dtype=np.dtype(dtype).name)
    result = net.evaluate(X, y)
    assert set(result) == {"loss"}  # a regression loss: no accuracy
    expected = ref_loss(loss.name, net.predict(X), y, loss.delta)[0]
    assert result["loss"] == pytest.approx(expected, rel=10 * RTOL[dtype])
    w = rng.uniform(0.5, 2, 50)
    net.fit(X, y, epochs=20, batch_size=10, optimizer=bp.Adam(0.01), sample_weight=w)
    assert net.evaluate(X, y)["loss"] < result["loss"]
    value = net.loss_and_grad(X, y, sample_weight=w)
    expected = ref_loss(loss.name, net.predict(X), y, loss.delta, w)[0]
    assert value == pytest.approx(expected, rel=10 * RTOL[dtype])


def outliers(seed=0, n=400):
    """y = 2x + 1 + noise, a fifth of it shifted up by 20."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1))
    clean = 2 * x[:, 0] + 1
    y = clean + rng.normal(0, 0.1, n)
    y[rng.random(n) < 0.2] += 20
    return x, y, clean


def test_mae_and_huber_ignore_outliers_that_mse_follows():
    x, y, clean = outliers()
    error = {}
    for loss in ("mse", "mae", losses.Huber(0.3)):
        net = bp.Sequential(bp.Dense(1, 1), loss=loss, seed=0)
        net.fit(x, y, epochs=300, batch_size=32, optimizer=bp.Adam(0.05))
        error[repr(net.loss)] = float(np.median(np.abs(net.predict(x) - clean)))
    # mse's line is lifted by the outliers' mean shift (0.2 · 20 = 4);
    # mae's is the median line, huber's nearly so.
    assert error["losses.mse"] > 3
    assert error["losses.mae"] < 0.1
    assert error["Huber(delta=0.3)"] < 0.15


# -- files, copies, checkpoints ----------------------------------------------------------


def test_save_load_and_pickle_keep_delta(tmp_path):
    net = network(losses.Huber(0.3), hidden="gelu")
    X = np.random.default_rng(5).normal(size=(20, 3))
    net.fit(X, X[:, :2], epochs=2)
    for back in (bp.load(net.save(tmp_path / "m")), pickle.loads(pickle.dumps(net)), net.copy()):
        assert back.loss == losses.Huber(0.3) and back.loss.delta == 0.3
        assert back.evaluate(X, X[:, :2]) == net.evaluate(X, X[:, :2])
    meta = json.loads(str(bp.io.state_of(net)["meta"]))
    assert meta["loss"] == {"name": "huber", "delta": 0.3}
    assert json.loads(str(bp.io.state_of(network("mae"))["meta"]))["loss"] == "mae"


@pytest.mark.parametrize(
    "loss, where",
    [
        ({"name": "huber", "delta": -1.0}, "meta.loss.delta"),
        ({"name": "huber", "delta": 0}, "meta.loss.delta"),
        ({"name": "huber", "delta": "1"}, "meta.loss.delta"),
        ({"name": "huber", "delta": float("inf")}, "meta.loss.delta"),
        ({"name": "huber"}, "missing meta.loss.delta"),
        ({"name": "huber", "delta": 1.0, "kappa": 2}, "meta.loss: unexpected field"),
        ({"name": "mse", "delta": 1.0}, "meta.loss.name must be huber"),
        ("huber", "huber is written with its delta"),
        ("hubber", "meta.loss must be one of"),
    ],
)
def test_files_with_a_bad_loss_are_refused_naming_it(loss, where):
    state = bp.io.state_of(network(losses.Huber(0.3)))
    meta = json.loads(str(state["meta"]))
    meta["loss"] = loss
    state["meta"] = np.array(json.dumps(meta))
    with pytest.raises(ValueError, match=where):
        bp.io.from_state(state)


def test_a_checkpoint_of_another_delta_is_refused(tmp_path):
    X = np.random.default_rng(6).normal(size=(32, 3))
    path = tmp_path / "run.npz"
    network(losses.Huber(0.3)).fit(X, X[:, :2], epochs=2, checkpoint=path)
    other = network(losses.Huber(0.5))
    before = other.params.copy()
    with pytest.raises(ValueError, match="belongs to another network"):
        other.fit(X, X[:, :2], epochs=2, checkpoint=path)
    np.testing.assert_array_equal(other.params, before)
    same = network(losses.Huber(0.3))
    same.fit(X, X[:, :2], epochs=2, checkpoint=path)  # the complete run, taken up
    assert same.loss.delta == 0.3
