"""The engine's fast path for ready-made targets (targets_ready in
csrc/ready.pxi) is the fast twin of the checked path (losses.targets, through
Description.targets): for any y, when the fast path takes it, the checked
path takes it too and the step is the same; when the checked path refuses
it, the fast path refuses it (and the checked path then explains).

A long campaign: pytest tests/test_fast_paths.py --hypothesis-profile=campaign
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import backprop as bp  # noqa: E402

ROWS = 5
HEADS = {  # loss: (output activation, outputs)
    "mse": ("identity", 2),
    "binary_cross_entropy": ("sigmoid", 1),
    "binary_cross_entropy ": ("sigmoid", 3),
    "cross_entropy": ("softmax", 3),
    "poisson": ("exp", 3),
    "poisson ": ("exp", 1),
    "mae": ("identity", 2),
    "huber": ("identity", 1),
    "huber ": ("silu", 3),
}


def net_of(loss, dtype):
    activation, k = HEADS[loss]
    return bp.Sequential(
        bp.Dense(3, 4, activation="tanh"),
        bp.Dense(4, k, activation=activation),
        loss=loss.strip(),
        dtype=dtype,
        seed=0,
    )


TARGETS = st.one_of(
    hnp.arrays(
        np.int64,
        st.sampled_from([(ROWS,), (ROWS, 1), (ROWS, 3), (ROWS - 1,)]),
        elements=st.integers(-2, 4),
    ),
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.sampled_from([(ROWS,), (ROWS, 1), (ROWS, 2), (ROWS, 3), (ROWS + 1, 3)]),
        elements=st.one_of(
            st.floats(-0.5, 1.5, width=32),
            st.sampled_from([0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, 1 / 3, 7.0, -1e-30]),
        ),
    ),
)


@given(
    loss=st.sampled_from(sorted(HEADS)), dtype=st.sampled_from(["float32", "float64"]), y=TARGETS
)
def test_the_fast_path_takes_only_what_the_checked_path_takes_and_agrees(loss, dtype, y):
    fast, checked = net_of(loss, dtype), net_of(loss, dtype)
    X = np.random.default_rng(0).normal(size=(ROWS, 3)).astype(dtype)
    value = fast._engine.step_ready(X, y, 0.0, False)  # None: not taken
    try:
        expected = checked.loss_and_grad(X.tolist(), y.tolist())
    except (ValueError, TypeError):
        assert value is None, "the fast path took targets the checked path refuses"
        return
    if value is not None:
        assert value == expected
        np.testing.assert_array_equal(fast.grads, checked.grads)
