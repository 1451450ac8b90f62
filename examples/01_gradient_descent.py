"""Gradient descent on F(w) = w², with four learning rates.

The gradient is F′(w) = 2w, so one step w ← w − η·2w multiplies w by
(1 − 2η): after k steps w = w₀·(1 − 2η)ᵏ.  It converges for 0 < η < 1
(slowly when η is small, in one step at η = ½), oscillates between ±w₀ at
η = 1, and diverges beyond.

    python examples/01_gradient_descent.py [OUTPUT_DIR]     → gradient_descent.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from backprop import plot

RATES = {
    "too small (η = 0.02)": 0.02,
    "good (η = 0.3)": 0.3,
    "oscillating (η = 1.0)": 1.0,
    "diverging (η = 1.05)": 1.05,
}


def F(w):
    return w**2


def descend(w0: float, lr: float, steps: int) -> np.ndarray:
    """The points w₀, w₁, … of gradient descent on F."""
    path = [w0]
    for _ in range(steps):
        path.append(path[-1] - lr * 2 * path[-1])  # w ← w − η·F′(w)
    return np.array(path)


def main(out: str = ".") -> dict:
    paths = {name: descend(1.0, lr, 20) for name, lr in RATES.items()}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, path) in zip(axes.ravel(), paths.items()):
        plot.descent_path(F, path, ax=ax, xs=np.linspace(-1.6, 1.6, 400), title=name)
    fig.suptitle("Gradient descent on F(w) = w², from w₀ = 1: w_k = w₀(1 − 2η)ᵏ")
    plot.save(fig, f"{out}/gradient_descent.png")
    for name, path in paths.items():
        print(f"{name:24s} w after 20 steps: {path[-1]: .3e}")
    return {RATES[name]: path for name, path in paths.items()}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
