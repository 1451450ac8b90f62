"""Training curves on the handwritten digits: the loss of every epoch for
several learning rates, the test accuracy they reach, and the test digits
the best network still gets wrong.

Too small a rate learns slowly; a good one quickly; too large a one makes
the loss jump about (and, larger still, diverge).

    python examples/07_digits_training_curves.py [OUTPUT_DIR]  → digits_training.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot

RATES = (0.002, 0.05, 0.5, 5.0)


def main(out: str = ".") -> dict:
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, seed=0)
    _, raw_test, _, _ = bp.datasets.load_digits(return_split=True, seed=0, scale=None)
    histories, accuracy, nets = {}, {}, {}
    for lr in RATES:
        net = bp.Sequential(
            bp.Dense(64, 32, activation="relu"),
            bp.Dense(32, 10, activation="softmax"),
            loss="cross_entropy",
            dtype="float32",
            seed=0,
        )
        histories[f"lr = {lr}"] = net.fit(X_train, y_train, epochs=30, batch_size=32, lr=lr)
        accuracy[lr] = net.evaluate(X_test, y_test)["accuracy"]
        nets[lr] = net
        print(
            f"lr {lr:6}: final training loss {histories[f'lr = {lr}'].history['loss'][-1]:.4f}, "
            f"test accuracy {accuracy[lr]:.4f}"
        )
    best = max(accuracy, key=accuracy.get)
    wrong = np.flatnonzero(nets[best].predict(X_test) != y_test)
    fig = plt.figure(figsize=(12, 4.5))
    left = fig.add_subplot(1, 2, 1)
    plot.loss_curves(histories, ax=left, log=True, title="training loss per epoch")
    for k, i in enumerate(wrong[:8]):
        ax = fig.add_subplot(2, 8, 5 + (k // 4) * 8 + k % 4)
        ax.imshow(raw_test[i].reshape(8, 8), cmap="gray_r")
        ax.set_title(f"{y_test[i]} → {nets[best].predict(X_test[i])}", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"digits, 64-32-10: best lr {best} reaches test accuracy {accuracy[best]:.3f}; "
        "right: misclassified (true → predicted)"
    )
    plot.save(fig, f"{out}/digits_training.png")
    return {"accuracy": accuracy, "histories": histories, "wrong": wrong}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
