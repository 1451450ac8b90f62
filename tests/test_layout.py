"""The flat parameter layout: one object, used by the network's views, the
engine, gradcheck's names and model files."""

import copy
import pickle

import numpy as np
import pytest

import backprop as bp
from backprop._codes import ActivationCode, LossCode
from backprop._engine import Engine
from backprop.layout import Layout


def test_offsets_follow_w_then_b_layer_after_layer():
    layout = Layout([4, 3, 2])
    # W0 (4×3) at 0, b0 (3) at 12, W1 (3×2) at 15, b1 (2) at 21: 23 in all.
    assert layout.w_offsets == (0, 15)
    assert layout.b_offsets == (12, 21)
    assert layout.n_params == 23
    assert [(e.layer, e.name, e.shape, e.offset) for e in layout.entries] == [
        (0, "W", (4, 3), 0),
        (0, "b", (3,), 12),
        (1, "W", (3, 2), 15),
        (1, "b", (2,), 21),
    ]


def test_views_are_row_major_windows_of_the_flat_buffer():
    layout = Layout([2, 3, 1])
    flat = np.arange(layout.n_params, dtype=np.float64)
    (W0, b0), (W1, b1) = layout.views(flat)
    np.testing.assert_array_equal(W0, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(b0, [6, 7, 8])
    np.testing.assert_array_equal(W1, [[9], [10], [11]])
    np.testing.assert_array_equal(b1, [12])
    W0[1, 2] = -1
    assert flat[5] == -1  # a view, not a copy


def test_names_count_through_every_entry():
    layout = Layout([2, 3, 1])
    names = [layout.name(i) for i in range(layout.n_params)]
    assert names[:7] == [
        "layers[0].W[0, 0]",
        "layers[0].W[0, 1]",
        "layers[0].W[0, 2]",
        "layers[0].W[1, 0]",
        "layers[0].W[1, 1]",
        "layers[0].W[1, 2]",
        "layers[0].b[0]",
    ]
    assert names[9:] == [
        "layers[1].W[0, 0]",
        "layers[1].W[1, 0]",
        "layers[1].W[2, 0]",
        "layers[1].b[0]",
    ]
    with pytest.raises(IndexError, match="i must lie in 0 … 12"):
        layout.name(13)


def test_a_network_lays_out_its_layers_by_its_layout():
    net = bp.Sequential(
        bp.Dense(5, 4, "tanh"), bp.Dense(4, 3, "softmax"), loss="cross_entropy", seed=0
    )
    assert net.layout == Layout([5, 4, 3])
    for entry in net.layout.entries:
        layer = net.layers[entry.layer]
        array = layer.W if entry.name == "W" else layer.b
        assert np.shares_memory(array, net.params)
        np.testing.assert_array_equal(array.ravel(), net.params[entry.slice])
        grad = layer.dW if entry.name == "W" else layer.db
        assert np.shares_memory(grad, net.grads)


def test_gradcheck_names_entries_by_the_layout():
    net = bp.Sequential(bp.Dense(2, 3, "tanh"), bp.Dense(3, 1), seed=1)
    result = bp.gradcheck(net, np.ones((2, 2)), np.zeros(2))
    assert result.where in {net.layout.name(i) for i in range(net.layout.n_params)}


@pytest.mark.parametrize(
    "sizes, error, match",
    [
        ([3], ValueError, "at least two sizes"),
        ([3, 0], ValueError, "each at least 1"),
        ([3, 2.5], TypeError, "whole numbers"),
    ],
)
def test_bad_sizes_are_refused(sizes, error, match):
    with pytest.raises(error, match=match):
        Layout(sizes)


def test_a_layout_cannot_be_changed():
    layout = Layout([2, 2])
    with pytest.raises(AttributeError, match="cannot be changed"):
        layout.sizes = (3, 3)
    with pytest.raises(AttributeError, match="cannot be changed"):
        del layout.sizes
    assert layout.sizes == (2, 2) and layout.n_params == 6


def test_a_layout_pickles_and_copies_as_an_equal_layout():
    layout = bp.Sequential(bp.Dense(3, 4), bp.Dense(4, 2)).layout
    for twin in (pickle.loads(pickle.dumps(layout)), copy.copy(layout), copy.deepcopy(layout)):
        assert type(twin) is Layout and twin == layout
        assert twin.entries == layout.entries and twin.n_params == layout.n_params


def test_the_engine_takes_a_layout_and_buffers_of_its_size():
    params = np.zeros(Layout([3, 2]).n_params)
    common = dict(
        acts=[ActivationCode.IDENTITY],
        slopes=[0.0],
        loss=LossCode.MSE,
        params=params,
        grads=np.zeros_like(params),
    )
    with pytest.raises(TypeError, match="layout must be a backprop.layout.Layout"):
        Engine([3, 2], **common)
    with pytest.raises(ValueError, match=r"params and grads must have shape \(12,\)"):
        Engine(Layout([3, 3]), **common)
    with pytest.raises(ValueError, match="one entry for each layer"):
        Engine(Layout([3, 2, 2]), **common)


def test_the_engine_refuses_a_layout_whose_entries_leave_the_buffers():
    # The core writes where the layout says: a subclass that places b past
    # the end of params is refused, not run (it wrote outside the buffer).
    class Lying(Layout):
        __slots__ = ()

        @property
        def b_offsets(self):
            return (10**8,)

    layout = Lying([3, 2])
    params = np.zeros(layout.n_params)
    with pytest.raises(ValueError, match="must lie within its n_params"):
        Engine(
            layout, [ActivationCode.IDENTITY], [0.0], LossCode.MSE, params, np.zeros_like(params)
        )


def test_the_engine_refuses_a_layout_whose_biases_overlap():
    # The optimizer walks the biases in order (decay_biases=False leaves them
    # undecayed): a subclass whose biases overlap or go backwards is refused.
    class Overlapping(Layout):
        __slots__ = ()

        @property
        def b_offsets(self):
            return (0, 1)

    layout = Overlapping([3, 2, 2])
    params = np.zeros(layout.n_params)
    with pytest.raises(ValueError, match="biases must follow one another"):
        Engine(
            layout,
            [ActivationCode.IDENTITY] * 2,
            [0.0] * 2,
            LossCode.MSE,
            params,
            np.zeros_like(params),
        )
