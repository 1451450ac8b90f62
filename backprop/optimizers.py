"""Optimizers: how the gradient turns into a step.

Each runs in the compiled core as one pass over the network's flat
parameter buffer (gradient clipping adds one pass, for the norm).  With
ĝ = (g + l2·w) · min(1, clip_norm / ‖g + l2·w‖), and w first decayed by
η·weight_decay where that is set:

    SGD       v ← μ·v + ĝ ;  w ← w − η·v   (nesterov: w ← w − η·(ĝ + μ·v); μ = 0: w ← w − η·ĝ)
    Adam      m ← β₁·m + (1 − β₁)·ĝ ;  v ← β₂·v + (1 − β₂)·ĝ²
              w ← w − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
    AdamW     Adam with decoupled weight decay (Loshchilov & Hutter): w ← w − η·wd·w
    RMSProp   s ← ρ·s + (1 − ρ)·ĝ² ;  w ← w − η·ĝ / (√s + ε)
    AdaGrad   s ← s + ĝ² ;  w ← w − η·ĝ / (√s + ε)

l2 and weight_decay reach every parameter, biases included; with
`decay_biases=False` they reach the weights only, as scikit-learn's MLP
penalty α/2·‖W‖² does (a bias then takes l2 = weight_decay = 0, in the
norm that clip_norm bounds too).

The settings are kept in double precision and the same for either dtype: in
float32, 1 − β and 1 − ρ are taken before rounding (a β of 0.99999999 rounds
to 1, 1 − β does not), and an ε below the smallest normal number (1.2e-38)
counts as that number.  Should the state overflow all the same (in float32,
the square of a gradient above 1.8e19 does), fit stops and says so.

>>> import backprop as bp
>>> opt = bp.Adam(lr=1e-3)
>>> # net.fit(X, y, optimizer=opt)      — a plain lr= means SGD
"""

from __future__ import annotations

import numbers
import weakref

import numpy as np

from ._codes import OptimizerKind
from ._validation import check_positive_float

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad", "get"]

KIND_SGD = OptimizerKind.SGD
KIND_ADAM = OptimizerKind.ADAM
KIND_RMSPROP = OptimizerKind.RMSPROP
KIND_ADAGRAD = OptimizerKind.ADAGRAD


class Setting:
    """An attribute checked on every assignment, by the constructor and
    after it alike: `check(owner, value, name)` returns the value to keep or
    raises ValueError/TypeError naming the setting, and the old value stays.
    The value lives in the instance's __dict__ under the setting's own name,
    so vars() of an optimizer is its constructor's arguments (what model
    files keep)."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value):
        obj.__dict__[self.name] = self.check(obj, value, self.name)


# What to tell when each optimizer's rule changes: for every optimizer, the
# bound methods given to attach (one per object, by id), held weakly, as the
# optimizers themselves are.
_LISTENERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach(opt: Optimizer, on_change) -> None:
    """Call on_change(opt), a bound method (a network's), whenever a setting
    of opt's rule changes, for as long as the method's object lives."""
    listeners = _LISTENERS.setdefault(opt, {})
    key = id(on_change.__self__)
    listeners[key] = weakref.WeakMethod(on_change, lambda _: listeners.pop(key, None))


def _hand_on(opt: Optimizer) -> None:
    for ref in list(_LISTENERS.get(opt, {}).values()):
        on_change = ref()
        if on_change is not None:
            on_change(opt)


class RuleSetting(Setting):
    """A setting of the update rule, which a network's engine holds (all but
    lr, which every update reads anew): a change reaches at once every
    network the optimizer belongs to, so that train_step and apply_gradients
    use it as fit does.  Should a network refuse it (e.g. while it trains in
    another thread), the old value is put back everywhere and the error
    raised."""

    def __set__(self, opt, value):
        old = opt.__dict__.get(self.name)
        super().__set__(opt, value)
        try:
            _hand_on(opt)
        except BaseException:
            opt.__dict__[self.name] = old
            _hand_on(opt)
            raise


def positive(owner, value, name: str) -> float:
    return check_positive_float(value, name)


def non_negative(owner, value, name: str) -> float:
    return check_positive_float(value, name, allow_zero=True)


def fraction(owner, value, name: str) -> float:
    """A number in [0, 1): a decay rate."""
    value = check_positive_float(value, name, allow_zero=True)
    if not value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def boolean(owner, value, name: str) -> bool:
    """True or False (numpy's too, and 1 or 0)."""
    if not isinstance(value, (bool, np.bool_)) and not (
        isinstance(value, numbers.Integral) and value in (0, 1)
    ):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _clip_norm(opt, value, name):
    return None if value is None else check_positive_float(value, name)


def _momentum(opt, value, name):
    value = fraction(opt, value, name)
    if value == 0 and opt.__dict__.get("nesterov"):
        raise ValueError(f"{name}: nesterov=True needs a momentum > 0")
    return value


def _nesterov(opt, value, name):
    if boolean(opt, value, name) and opt.momentum == 0:
        raise ValueError(f"{name}=True needs a momentum > 0")
    return bool(value)


def _betas(opt, value, name):
    if not (isinstance(value, (tuple, list)) or isinstance(value, np.ndarray) and value.ndim == 1):
        raise TypeError(f"{name} must be a pair (β₁, β₂), got {value!r}")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (β₁, β₂), got {value!r}")
    return fraction(opt, value[0], f"{name}[0]"), fraction(opt, value[1], f"{name}[1]")


class Optimizer:
    """What every optimizer has: the learning rate `lr` (η), coupled L2
    regularisation `l2` (adds l2·w to the gradient), decoupled
    `weight_decay` (w ← w − η·wd·w), `clip_norm` (rescale the whole
    gradient to at most this Euclidean norm; None: no clipping) and
    `decay_biases` (False: l2 and weight_decay leave the biases alone).

    Settings can be changed after construction; each assignment is checked
    as the constructor checks it (a bad value raises and the old one stays).
    A change takes effect from the next update of every network that trains
    with the optimizer."""

    kind = -1
    _n_state = 0

    lr = Setting(positive)
    l2 = RuleSetting(non_negative)
    weight_decay = RuleSetting(non_negative)
    clip_norm = RuleSetting(_clip_norm)
    decay_biases = RuleSetting(boolean)

    def __init__(
        self,
        lr: float,
        *,
        l2: float = 0.0,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        decay_biases: bool = True,
    ):
        self.lr = lr
        self.l2 = l2
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.decay_biases = decay_biases

    def __setattr__(self, name, value):
        if not isinstance(getattr(type(self), name, None), Setting):
            settings = ", ".join(vars(self))
            raise AttributeError(
                f"{type(self).__name__} has no setting {name!r} (its settings: {settings})"
            )
        super().__setattr__(name, value)

    @property
    def n_state(self) -> int:
        """How many state arrays it keeps, each shaped like the parameters."""
        return self._n_state

    def settings(self) -> dict:
        """The keyword arguments of the engine's set_optimizer (all but state)."""
        return dict(
            kind=self.kind,
            l2=self.l2,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm or 0.0,
            decay_biases=self.decay_biases,
        )

    def __repr__(self) -> str:
        defaults = {"l2": 0, "weight_decay": 0, "clip_norm": None, "decay_biases": True}
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if k not in defaults or v != defaults[k]
        )
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum μ (`momentum`) and
    Nesterov's look-ahead (`nesterov=True`) if asked."""

    kind = KIND_SGD
    momentum = RuleSetting(_momentum)
    nesterov = RuleSetting(_nesterov)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kw):
        super().__init__(lr, **kw)
        self.momentum = momentum
        self.nesterov = nesterov

    @property
    def n_state(self) -> int:
        return 1 if self.momentum else 0

    def settings(self) -> dict:
        return dict(super().settings(), momentum=self.momentum, nesterov=self.nesterov)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): steps scaled by running estimates of the
    gradient's first and second moments, bias-corrected."""

    kind = KIND_ADAM
    _n_state = 2
    betas = RuleSetting(_betas)
    eps = RuleSetting(positive)

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.betas = betas
        self.eps = eps

    def settings(self) -> dict:
        return dict(super().settings(), beta1=self.betas[0], beta2=self.betas[1], eps=self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01)."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        **kw,
    ):
        super().__init__(lr, betas, eps, weight_decay=weight_decay, **kw)


class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton, 2012): steps divided by a running root
    mean square of the gradient."""

    kind = KIND_RMSPROP
    _n_state = 1
    rho = RuleSetting(fraction)
    eps = RuleSetting(positive)

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.rho = rho
        self.eps = eps

    def settings(self) -> dict:
        return dict(super().settings(), rho=self.rho, eps=self.eps)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al., 2011): steps divided by the root of the sum of
    all squared gradients so far."""

    kind = KIND_ADAGRAD
    _n_state = 1
    eps = RuleSetting(positive)

    def __init__(self, lr: float = 0.01, eps: float = 1e-10, **kw):
        super().__init__(lr, **kw)
        self.eps = eps

    def settings(self) -> dict:
        return dict(super().settings(), eps=self.eps)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": AdaGrad}


def get(optimizer, lr: float | None = None) -> Optimizer:
    """An Optimizer from an instance or a name ('adam', …), with `lr` if given."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        cls = _BY_NAME[optimizer.lower()]
        return cls() if lr is None else cls(lr=lr)
    raise ValueError(
        f"optimizer must be one of {', '.join(_BY_NAME)} or an Optimizer, got {optimizer!r}"
    )
