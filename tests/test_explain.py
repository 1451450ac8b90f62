"""net.explain: the chain rule for one sample, checked."""

import numpy as np
import pytest

import backprop as bp


@pytest.mark.parametrize(
    "make,y",
    [
        (
            lambda: bp.Sequential(
                bp.Dense(2, 3, activation="sigmoid"),
                bp.Dense(3, 1, activation="sigmoid"),
                loss="mse",
                seed=0,
            ),
            [1.0],
        ),
        (
            lambda: bp.Sequential(
                bp.Dense(3, 5, activation="relu"),
                bp.Dense(5, 4, activation="tanh"),
                bp.Dense(4, 3, activation="softmax"),
                loss="cross_entropy",
                seed=2,
            ),
            1,
        ),
        (
            lambda: bp.Sequential(
                bp.Dense(3, 4, activation="leaky_relu"),
                bp.Dense(4, 2, activation="sigmoid"),
                loss="binary_cross_entropy",
                seed=3,
            ),
            [1.0, 0.0],
        ),
        (
            lambda: bp.Sequential(bp.Dense(3, 3, activation="softmax"), loss="mse", seed=4),
            [0.2, 0.3, 0.5],
        ),
    ],
)
def test_trace_matches_finite_differences_and_the_core(make, y):
    net = make()
    x = np.array([0.3, -0.7, 1.1])[: net.n_inputs]
    e = net.explain(x, y)
    assert [t.index for t in e.layers] == list(range(len(net.layers) - 1, -1, -1))
    assert e.max_rel_error_numerical < 1e-6 and e.max_rel_error_core < 1e-9
    assert e.loss == pytest.approx(net.evaluate(x, y)["loss"], rel=1e-9)
    for t in e.layers:
        np.testing.assert_allclose(t.dW, np.outer(t.a_prev, t.delta))  # ∂C/∂W = a ⊗ δ
        np.testing.assert_allclose(t.a, bp.activations.get(t.activation)(t.z[None])[0])


def test_hidden_delta_is_the_chain_rule():
    """δ of a hidden layer = (W of the next layer · δ of the next layer) ⊙ f′(z)."""
    net = bp.Sequential(
        bp.Dense(2, 3, activation="tanh"),
        bp.Dense(3, 2, activation="sigmoid"),
        loss="binary_cross_entropy",
        seed=5,
    )
    e = net.explain([0.5, -0.2], [1.0, 0.0])
    out, hidden = e.layers
    np.testing.assert_allclose(out.delta, out.a - np.array([1.0, 0.0]))
    np.testing.assert_allclose(hidden.delta, (net.layers[1].W @ out.delta) * (1 - hidden.a**2))
    text = str(e)
    assert text.index("layer 1 (sigmoid)") < text.index("layer 0 (tanh)")
    assert "δ = ∂C/∂z" in text and "against finite differences" in text


def test_explain_refuses_step_units():
    net = bp.Sequential(bp.Dense(2, 1, activation="step"), loss="mse")
    with pytest.raises(ValueError, match="step"):
        net.explain([1.0, 0.0], [1.0])
