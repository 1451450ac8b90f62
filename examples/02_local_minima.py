"""Convex versus non-convex: where gradient descent ends depends on where
it starts.

F(w) = w⁴ − 3w² + w has a global minimum near w ≈ −1.30 and a local one near
w ≈ 1.13, with a hump between them.  Gradient descent only ever goes
downhill, so from the right of the hump it settles in the local minimum,
from the left in the global one.  On the convex F(w) = w² every start ends
at the same minimum.

    python examples/02_local_minima.py [OUTPUT_DIR]          → local_minima.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from backprop import plot


def F(w):
    return w**4 - 3 * w**2 + w


def dF(w):
    return 4 * w**3 - 6 * w + 1


def descend(grad, w0: float, lr: float = 0.02, steps: int = 200) -> np.ndarray:
    path = [w0]
    for _ in range(steps):
        path.append(path[-1] - lr * grad(path[-1]))
    return np.array(path)


def main(out: str = ".") -> dict:
    starts = (-2.0, -0.5, 0.5, 2.0)
    ends = {w0: descend(dF, w0)[-1] for w0 in starts}
    convex = {w0: descend(lambda w: 2 * w, w0)[-1] for w0 in starts}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for w0 in starts:
        plot.descent_path(
            F,
            descend(dF, w0),
            ax=left,
            xs=np.linspace(-2.2, 2.2, 400),
            label=f"from {w0:+.1f} → {ends[w0]:+.2f}",
        )
        plot.descent_path(
            lambda w: w**2,
            descend(lambda w: 2 * w, w0),
            ax=right,
            xs=np.linspace(-2.2, 2.2, 400),
            label=f"from {w0:+.1f}",
        )
    left.set_title("non-convex F(w) = w⁴ − 3w² + w")
    right.set_title("convex F(w) = w²")
    plot.save(fig, f"{out}/local_minima.png")
    for w0, w in ends.items():
        kind = "global" if w < 0 else "local"
        print(f"start {w0:+.1f}: ends at w = {w:+.4f}, F = {F(w):+.4f} ({kind} minimum)")
    return {"non_convex": ends, "convex": convex}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
