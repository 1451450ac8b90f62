"""Loss functions: the value and the gradient, computed by the compiled core.

Every loss is summed over the outputs of a sample and averaged over the n
samples (rows) of a batch:

    mse                   C = 1/(2n) Σ‖y − a‖²                 ∂C/∂a = (a − y)/n
    mae                   C = 1/n Σ |a − y|  (L1)              ∂C/∂a = sign(a − y)/n
    huber                 C = 1/n Σ ℓ_δ(a − y),                ∂C/∂a = clip(a − y, −δ, δ)/n
                          ℓ_δ(r) = ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond
                          (Huber(delta), δ > 0; huber has δ = 1)
    binary_cross_entropy  C = −1/n Σ [y log a + (1 − y) log(1 − a)]
    cross_entropy         C = −1/n Σ y log a   (y one-hot or class labels)
    poisson               C = 1/n Σ [y log(y/a) − y + a]       ∂C/∂a = (1 − y/a)/n
                          (the half Poisson deviance of counts y ≥ 0, means a > 0;
                          y log(y/a) = 0 where y = 0)

In a network, cross_entropy follows a softmax output,
binary_cross_entropy a sigmoid output and poisson an exp output (a = e^z,
the log link); each pair is computed from the logits z in one fused,
numerically stable pass whose gradient is simply ∂C/∂z = (a − y)/n.  Called
on their own, as here, the losses take predictions a: the cross-entropies
clip probabilities to [ε, 1 − ε] (ε the dtype's machine epsilon), so that
log never sees 0, and poisson takes means a > 0.  mse, mae, huber and
poisson are regression losses, the cross-entropies classification ones
(accuracy, labels).  mae and huber grow only linearly in a residual, so a few
outliers among the targets pull the fit far less than under mse; like mse
they follow any output activation (identity, usually), whose f′(z) the
gradient is then multiplied by.  At a = y, mae's gradient is 0.

>>> from backprop import losses
>>> losses.mse([[0.5]], [[1.0]])
0.125
>>> losses.poisson([[2.0, 1.0]], [[2.0, 0.0]])   # a = y: 0; y = 0: a
1.0
>>> losses.huber([[0.5, 3.0]], [[0.0, 0.0]])      # ½·0.5² + 1·(3 − ½)
2.625
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike

from . import _ops
from ._codes import LossCode
from ._validation import Fixed, as_float_array, check_positive_float

__all__ = [
    "Loss",
    "Huber",
    "get",
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy",
    "cross_entropy",
    "poisson",
    "targets",
    "NAMES",
]

MSE = LossCode.MSE
BINARY_CROSS_ENTROPY = LossCode.BINARY_CROSS_ENTROPY
CROSS_ENTROPY = LossCode.CROSS_ENTROPY
POISSON = LossCode.POISSON
MAE = LossCode.MAE
HUBER = LossCode.HUBER


class Loss(Fixed):
    """One loss: call it for the mean value, `gradient` for ∂L/∂a.

    Attributes, fixed at construction: `name`; `code` (the compiled core's
    LossCode); `output`, the name of the output activation it is fused with in
    a network (or None: any); `delta`, huber's δ (0 for the other losses).
    """

    name: str
    code: LossCode
    output: str | None
    delta: float

    def __init__(self, name: str, code: LossCode, output: str | None, delta: float = 0.0):
        self._fix(name=name, code=code, output=output, delta=float(delta))

    def __repr__(self) -> str:
        if self.code == HUBER:
            return f"Huber(delta={self.delta})"
        return f"losses.{self.name}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Loss) and (self.code, self.delta) == (other.code, other.delta)

    def __hash__(self) -> int:
        return hash((self.code, self.delta))

    @property
    def is_classification(self) -> bool:
        """True for the cross-entropies (labels, accuracy); False for the
        regression losses, mse, mae, huber and poisson."""
        return self.code in (BINARY_CROSS_ENTROPY, CROSS_ENTROPY)

    def _arrays(self, y_pred, y_true):
        p = np.asarray(y_pred)
        dtype = np.float32 if p.dtype == np.float32 else np.float64
        p = as_float_array(y_pred, "y_pred", np.dtype(dtype))
        if p.ndim == 1:
            p = p.reshape(-1, 1)
        y = targets(self, y_true, p.shape[0], p.shape[1], p.dtype, "y_true")
        if self.code == POISSON and p.min() <= 0:
            raise ValueError(
                f"y_pred must hold means > 0 (the outputs e^z of an exp layer) for "
                f"poisson, got {p.min():g}"
            )
        if self.is_classification and (p.min() < 0 or p.max() > 1):
            raise ValueError(f"y_pred must hold probabilities in [0, 1] for {self.name}")
        return p, y

    def __call__(self, y_pred: ArrayLike, y_true: ArrayLike) -> float:
        """The mean loss of predictions y_pred (n, k) or (n,) against y_true."""
        p, y = self._arrays(y_pred, y_true)
        return _ops.loss_value(self.code, p, y, np.finfo(p.dtype).eps, self.delta)

    def gradient(self, y_pred: ArrayLike, y_true: ArrayLike) -> np.ndarray:
        """∂L/∂y_pred, shaped like y_pred."""
        p, y = self._arrays(y_pred, y_true)
        g = np.empty_like(p)
        _ops.loss_gradient(self.code, g, p, y, np.finfo(p.dtype).eps, self.delta)
        return g.reshape(np.shape(y_pred))


def Huber(delta: float = 1.0) -> Loss:
    """huber with the given δ > 0, where the loss turns from ½r² to
    δ(|r| − ½δ): residuals beyond δ count linearly (PyTorch's
    HuberLoss(delta=…), Keras's Huber(delta=…), both 1 by default)."""
    return Loss("huber", HUBER, None, check_positive_float(delta, "delta"))


mse = Loss("mse", MSE, None)
mae = Loss("mae", MAE, None)
huber = Huber(1.0)
binary_cross_entropy = Loss("binary_cross_entropy", BINARY_CROSS_ENTROPY, "sigmoid")
cross_entropy = Loss("cross_entropy", CROSS_ENTROPY, "softmax")
poisson = Loss("poisson", POISSON, "exp")

_BY_NAME = {
    "mse": mse,
    "mean_squared_error": mse,
    "squared_error": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "bce": binary_cross_entropy,
    "log_loss": binary_cross_entropy,
    "cross_entropy": cross_entropy,
    "categorical_cross_entropy": cross_entropy,
    "poisson": poisson,
    "mae": mae,
    "mean_absolute_error": mae,
    "absolute_error": mae,
    "l1": mae,
    "huber": huber,
}
NAMES = ("mse", "binary_cross_entropy", "cross_entropy", "poisson", "mae", "huber")


def get(loss: str | Loss) -> Loss:
    """The Loss for a name ('mse', …; 'huber' has δ = 1) or a Loss itself."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _BY_NAME:
        return _BY_NAME[loss.lower()]
    raise ValueError(f"loss must be one of {', '.join(NAMES)}, got {loss!r}")


def targets(loss: Loss, y, n_rows: int, n_outputs: int, dtype, name: str = "y") -> np.ndarray:
    """The targets y as a (n_rows, n_outputs) array of `dtype` for `loss`.

    cross_entropy takes class labels 0 … n_outputs−1 (shape (n,)) or rows of
    class probabilities (one-hot, shape (n, n_outputs)); binary_cross_entropy
    takes values in [0, 1]; poisson finite values ≥ 0 (counts, or rates: they
    need not be whole); mse, mae and huber take any finite values.  A 1-D y stands for one
    column when the network has one output.
    """
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have one row per sample ({n_rows}), got {arr.shape[0]}")
    if loss.code == CROSS_ENTROPY and arr.ndim == 1:
        return _one_hot(arr, n_outputs, dtype, name)
    if arr.ndim == 1:
        if n_outputs != 1:
            raise ValueError(
                f"{name} must have shape ({n_rows}, {n_outputs}) "
                f"for {n_outputs} outputs, got {arr.shape}"
            )
        arr = arr.reshape(-1, 1)
    if arr.shape[1] != n_outputs:
        raise ValueError(f"{name} must have {n_outputs} columns, got shape {arr.shape}")
    out = as_float_array(arr, name, np.dtype(dtype))
    if loss.code == POISSON and out.min() < 0:
        raise ValueError(f"{name} must be ≥ 0 (counts) for poisson, got {out.min():g}")
    if loss.is_classification and (out.min() < 0 or out.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] for {loss.name}")
    if loss.code == CROSS_ENTROPY and not np.allclose(
        out.sum(axis=1), 1, atol=1e-3 if dtype == np.float32 else 1e-6
    ):
        raise ValueError(
            f"each row of {name} must sum to 1 (one-hot or class probabilities) for cross_entropy"
        )
    return out


def _one_hot(labels, n_classes: int, dtype, name: str) -> np.ndarray:
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError(f"{name} must hold whole class labels")
    elif labels.dtype.kind == "b":
        raise TypeError(f"{name} must hold class labels 0 … {n_classes - 1}, got booleans")
    labels = labels.astype(np.int64, copy=False)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"{name} must hold class labels in 0 … {n_classes - 1}, "
            f"got values from {labels.min()} to {labels.max()}"
        )
    if n_classes <= _IDENTITY_MAX:
        return _identity(n_classes, np.dtype(dtype)).take(labels, axis=0)
    out = np.zeros((labels.shape[0], n_classes), dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


# the largest class count whose (n, n) identity is cached: 1024² float64 is
# 8 MiB, and 16 of them at most; past it the identity would outweigh the
# targets it serves (n_classes² against rows · n_classes)
_IDENTITY_MAX = 1024


@functools.lru_cache(maxsize=16)
def _identity(n: int, dtype: np.dtype) -> np.ndarray:
    """The (n, n) identity, whose rows are the one-hot targets (read-only:
    shared by every call)."""
    eye = np.eye(n, dtype=dtype)
    eye.flags.writeable = False
    return eye
