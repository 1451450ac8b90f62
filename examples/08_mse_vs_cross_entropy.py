"""Squared error versus cross-entropy on the same classification task.

With sigmoid outputs and the squared error C = 1/(2n) Σ‖y − a‖², the output
δ = (a − y) ⊙ a(1 − a) vanishes when a unit saturates at the wrong answer
(a ≈ 0 or 1), so learning crawls; with softmax and cross-entropy δ = a − y,
largest exactly when the network is most wrong.  Same network, same data,
same learning rate, same seed.

    python examples/08_mse_vs_cross_entropy.py [OUTPUT_DIR]    → mse_vs_cross_entropy.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot


def train(output: str, loss: str, data, epochs: int = 15):
    X_train, X_test, y_train, y_test = data
    net = bp.Sequential(
        bp.Dense(64, 32, activation="relu"), bp.Dense(32, 10, activation=output), loss=loss, seed=0
    )
    targets = np.eye(10)[y_train] if loss == "mse" else y_train
    accuracy = []

    class Score(bp.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            accuracy.append(float(np.mean(net.predict_proba(X_test).argmax(1) == y_test)))

    net.fit(X_train, targets, epochs=epochs, batch_size=32, lr=0.1, callbacks=[Score()])
    return np.array(accuracy)


def main(out: str = ".") -> dict:
    data = bp.datasets.load_digits(return_split=True, seed=0)
    curves = {
        "squared error (sigmoid outputs)": train("sigmoid", "mse", data),
        "cross-entropy (softmax outputs)": train("softmax", "cross_entropy", data),
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, acc in curves.items():
        ax.plot(np.arange(1, len(acc) + 1), acc, "o-", label=label)
        print(
            f"{label}: test accuracy after epochs 1, 3, 15: {acc[0]:.3f}, {acc[2]:.3f}, "
            f"{acc[-1]:.3f}"
        )
    ax.set(xlabel="epoch", ylabel="test accuracy", title="digits, same network and lr = 0.1")
    ax.legend()
    plot.save(fig, f"{out}/mse_vs_cross_entropy.png")
    return curves


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
