"""Numerical versus analytic gradients: they agree, and backpropagation is
far cheaper.

Central differences need a few loss evaluations per weight (here four, for
the extrapolated form), so a full numerical gradient costs O(weights)
forward passes; backpropagation gets every ∂L/∂w in one backward pass, about
the price of one forward pass.  The figure shows their relative error and the
time per full gradient as the number of weights grows.

    python examples/04_numerical_vs_analytic.py [OUTPUT_DIR]  → numerical_vs_analytic.png
"""

import sys
import time

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot


def main(out: str = ".") -> list:
    X, y = bp.datasets.load_digits()
    X, y = X[:16], y[:16]
    rows = []
    for hidden in (2, 4, 8, 16, 32, 64):
        net = bp.Sequential(
            bp.Dense(64, hidden, activation="tanh"),
            bp.Dense(hidden, 10, activation="softmax"),
            loss="cross_entropy",
            seed=0,
        )
        start = time.perf_counter()
        check = bp.gradcheck(net, X, y)  # numerical (and one analytic) gradient
        numerical = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(100):
            net.loss_and_grad(X, y)
        analytic = (time.perf_counter() - start) / 100
        rows.append((net.params.size, check.max_rel_error, numerical, analytic))
        print(
            f"{net.params.size:6d} weights: relative error {check.max_rel_error:.1e}, "
            f"numerical {numerical * 1e3:8.2f} ms, backpropagation {analytic * 1e6:6.1f} µs"
        )
    n, err, num, ana = map(np.array, zip(*rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.loglog(n, num, "o-", label="numerical (central differences)")
    left.loglog(n, ana, "o-", label="analytic (backpropagation)")
    left.set(xlabel="weights", ylabel="seconds per full gradient", title="cost")
    left.legend()
    right.semilogx(n, err, "o-")
    right.set(xlabel="weights", ylabel="largest relative error", title="agreement", ylim=(0, None))
    for ax in (left, right):
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    plot.save(fig, f"{out}/numerical_vs_analytic.png")
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
