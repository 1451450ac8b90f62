"""The chain rule made visible: backpropagation through a small network for
one sample, layer by layer from the output back, with every weight gradient
∂C/∂w = a·δ checked against finite differences.

    python examples/05_chain_rule.py [OUTPUT_DIR]             → chain_rule.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot


def main(out: str = "."):
    net = bp.Sequential(
        bp.Dense(2, 3, activation="sigmoid"),
        bp.Dense(3, 1, activation="sigmoid"),
        loss="mse",
        seed=1,
    )
    x, y = np.array([1.0, 0.0]), np.array([1.0])
    trace = net.explain(x, y)
    print(trace)
    check = bp.gradcheck(net, x[None, :], y[None, :])
    fig, ax = plt.subplots(figsize=(8, 4))
    index = np.arange(check.n_checked)
    ax.bar(index - 0.2, check.analytic, width=0.4, label="backpropagation (analytic)")
    ax.bar(index + 0.2, check.numerical, width=0.4, label="finite differences (numerical)")
    ax.set(
        xlabel="parameter (W₁, b₁, W₂, b₂ flattened)",
        ylabel="∂C/∂w",
        title=f"Two ways to the same gradient: largest relative gap {check.max_rel_error:.1e}",
    )
    ax.legend()
    plot.save(fig, f"{out}/chain_rule.png")
    return trace


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
