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

>>> import backprop as bp
>>> opt = bp.Adam(lr=1e-3)
>>> # net.fit(X, y, optimizer=opt)      — a plain lr= means SGD
"""
from __future__ import annotations

from ._validation import check_positive_float

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "AdaGrad", "get"]

# The compiled core's codes (csrc/kernels.pxd).
KIND_SGD, KIND_ADAM, KIND_RMSPROP, KIND_ADAGRAD = range(4)


def _fraction(value, name: str) -> float:
    value = check_positive_float(value, name, allow_zero=True)
    if not value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


class Optimizer:
    """What every optimizer has: the learning rate `lr` (η), coupled L2
    regularisation `l2` (adds l2·w to the gradient), decoupled
    `weight_decay` (w ← w − η·wd·w) and `clip_norm` (rescale the whole
    gradient to at most this Euclidean norm; None: no clipping)."""

    kind = -1
    _n_state = 0

    def __init__(self, lr: float, *, l2: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None):
        self.lr = check_positive_float(lr, "lr")
        self.l2 = check_positive_float(l2, "l2", allow_zero=True)
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
        self.clip_norm = None if clip_norm is None else check_positive_float(clip_norm, "clip_norm")

    @property
    def n_state(self) -> int:
        """How many state arrays it keeps, each shaped like the parameters."""
        return self._n_state

    def settings(self) -> dict:
        """The keyword arguments of the engine's set_optimizer (all but state)."""
        return dict(kind=self.kind, l2=self.l2, weight_decay=self.weight_decay,
                    clip_norm=self.clip_norm or 0.0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not (k in ("l2", "weight_decay") and v == 0 or
                                 k == "clip_norm" and v is None))
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum μ (`momentum`) and
    Nesterov's look-ahead (`nesterov=True`) if asked."""

    kind = KIND_SGD

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kw):
        super().__init__(lr, **kw)
        self.momentum = _fraction(momentum, "momentum")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

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

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (β₁, β₂), got {betas!r}") from None
        self.betas = (_fraction(beta1, "betas[0]"), _fraction(beta2, "betas[1]"))
        self.eps = check_positive_float(eps, "eps")

    def settings(self) -> dict:
        return dict(super().settings(), beta1=self.betas[0], beta2=self.betas[1], eps=self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01)."""

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, **kw):
        super().__init__(lr, betas, eps, weight_decay=weight_decay, **kw)


class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton, 2012): steps divided by a running root
    mean square of the gradient."""

    kind = KIND_RMSPROP
    _n_state = 1

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.rho = _fraction(rho, "rho")
        self.eps = check_positive_float(eps, "eps")

    def settings(self) -> dict:
        return dict(super().settings(), rho=self.rho, eps=self.eps)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al., 2011): steps divided by the root of the sum of
    all squared gradients so far."""

    kind = KIND_ADAGRAD
    _n_state = 1

    def __init__(self, lr: float = 0.01, eps: float = 1e-10, **kw):
        super().__init__(lr, **kw)
        self.eps = check_positive_float(eps, "eps")

    def settings(self) -> dict:
        return dict(super().settings(), eps=self.eps)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp,
            "adagrad": AdaGrad}


def get(optimizer, lr: float | None = None) -> Optimizer:
    """An Optimizer from an instance or a name ('adam', …), with `lr` if given."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        cls = _BY_NAME[optimizer.lower()]
        return cls() if lr is None else cls(lr=lr)
    raise ValueError(f"optimizer must be one of {', '.join(_BY_NAME)} or an "
                     f"Optimizer, got {optimizer!r}")
