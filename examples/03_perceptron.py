"""The perceptron: one threshold unit computes AND, NAND and OR; no single
unit computes XOR; two layers do.

A step unit outputs [w₁x₁ + w₂x₂ + b ≥ 0]: a line through the plane with the
ones on one side.  AND, OR and NAND are such lines; XOR's ones (01 and 10)
sit on a diagonal that no line separates from 00 and 11 (an exhaustive search
over weights confirms it, and a trained sigmoid unit gets at most three of the
four rows right).
Two layers do it: XOR = AND(NAND, OR), with chosen weights, and a trained
2-4-1 network learns it.

    python examples/03_perceptron.py [OUTPUT_DIR]             → perceptron.png
"""

import itertools
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot

GATES = {"AND": ([1.0, 1.0], -1.5), "OR": ([1.0, 1.0], -0.5), "NAND": ([-1.0, -1.0], 1.5)}


def unit(weights, bias):
    """One step unit with the given weights."""
    layer = bp.Dense(2, 1, activation="step")
    layer.W, layer.b = [[weights[0]], [weights[1]]], [bias]
    return bp.Sequential(layer, loss="mse")


def two_layer_xor():
    """XOR = AND(NAND(x), OR(x)), with step units and chosen weights."""
    hidden = bp.Dense(2, 2, activation="step")
    hidden.W, hidden.b = [[-1.0, 1.0], [-1.0, 1.0]], [1.5, -0.5]  # NAND, OR
    out = bp.Dense(2, 1, activation="step")
    out.W, out.b = [[1.0], [1.0]], [-1.5]  # AND
    return bp.Sequential(hidden, out, loss="mse")


def single_units_computing(table):
    """Weights and biases on a grid for which one step unit computes table."""
    X, _ = bp.datasets.truth_table("and")
    grid = np.linspace(-2, 2, 17)
    return [
        (w1, w2, b)
        for w1, w2, b in itertools.product(grid, grid, grid)
        if np.array_equal((X @ [w1, w2] + b >= 0).astype(int), table)
    ]


def main(out: str = ".") -> dict:
    results = {}
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    for ax, (name, (w, b)) in zip(axes[0], GATES.items()):
        X, y = bp.datasets.truth_table(name.lower())
        net = unit(w, b)
        results[name] = np.array_equal(net.predict(X), y)
        plot.decision_boundary(net, X, y, ax=ax, title=f"{name}: one unit, w={w}, b={b}")
    X, y = bp.datasets.truth_table("xor")
    results["xor_single_units"] = len(single_units_computing(y))
    single = bp.Sequential(
        bp.Dense(2, 1, activation="sigmoid"), loss="binary_cross_entropy", seed=0
    )
    single.fit(X, y, epochs=3000, batch_size=4, lr=0.5)
    results["xor_trained_single_correct"] = int(np.sum(single.predict(X) == y))
    plot.decision_boundary(
        single,
        X,
        y,
        ax=axes[1][0],
        title=f"XOR, one trained unit: {results['xor_trained_single_correct']}/4",
    )
    wired = two_layer_xor()
    results["xor_two_layers"] = np.array_equal(wired.predict(X), y)
    plot.decision_boundary(wired, X, y, ax=axes[1][1], title="XOR = AND(NAND, OR): two layers")
    trained = bp.Sequential(
        bp.Dense(2, 4, activation="tanh"),
        bp.Dense(4, 1, activation="sigmoid"),
        loss="binary_cross_entropy",
        seed=0,
    )
    trained.fit(X, y, epochs=2000, batch_size=4, lr=0.5)
    results["xor_trained_two_layers"] = np.array_equal(trained.predict(X), y)
    plot.decision_boundary(trained, X, y, ax=axes[1][2], title="XOR, trained 2-4-1 network")
    plot.save(fig, f"{out}/perceptron.png")
    for key, value in results.items():
        print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
