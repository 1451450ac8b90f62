"""Property-based tests: whatever arrays a user passes, each public call
either returns the right result or raises ValueError/TypeError naming the
argument — never a crash, a hang, or garbage.

The suite runs a short campaign; a long one (the "campaign" profile,
100,000+ cases in all) runs with:

    pytest tests/test_properties.py --hypothesis-profile=campaign
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import backprop as bp  # noqa: E402

# The profiles ("default": 150 cases a property, "campaign": 25,000) are
# registered in conftest.py, before pytest reads --hypothesis-profile.

DTYPES = st.sampled_from(
    [
        np.bool_,
        np.int8,
        np.int32,
        np.int64,
        np.uint16,
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
        object,
        "U3",
    ]
)


@st.composite
def arrays(draw, max_dims=3, max_side=6):
    """Arrays of any dtype and shape (empty, one row, wide …), with NaN and
    ±inf among the floats, C- or Fortran-ordered, reversed or strided,
    sometimes read-only."""
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    if dtype is object:
        arr = np.empty(shape, dtype=object)
        arr[...] = draw(st.sampled_from([None, 1.5, "a"]))
    elif dtype == "U3":
        arr = np.full(shape, "ab", dtype="U3")
    else:
        elements = None
        if np.dtype(dtype).kind == "f":
            elements = st.floats(
                allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8
            )
        arr = draw(hnp.arrays(dtype, shape, elements=elements))
    view = draw(st.sampled_from(["c", "f", "reversed", "strided", "readonly"]))
    if view == "f":
        arr = np.asfortranarray(arr)
    elif view == "reversed" and arr.ndim:
        arr = arr[::-1]
    elif view == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    elif view == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def finite_real(a):
    return (
        a.dtype.kind in "biuf"
        and a.size > 0
        and np.isfinite(a.astype(np.float64, copy=False)).all()
    )


def expect_named_error(exc, *names):
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)
    assert any(name in str(exc) for name in names), str(exc)


@given(x=arrays())
def test_dense_forward(x):
    layer = bp.Dense(3, 2, activation="tanh", seed=0)
    try:
        out = layer.forward(x)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "x")
        if "overflow" in str(exc):  # finite x, so large that a partial sum of x·W is not
            x64 = x.astype(np.float64)
            bound = np.abs(x64).max() * np.abs(layer.W).sum(axis=0).max()
            assert finite_real(x) and bound > 0.99 * np.finfo(np.float64).max
        else:
            assert not (finite_real(x) and x.ndim in (1, 2) and x.shape[-1] == 3)
        return
    assert finite_real(x) and x.shape[-1] == 3 and np.isfinite(out).all()
    expect = np.tanh(x.astype(np.float64) @ layer.W + layer.b)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


@given(X=arrays(), y=arrays(max_dims=2))
def test_network_fit_predict_evaluate(X, y):
    net = bp.Sequential(
        bp.Dense(3, 4, activation="relu"),
        bp.Dense(4, 3, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    before = net.params.copy()
    try:
        net.fit(X, y, epochs=1, batch_size=2)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "X", "y")
        np.testing.assert_array_equal(net.params, before)  # nothing half-done
    else:
        assert np.isfinite(net.params).all()
        try:
            assert net.evaluate(X, y)["accuracy"] >= 0
        except ValueError as exc:  # huge inputs can overflow float32
            expect_named_error(exc, "X")
    try:
        p = net.predict_proba(X)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "X")
    else:
        assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1, atol=1e-5)


@given(
    batches=st.lists(st.tuples(arrays(max_dims=2), arrays(max_dims=2)), max_size=3),
    chunk_size=st.one_of(st.none(), st.integers(-2, 5)),
)
def test_fit_on_batches_or_chunks(batches, chunk_size):
    net = bp.Sequential(
        bp.Dense(3, 4, activation="relu"),
        bp.Dense(4, 3, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    hypothesis.assume(batches or chunk_size is None)
    before = net.params.copy()
    try:
        if chunk_size is None:
            net.fit(batches, epochs=2, batch_size=2)
        else:
            net.fit(*batches[0], epochs=2, batch_size=2, chunk_size=chunk_size)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "X", "y", "chunk_size")
        np.testing.assert_array_equal(net.params, before)  # nothing half-done
    else:
        assert np.isfinite(net.params).all()


@given(
    z=arrays(),
    name=st.sampled_from(["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "step"]),
)
def test_activations(z, name):
    act = bp.activations.get(name)
    try:
        a = act(z)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "z")
        return
    assert finite_real(z) and np.isfinite(a).all()
    assert np.shape(a) == z.shape


@given(
    p=arrays(max_dims=2),
    y=arrays(max_dims=2),
    name=st.sampled_from(["mse", "binary_cross_entropy", "cross_entropy"]),
)
def test_losses(p, y, name):
    loss = bp.losses.get(name)
    try:
        value = loss(p, y)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "y_pred", "y_true")
        return
    huge = max(np.abs(p.astype(np.float64)).max(), np.abs(y.astype(np.float64)).max()) > 1e150
    assert value >= 0 and (np.isfinite(value) or huge)  # (1e160)² is inf in float64


@given(data=st.binary(max_size=2000))
def test_loading_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("files") / "model.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a usable backprop model"):
        bp.load(path)


@given(X=arrays(max_dims=2))
def test_one_row_predict_paths_agree(X):
    net = bp.Sequential(bp.Dense(3, 1, activation="sigmoid"), loss="binary_cross_entropy", seed=1)
    try:
        batch = net.predict(X)
    except (ValueError, TypeError) as exc:
        expect_named_error(exc, "X")
        return
    if X.ndim == 1:
        assert batch in (0, 1)
    else:
        for row, label in zip(X, batch):
            assert net.predict(np.ascontiguousarray(row, dtype=np.float64)) == label
