"""Property-based tests of a network's state: whatever is assigned to a
network's or a layer's attributes after construction, and whatever a second
thread calls while the first trains, the network stays whole — one set of
weights that predict, the per-layer path and its file all agree on — or the
call raises an error naming what is wrong.

A long campaign: pytest tests/test_state_properties.py --hypothesis-profile=campaign
"""

import io
import threading

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import backprop as bp  # noqa: E402
import backprop.io  # noqa: E402  (state_of, from_state)

X = np.random.default_rng(0).normal(size=(24, 3))
Y = np.random.default_rng(1).integers(0, 2, 24)


def net_of(dtype):
    return bp.Sequential(
        bp.Dense(3, 5, activation="relu"),
        bp.Dense(5, 2, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )


def assert_whole(net):
    """predict, the per-layer path and a saved copy agree, and every layer's
    W and b are views of the flat buffer."""
    tol = 1e-5 if net.dtype == np.float32 else 1e-12
    p = net.predict_proba(X)
    np.testing.assert_allclose(net.forward(X), p, rtol=tol, atol=tol)
    buffer = io.BytesIO()
    np.savez(buffer, **bp.io.state_of(net))
    buffer.seek(0)
    np.testing.assert_array_equal(bp.io.from_state(dict(np.load(buffer))).predict_proba(X), p)
    off = 0
    for layer in net.layers:
        assert np.shares_memory(layer.W, net.params) and np.shares_memory(layer.b, net.params)
        np.testing.assert_array_equal(layer.W.ravel(), net.params[off : off + layer.W.size])
        off += layer.W.size + layer.b.size
    assert off == net.params.size


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=2)), max_size=4),
    st.sampled_from(
        [
            "float32",
            "float64",
            "relu",
            "mse",
            "adam",
            bp.Dense(3, 5),
            np.zeros(27),
            np.ones(27, np.float32),
            np.zeros((3, 5)),
            np.zeros(5),
            np.full(27, np.nan),
            np.zeros(26),
            bp.SGD(0.1),
            bp.Adam(),
            np.arange(27.0)[::-1],
            (bp.Dense(3, 5), bp.Dense(5, 2)),
        ]
    ),
)

NET_ATTRIBUTES = [
    "layers",
    "loss",
    "dtype",
    "seed",
    "params",
    "grads",
    "optimizer",
    "n_threads",
    "classes",
    "stop_training",
]
LAYER_ATTRIBUTES = ["n_in", "n_out", "activation", "init", "dtype", "W", "b", "dW", "db", "seed"]


@given(
    dtype=st.sampled_from(["float32", "float64"]),
    where=st.sampled_from(["net"] + [f"layers[{i}]" for i in range(2)]),
    data=st.data(),
    value=VALUES,
)
def test_assignments_after_construction_keep_the_network_whole(dtype, where, data, value):
    net = net_of(dtype)
    target = net if where == "net" else net.layers[int(where[-2])]
    name = data.draw(st.sampled_from(NET_ATTRIBUTES if where == "net" else LAYER_ATTRIBUTES))
    before = net.params.copy()
    try:
        setattr(target, name, value)
    except AttributeError as exc:  # fixed at construction
        assert name in str(exc)
        np.testing.assert_array_equal(net.params, before)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        np.testing.assert_array_equal(net.params, before)
    assert_whole(net)
    # and it still trains, or says why not
    try:
        net.fit(X, Y, epochs=1, batch_size=8)
    except (ValueError, TypeError) as exc:
        assert str(exc)
    assert np.isfinite(net.params).all()
    assert_whole(net)


# Calls a second thread may make; each either runs or raises the RuntimeError
# of a network in use.
SECOND = {
    "predict": lambda net: net.predict(X),
    "predict one row": lambda net: net.predict(X[0]),
    "evaluate": lambda net: net.evaluate(X, Y),
    "forward": lambda net: net.forward(X),
    "train_step": lambda net: net.train_step(X[:4], Y[:4]),
    "loss_and_grad": lambda net: net.loss_and_grad(X[:4], Y[:4]),
    "step": lambda net: net.step(1e-3),
    "copy": lambda net: net.copy(),
    "state": lambda net: bp.io.state_of(net),
    "optimizer": lambda net: setattr(net, "optimizer", bp.Adam(1e-3)),
    "params": lambda net: setattr(net, "params", net.params.copy()),
    "W": lambda net: setattr(net.layers[0], "W", net.layers[0].W.copy()),
    "fit": lambda net: net.fit(X, Y, epochs=1, batch_size=4),
    "layer forward": lambda net: net.layers[1].forward(np.ones((2, 5))),
}


@given(
    dtype=st.sampled_from(["float32", "float64"]),
    calls=st.lists(st.sampled_from(sorted(SECOND)), min_size=1, max_size=12),
    epochs=st.integers(1, 6),
    batch=st.sampled_from([1, 4, 24]),
)
def test_calls_from_a_second_thread_run_alone_or_raise(dtype, calls, epochs, batch):
    net = net_of(dtype)
    outcomes = []

    def second():
        for name in calls:
            try:
                SECOND[name](net)
                outcomes.append("ran")
            except RuntimeError as exc:
                assert "in use by another thread" in str(exc), exc
                outcomes.append("refused")

    t = threading.Thread(target=second)
    t.start()
    try:
        net.fit(X, Y, epochs=epochs, batch_size=batch)
        fit_ran = True
    except RuntimeError as exc:  # the second thread held it first
        assert "in use by another thread" in str(exc), exc
        fit_ran = False
    t.join()
    assert len(outcomes) == len(calls)
    assert fit_ran or "ran" in outcomes
    assert not net.exclusive().held
    assert np.isfinite(net.params).all()
    assert_whole(net)
