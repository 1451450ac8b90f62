"""The chain rule made visible: a trace of backpropagation for one sample.

For each layer l, from the output back to the input:

    z_l = a_{l−1} @ W_l + b_l          a_l = f(z_l)
    δ_L = ∂C/∂z_L                      (a − y for softmax or sigmoid with
                                        cross-entropy and exp with poisson;
                                        ∂C/∂a ⊙ f′(z) for mse, mae, huber:
                                        ∂C/∂a = a − y, sign(a − y),
                                        clip(a − y, −δ, δ))
    δ_l = (δ_{l+1} @ W_{l+1}ᵀ) ⊙ f′(z_l)
    ∂C/∂W_l = a_{l−1} ⊗ δ_l            ∂C/∂b_l = δ_l

(the README's notation: rows are samples).  `explain(net, x, y)` (also
`net.explain(x, y)`) is the plain-numpy reference of the compiled
backward pass: it computes each of these next to the formula, and checks
every ∂C/∂W and ∂C/∂b against central finite differences and against the compiled core's gradient.

>>> import backprop as bp
>>> X, y = bp.datasets.truth_table("xor")
>>> net = bp.Sequential(bp.Dense(2, 2, activation="sigmoid"),
...                     bp.Dense(2, 1, activation="sigmoid"), loss="mse", seed=0)
>>> print(net.explain(X[1], y[1]))          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _sources
from . import activations as _activations
from . import losses as _losses
from .gradcheck import gradcheck

__all__ = ["explain", "Explanation", "LayerTrace"]


@dataclass
class LayerTrace:
    """One layer of the trace (shapes for n_in inputs and n_out units)."""

    index: int
    activation: str
    a_prev: np.ndarray  # (n_in,)  the layer's input a_{l−1}
    z: np.ndarray  # (n_out,) z = a_prev @ W + b
    a: np.ndarray  # (n_out,) a = f(z)
    fprime: np.ndarray | None  # (n_out,) f′(z); None for softmax (a Jacobian)
    delta: np.ndarray  # (n_out,) δ = ∂C/∂z
    dW: np.ndarray  # (n_in, n_out) ∂C/∂W = a_prev ⊗ δ
    db: np.ndarray  # (n_out,) ∂C/∂b = δ


@dataclass
class Explanation:
    """The trace: `layers` from the output back to the first layer, the
    loss `C`, and the checks: the largest relative error of the traced
    gradient against finite differences (`max_rel_error_numerical`) and
    against the compiled core (`max_rel_error_core`)."""

    layers: list
    loss: float
    loss_name: str
    max_rel_error_numerical: float
    max_rel_error_core: float

    def __str__(self) -> str:
        def fmt(v) -> str:
            return np.array2string(
                np.asarray(v), precision=5, suppress_small=True, max_line_width=100
            )

        lines = [f"loss C = {self.loss:.6g} ({self.loss_name}); traced from the output back:"]
        for t in self.layers:
            lines.append(f"layer {t.index} ({t.activation}):")
            lines.append(f"  input a_prev    = {fmt(t.a_prev)}")
            lines.append(f"  z = a_prev·W + b = {fmt(t.z)}")
            lines.append(f"  a = f(z)        = {fmt(t.a)}")
            if t.fprime is not None:
                lines.append(f"  f′(z)           = {fmt(t.fprime)}")
            lines.append(f"  δ = ∂C/∂z       = {fmt(t.delta)}")
            lines.append("  ∂C/∂W = a_prev ⊗ δ =")
            lines += ["    " + row for row in fmt(t.dW).splitlines()]
            lines.append(f"  ∂C/∂b = δ       = {fmt(t.db)}")
        lines.append(
            f"check: largest relative error against finite differences "
            f"{self.max_rel_error_numerical:.2e}, against the compiled core "
            f"{self.max_rel_error_core:.2e}"
        )
        return "\n".join(lines)


def _output_gradient(loss: _losses.Loss, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂C/∂a of one sample for the losses that follow any output: mse a − y,
    mae sign(a − y), huber clip(a − y, −δ, δ)."""
    r = a - y
    if loss.code == _losses.MAE:
        return np.sign(r)
    if loss.code == _losses.HUBER:
        return np.clip(r, -loss.delta, loss.delta)
    return r


def explain(net, x, y) -> Explanation:
    """Trace backpropagation through `net` (a Sequential) for one sample x
    (n_in,) with target y (a class label, or the target vector).  Called by
    Sequential.explain, which first checks that every activation has a
    derivative.  Dropout, a part of training only, is left out."""
    about = _sources.describe(net)
    x64 = np.asarray(about.inputs(x)[0][0], dtype=np.float64)
    Y = about.targets(y, 1, True).astype(np.float64)[0]
    layers = net.layers
    # forward, keeping every z and a
    a_prevs, zs, outs = [], [], []
    a = x64
    for layer in layers:
        a_prevs.append(a)
        z = a @ layer.W.astype(np.float64) + layer.b.astype(np.float64)
        a = np.asarray(layer.activation(z[None, :]))[0]
        zs.append(z)
        outs.append(a)
    loss = float(net.loss(outs[-1][None, :], Y[None, :]))
    # backward: the output's δ, then the chain rule layer by layer
    traces = []
    out_act = layers[-1].activation
    if net.loss.output is None:  # mse, mae, huber: ∂C/∂a, then ⊙ f′(z)
        grad = _output_gradient(net.loss, outs[-1], Y)
        delta = np.asarray(out_act.backward(outs[-1][None, :], grad[None, :], zs[-1][None, :]))[0]
    else:  # softmax + cross-entropy, sigmoid + binary cross-entropy, exp + poisson
        delta = outs[-1] - Y
    for i in range(len(layers) - 1, -1, -1):
        act = layers[i].activation
        fprime = (
            None
            if act.code == _activations.SOFTMAX
            else np.asarray(
                act.backward(outs[i][None, :], np.ones((1, outs[i].size)), zs[i][None, :])
            )[0]
        )
        traces.append(
            LayerTrace(
                i,
                act.name,
                a_prevs[i],
                zs[i],
                outs[i],
                fprime,
                delta,
                np.outer(a_prevs[i], delta),
                delta.copy(),
            )
        )
        if i > 0:
            below = layers[i - 1].activation
            upstream = delta @ layers[i].W.astype(np.float64).T  # δ_{l+1} @ W_{l+1}ᵀ
            delta = np.asarray(
                below.backward(outs[i - 1][None, :], upstream[None, :], zs[i - 1][None, :])
            )[0]
    traced = np.concatenate([np.concatenate([t.dW.ravel(), t.db]) for t in reversed(traces)])
    checked = gradcheck(net.copy(dropout=False), x64[None, :], Y[None, :])
    core = net.copy("float64", dropout=False)  # (explained without dropout, as predicted)
    core.loss_and_grad(x64[None, :], Y[None, :])

    def rel(a, b):
        scale = max(1e-4 * float(np.abs(b).max(initial=0.0)), 1e-12)
        return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), scale)))

    return Explanation(
        traces, loss, net.loss.name, rel(traced, checked.numerical), rel(traced, core.grads)
    )
