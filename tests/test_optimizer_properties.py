"""Property-based tests: settings assigned to optimizers, schedules and
callbacks after construction.  Whatever the value, the assignment either
raises ValueError/TypeError naming the setting and keeps the old value, or
training runs as if the constructor had been given it: a fit that ends with
finite weights, loss and optimizer state, or one that stops with the
divergence warning and the weights from before the diverging epoch — never
silent garbage, never another exception.

The suite runs a short campaign; a long one (the "campaign" profile) runs with:

    pytest tests/test_optimizer_properties.py --hypothesis-profile=campaign
"""

import io
import math
import numbers
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import backprop as bp  # noqa: E402
from backprop import callbacks as cb  # noqa: E402
from backprop.optimizers import Setting  # noqa: E402

SCALARS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),  # negative, huge, subnormal …
    st.floats(min_value=0, max_value=1),  # mostly settings that train
    st.sampled_from(
        [0.0, -0.0, 1.0, 0.5, 0.9, 0.99999999, 1 - 2**-53, 1e-8, 1e-50, 5e-324, 1e39, 1e308]
    ),  # (float32: 1 − 1e-8 → 1, 1e-50 → 0)
    st.integers(-(2**62), 2**62),  # (beyond float's range: test_an_integer_beyond_float…)
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from(
        [
            np.float32(0.5),
            np.float64(1e-3),
            np.float16(0.1),
            np.int64(3),
            np.bool_(True),
            np.float32("nan"),
            np.complex64(1),
            np.array(0.5),
            np.array([0.9, 0.999]),
            np.array([[0.9, 0.999]]),
        ]
    ),
)
VALUES = st.one_of(
    SCALARS,
    st.tuples(SCALARS, SCALARS),
    st.lists(SCALARS, max_size=3),
    st.lists(SCALARS, max_size=3).map(tuple),
    st.tuples(st.floats(0, 1), st.floats(0, 1)),
)  # (betas that may train)
# what only callbacks take: the names of fit's figures, files
CALLBACK_VALUES = st.one_of(
    VALUES, st.sampled_from(["loss", "val_loss", "accuracy", "lr", ""]), st.builds(io.StringIO)
)
DTYPES = st.sampled_from(["float32", "float64"])
OPTIMIZERS = st.sampled_from(
    [bp.SGD, lambda: bp.SGD(momentum=0.9, nesterov=True), bp.Adam, bp.AdamW, bp.RMSProp, bp.AdaGrad]
)

_rng = np.random.default_rng(0)
X = _rng.normal(size=(16, 3))
y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * _rng.normal(size=16)


def tiny(dtype):
    return bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 1), dtype=dtype, seed=0)


def settings_of(obj):
    """The names of obj's checked settings, from its class."""
    return sorted(
        {
            name
            for klass in type(obj).__mro__
            for name, attr in vars(klass).items()
            if isinstance(attr, Setting)
        }
    )


# What each setting accepts, as the documentation says it, written out
# independently of the checks in the library.
def real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def positive(v):
    return real(v) and 0 < v < math.inf


def non_negative(v):
    return real(v) and 0 <= v < math.inf


def fraction(v):
    return real(v) and 0 <= v < 1


def whole(minimum):
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum


def boolean(v):
    return isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1))


DOMAINS = {
    "lr": positive,
    "eps": positive,
    "gamma": positive,
    "l2": non_negative,
    "weight_decay": non_negative,
    "power_t": non_negative,
    "min_lr": non_negative,
    "min_delta": non_negative,
    "clip_norm": lambda v: v is None or positive(v),
    "momentum": fraction,
    "rho": fraction,
    "betas": lambda v: (
        (isinstance(v, (tuple, list)) or isinstance(v, np.ndarray) and v.ndim == 1)
        and len(v) == 2
        and fraction(v[0])
        and fraction(v[1])
    ),
    "factor": lambda v: positive(v) and v < 1,
    "step_size": whole(1),
    "epochs": whole(1),
    "patience": whole(0),
    "every": lambda v: v is None or whole(1)(v),
    "nesterov": boolean,
    "decay_biases": boolean,
    "restore_best_weights": boolean,
    "monitor": lambda v: isinstance(v, str),
    "file": lambda v: v is None or hasattr(v, "write"),
}


def valid(obj, name, value) -> bool:
    if not DOMAINS[name](value):
        return False
    if name == "momentum":  # nesterov=True needs a momentum
        return value > 0 or not getattr(obj, "nesterov", False)
    if name == "nesterov":
        return not value or obj.momentum > 0
    return True


def assign(obj, name, value) -> bool:
    """obj.name = value: True if taken (as given), False if refused as it
    must be (naming the setting, the old value kept)."""
    before = dict(vars(obj))
    try:
        setattr(obj, name, value)
    except (ValueError, TypeError) as exc:
        assert name in str(exc), str(exc)
        assert vars(obj) == before
        assert not valid(obj, name, value), f"{name}={value!r} was refused: {exc}"
        hypothesis.event(f"{name}: refused")
        return False
    assert valid(obj, name, value), f"{name}={value!r} was taken"
    hypothesis.event(f"{name}: taken")
    kept = getattr(obj, name)
    if kept is None or isinstance(kept, io.StringIO) or isinstance(kept, str):
        assert kept is value
    else:
        assert np.array_equal(np.asarray(kept, float), np.asarray(value, float))
    return True


class Record(cb.Callback):
    """The weights at each epoch's start and end (first among the callbacks,
    it runs before the others in each hook)."""

    def on_train_begin(self, net, logs):
        self.begin, self.last = [], net.params.copy()

    def on_epoch_begin(self, net, epoch, logs):
        self.begin.append(net.params.copy())
        self.last = self.begin[-1]

    def on_epoch_end(self, net, epoch, logs):
        self.last = net.params.copy()


def fit_and_check(net, callbacks=(), epochs=2, record=None, **kw):
    """fit, and what must hold after it: finite weights, loss and state, or
    the divergence warning and the weights from before that epoch."""
    record = record or Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = net.fit(
            X, y, epochs=epochs, batch_size=4, shuffle=False, callbacks=[record, *callbacks], **kw
        )
    stopped = [str(w.message) for w in caught if "training stopped" in str(w.message)]
    assert len(stopped) <= 1 and all(
        issubclass(w.category, RuntimeWarning)
        for w in caught
        if "training stopped" in str(w.message)
    )
    assert np.isfinite(net.params).all()
    assert all(np.isfinite(s).all() for s in net._opt_state[: net.optimizer.n_state])
    if stopped:
        epoch = len(history.epoch)
        assert stopped[0].startswith(f"training stopped at epoch {epoch}: ")
        np.testing.assert_array_equal(net.params, record.begin[epoch - 1])
        hypothesis.event(
            "fit: stopped, diverging"
            if "weights overflowed" in stopped[0]
            else "fit: stopped, the optimizer's state overflowed"
        )
    else:
        assert all(math.isfinite(v) for v in history.history["loss"])
        hypothesis.event("fit: trained")
    return history


@given(make=OPTIMIZERS, dtype=DTYPES, attached=st.booleans(), data=st.data())
def test_optimizer_settings_assigned_after_construction(make, dtype, attached, data):
    opt, net = make(), tiny(dtype)
    cls = type(opt)
    if attached:  # (the changes then reach the network at once)
        net.optimizer = opt
    for _ in range(data.draw(st.integers(1, 3), label="assignments")):
        name = data.draw(st.sampled_from(settings_of(opt)), label="setting")
        assign(opt, name, data.draw(VALUES, label="value"))
    net.optimizer = opt
    same = tiny(dtype)  # the same settings, given to the constructor
    same.optimizer = cls(**vars(opt))
    history, again = fit_and_check(net), fit_and_check(same)
    np.testing.assert_array_equal(history.history["loss"], again.history["loss"])
    np.testing.assert_array_equal(net.params, same.params)
    np.testing.assert_array_equal(net.train_step(X, y), same.train_step(X, y))
    np.testing.assert_array_equal(net.params, same.params)


def step_decay(s, epoch, lr):
    return lr * s.gamma ** ((epoch - 1) // s.step_size)


def exponential_decay(s, epoch, lr):
    return lr * s.gamma ** (epoch - 1)


def inverse_scaling(s, epoch, lr):
    return lr / epoch**s.power_t


def cosine_decay(s, epoch, lr):
    t = min(epoch - 1, s.epochs) / s.epochs
    return s.min_lr + (lr - s.min_lr) * (1 + math.cos(math.pi * t)) / 2


# Each callback, and for the schedules their rate written out again.
CALLBACKS = st.sampled_from(
    [
        (lambda: cb.StepDecay(2), step_decay),
        (lambda: cb.ExponentialDecay(0.5), exponential_decay),
        (lambda: cb.InverseScaling(), inverse_scaling),
        (lambda: cb.CosineDecay(3), cosine_decay),
        (lambda: cb.ReduceLROnPlateau(monitor="loss", patience=0), None),
        (lambda: cb.EarlyStopping(patience=1), None),
        (lambda: cb.ProgressBar(file=io.StringIO()), None),
    ]
)


@given(made=CALLBACKS, optimizer=st.sampled_from([bp.SGD, bp.Adam]), dtype=DTYPES, data=st.data())
def test_callback_settings_assigned_after_construction(made, optimizer, dtype, data):
    make, formula = made
    callback, net, optimizer = make(), tiny(dtype), optimizer(0.05)
    for _ in range(data.draw(st.integers(1, 3), label="assignments")):
        name = data.draw(st.sampled_from(settings_of(callback)), label="setting")
        assign(callback, name, data.draw(CALLBACK_VALUES, label="value"))
    lr, record = optimizer.lr, Record()
    try:
        history = fit_and_check(
            net, [callback], epochs=4, record=record, optimizer=optimizer, validation_data=(X, y)
        )
    except (ValueError, TypeError) as exc:  # a rate refused, a figure not in the logs
        message = str(exc)
        assert f"the learning rate {type(callback).__name__}" in message or "monitor" in message, (
            message
        )
        hypothesis.event(
            "fit: refused the schedule's rate"
            if "learning rate" in message
            else "fit: refused the monitor"
        )
        assert np.isfinite(net.params).all()
        np.testing.assert_array_equal(net.params, record.last)  # (no step was taken after)
        if formula is not None:
            assert net.optimizer.lr == lr  # given back
        return
    if formula is not None:
        expect = [formula(callback, epoch, lr) for epoch in history.epoch]
        np.testing.assert_allclose(history.history["lr"], expect, rtol=1e-12)
        assert net.optimizer.lr == lr


@pytest.mark.parametrize("name", ["lr", "eps", "l2"])
def test_an_integer_beyond_float_range_is_refused_naming_the_setting(name):
    opt = bp.Adam()
    with pytest.raises(ValueError, match=name):
        setattr(opt, name, 10**400)
