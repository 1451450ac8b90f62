"""Numerical versus analytic gradients.

Backpropagation gives every ∂L/∂w in one backward pass.  The numerical
gradient needs several loss evaluations per weight, by central differences:

    D(h)  = (L(w + h) − L(w − h)) / 2h          (error O(h²))
    ∂L/∂w ≈ (4·D(h/2) − D(h)) / 3               (Richardson: error O(h⁴))

The extrapolated form lets h be large enough (1e-4) that rounding in L
hardly matters, while the O(h⁴) truncation stays near 1e-13.

`gradcheck` compares the two, in float64, and reports the largest relative
error |analytic − numerical| / max(|analytic|, |numerical|, atol).  The floor
`atol` (by default 1e-4 of the largest gradient entry) keeps entries that
are nearly zero, whose last digits are rounding noise in both, from counting
as large relative errors.  Below ~1e-7 the two agree as well as float64
allows.

The step h is held to [1e-8, 0.1].  The numerical gradient's error is the
loss's rounding over the step (about 1e-16 / h) plus the truncation of the
differences (growing as h⁴).  For weights and inputs of unit scale it stays
within a few 1e-5 of the gradient only between these bounds (near 1e-10 at
the default, 1e-4); outside them the check could no longer tell a right
gradient from a wrong one.  A larger step samples the loss far from the
point checked (at 1e200 it overflows); a smaller one measures rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import _sources
from . import losses as _losses
from ._validation import check_positive_float
from .layers import Dense
from .training import Trainer

if TYPE_CHECKING:
    from .network import Sequential

__all__ = ["gradcheck", "GradcheckResult"]

MIN_STEP, MAX_STEP = 1e-8, 0.1  # the range of h (see above)


@dataclass
class GradcheckResult:
    """max_rel_error: the largest relative error; where: the parameter
    ('layers[1].W[3, 0]', 'x[0, 2]', …) at which it occurred; n_checked: how
    many partial derivatives were compared; analytic and numerical: the two
    gradients, flat, in the order checked."""

    max_rel_error: float
    where: str
    n_checked: int
    analytic: np.ndarray
    numerical: np.ndarray

    def __float__(self) -> float:
        return self.max_rel_error

    def __repr__(self) -> str:
        return (
            f"GradcheckResult(max_rel_error={self.max_rel_error:.3e}, "
            f"where={self.where!r}, n_checked={self.n_checked})"
        )


def gradcheck(
    model: Sequential | Dense,
    X: ArrayLike,
    y: ArrayLike,
    *,
    loss: str | _losses.Loss = "mse",
    h: float = 1e-4,
    atol: float | None = None,
) -> GradcheckResult:
    """Check the analytic gradients of a Sequential or a Dense layer against
    central finite differences, in float64 (a float32 model is copied).

    For a Sequential, the gradient of its own loss with respect to all
    parameters, as computed by the compiled training step.  With dropout,
    that of the training loss with the masks held fixed: those of the
    network's next training pass.  For a Dense
    layer, the gradient of `loss` applied to its output, with respect to W,
    b and the input x, as computed by Dense.backward.

    h, the step of the central differences, lies in [1e-8, 0.1].  Raises
    ValueError where the loss, at the point checked or a step away, or a
    gradient is not finite: the model overflows there and no comparison
    means anything.
    """
    h = check_positive_float(h, "h")
    if not MIN_STEP <= h <= MAX_STEP:
        raise ValueError(
            f"h must lie in [{MIN_STEP:g}, {MAX_STEP:g}]: a larger step "
            f"samples the loss far away, a smaller one measures rounding; "
            f"got {h:g}"
        )
    if atol is not None:
        atol = check_positive_float(atol, "atol")
    if isinstance(model, Trainer):  # a network (Sequential)
        analytic, numerical, names = _check_network(model.copy("float64"), X, y, h)
    elif isinstance(model, Dense):
        analytic, numerical, names = _check_layer(model.copy("float64"), X, y, _losses.get(loss), h)
    else:
        raise TypeError(f"model must be a Sequential or a Dense layer, got {type(model).__name__}")
    finite = np.isfinite(analytic) & np.isfinite(numerical)
    if not finite.all():
        where = names(int(np.argmin(finite)))
        raise ValueError(
            f"the loss or its gradient is not finite at {where} or up to "
            f"±{h:g} from it: the model overflows there, so its gradient "
            f"cannot be checked"
        )
    if atol is None:
        atol = max(1e-4 * float(np.max(np.abs(analytic), initial=0.0)), 1e-12)
    rel = np.abs(analytic - numerical) / np.maximum(
        np.maximum(np.abs(analytic), np.abs(numerical)), atol
    )
    worst = int(np.argmax(rel))
    return GradcheckResult(float(rel[worst]), names(worst), rel.size, analytic, numerical)


def _central(loss_of, values: np.ndarray, h: float) -> np.ndarray:
    """∂loss_of()/∂v for each entry v of `values` (perturbed in place and
    restored), by central differences at h and h/2, extrapolated."""
    flat = values.reshape(-1)
    grad = np.empty(flat.size)

    def difference(i, step):
        keep = flat[i]
        flat[i] = keep + step
        up = loss_of()
        flat[i] = keep - step
        down = loss_of()
        flat[i] = keep
        return (up - down) / (2 * step)

    for i in range(flat.size):
        grad[i] = (4 * difference(i, h / 2) - difference(i, h)) / 3
    return grad


def _check_network(net: Sequential, X, y, h):
    X2, Y = _sources.describe(net).data(X, y)
    steps = net.dropout_steps
    net.loss_and_grad(X2, Y)
    analytic = net.grads.copy()

    def loss_of() -> float:
        if not any(net.dropout):
            return net.evaluate(X2, Y)["loss"]
        net.dropout_steps = steps  # the training loss, by the masks of the pass checked
        return net.loss_and_grad(X2, Y)

    numerical = _central(loss_of, net.params, h)

    return analytic, numerical, net.layout.name


def _check_layer(layer: Dense, X, y, loss: _losses.Loss, h):
    x = np.array(X, dtype=np.float64, ndmin=2)
    a = layer.forward(x)
    y2 = _losses.targets(loss, y, a.shape[0], a.shape[1], np.float64)
    dx = layer.backward(loss.gradient(a, y2))
    assert layer.dW is not None and layer.db is not None
    analytic = np.concatenate([layer.dW.ravel(), layer.db.ravel(), dx.ravel()])

    def loss_of():
        return loss(layer.forward(x), y2)

    numerical = np.concatenate(
        [_central(loss_of, layer.W, h), _central(loss_of, layer.b, h), _central(loss_of, x, h)]
    )
    n_w, n_b = layer.W.size, layer.b.size

    def names(i):
        if i < n_w:
            return f"W[{i // layer.n_out}, {i % layer.n_out}]"
        if i < n_w + n_b:
            return f"b[{i - n_w}]"
        i -= n_w + n_b
        return f"x[{i // x.shape[1]}, {i % x.shape[1]}]"

    return analytic, numerical, names
