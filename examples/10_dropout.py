"""Dropout against overfitting: the same wide network on a small, noisy data
set, without dropout and with Dropout(0.5) after each hidden layer.

120 training points of two overlapping clouds are too few for 2-128-128-1:
without dropout the network learns the training points by heart, its
training loss falls towards 0 and its loss on 1,000 new points of the same
clouds climbs after the first epochs.  Dropout drops half of each hidden
layer's units afresh in every step (and scales the others by 2), so that no
unit can count on another: the training loss stays higher, the validation
loss lower, and the boundary between the classes smoother.  The training
loss here is measured as predict sees the network (without dropout) after
every epoch; fit's own 'loss' is that of the dropped network it trains.

    python examples/10_dropout.py [OUTPUT_DIR]  → dropout.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot


def clouds(n: int, rng: np.random.Generator):
    """Two Gaussian clouds of unit spread whose centres lie 2√2 apart: they overlap."""
    y = rng.integers(0, 2, n)
    return rng.normal(size=(n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0), y


def train(rate: float, data, epochs: int = 300) -> tuple:
    X_train, y_train, X_val, y_val = data
    stack = []
    for n_in in (2, 128):  # two hidden layers, each followed by its dropout
        stack.append(bp.Dense(n_in, 128, "relu"))
        if rate:
            stack.append(bp.Dropout(rate))
    net = bp.Sequential(*stack, bp.Dense(128, 1, "sigmoid"), loss="binary_cross_entropy", seed=0)
    training_loss = []

    class TrainingLoss(bp.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            training_loss.append(net.evaluate(X_train, y_train)["loss"])

    history = net.fit(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=10,
        optimizer=bp.Adam(1e-3),
        validation_data=(X_val, y_val),
        callbacks=[TrainingLoss()],
    )
    return net, np.array(training_loss), np.array(history.history["val_loss"])


def main(out: str = ".") -> dict:
    rng = np.random.default_rng(0)
    X_train, y_train = clouds(120, rng)
    X_val, y_val = clouds(1000, rng)
    data = (X_train, y_train, X_val, y_val)
    runs = {"no dropout": train(0.0, data), "Dropout(0.5)": train(0.5, data)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    epochs = np.arange(1, 301)
    for (label, (net, train_loss, val_loss)), color in zip(runs.items(), ("C3", "C0")):
        axes[0].plot(epochs, train_loss, color=color, label=f"{label}: training")
        axes[0].plot(epochs, val_loss, "--", color=color, label=f"{label}: validation")
        print(
            f"{label}: training loss {train_loss[-1]:.3f}, validation loss {val_loss[-1]:.3f} "
            f"(lowest {val_loss.min():.3f}, epoch {val_loss.argmin() + 1}), "
            f"validation accuracy {net.evaluate(X_val, y_val)['accuracy']:.3f}"
        )
    axes[0].set(
        xlabel="epoch",
        ylabel="loss (binary cross-entropy)",
        title="120 training points, 2-128-128-1",
    )
    axes[0].legend(fontsize=8)
    for ax, (label, (net, _, val_loss)) in zip(axes[1:], runs.items()):
        plot.decision_boundary(
            net, X_train, y_train, ax=ax, title=f"{label}: final validation loss {val_loss[-1]:.2f}"
        )
    fig.suptitle("dropout against overfitting: lower validation loss, a smoother boundary")
    plot.save(fig, f"{out}/dropout.png")
    return {label: {"train": t, "val": v, "net": n} for label, (n, t, v) in runs.items()}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
