"""Pictures of learning: loss curves, decision boundaries, descent paths.

Needs matplotlib, the optional extra `plot` (pip install "backprop[plot]").
Each function draws on the given matplotlib Axes (a new figure when none is
given) and returns the Axes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["loss_curves", "decision_boundary", "descent_path", "save"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            'backprop.plot needs matplotlib, the optional extra "plot": '
            'pip install "backprop[plot]" (or matplotlib)'
        ) from None
    return plt


def _axes(ax):
    return ax if ax is not None else _pyplot().subplots(figsize=(6, 4))[1]


def loss_curves(curves: dict, ax=None, title: str = "training loss", log: bool = False):
    """One line per entry of `curves` (label → a History, or a list of
    per-epoch values), loss against epoch."""
    ax = _axes(ax)
    for label, curve in curves.items():
        values = curve.history["loss"] if hasattr(curve, "history") else list(curve)
        ax.plot(np.arange(1, len(values) + 1), values, label=str(label))
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    if log:
        ax.set_yscale("log")
    ax.legend()
    return ax


def decision_boundary(net, X, y, ax=None, resolution: int = 200, title: str = ""):
    """The classes a network (or any object with predict) gives each point
    of the plane, with the samples X (n, 2) coloured by their labels y."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have two columns (points in the plane), got shape {X.shape}")
    ax = _axes(ax)
    pad = 0.1 * (X.max(0) - X.min(0)) + 0.1
    lo, hi = X.min(0) - pad, X.max(0) + pad
    gx, gy = np.meshgrid(
        np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    )
    labels = np.asarray(net.predict(np.column_stack([gx.ravel(), gy.ravel()])))
    ax.contourf(gx, gy, labels.reshape(gx.shape).astype(float), alpha=0.3, cmap="coolwarm")
    ax.scatter(
        X[:, 0], X[:, 1], c=np.asarray(y, dtype=float), cmap="coolwarm", edgecolors="k", s=40
    )
    ax.set(xlabel="x₁", ylabel="x₂", title=title)
    return ax


def descent_path(f, path, ax=None, xs=None, label: str | None = None, title: str = ""):
    """The curve of a one-dimensional function f and the points `path`
    (w₀, w₁, …) that gradient descent visited on it, joined in order."""
    ax = _axes(ax)
    path = np.asarray(path, dtype=np.float64)
    if xs is None:
        finite = path[np.isfinite(path)]
        span = max(np.abs(finite).max(initial=1.0), 1.0) * 1.2
        xs = np.linspace(-span, span, 400)
    xs = np.asarray(xs, dtype=np.float64)
    ax.plot(xs, f(xs), color="0.6")
    shown = path[np.isfinite(path) & (np.abs(path) <= np.abs(xs).max())]
    ax.plot(shown, f(shown), "o-", markersize=4, label=label)
    ax.set(xlabel="w", ylabel="F(w)", title=title)
    if label:
        ax.legend()
    return ax


def save(fig, path) -> None:
    """Lay out `fig`, write it to `path` (PNG by the name) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
