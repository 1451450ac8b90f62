"""The `backprop` command.

    backprop train [--data digits|xor|spirals] [--hidden 32 ...] ...
    backprop info

`train` fits a network on one of the embedded data sets, prints the loss of
every epoch and the final test accuracy.  Exit codes: 0 success, 1 failure
while running, 2 bad command-line options.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__, activations, datasets
from .layers import Dense
from .network import Sequential


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop",
        description="Train small neural networks by backpropagation, in compiled code.")
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train a network on an embedded data set",
        description="Train a multi-layer perceptron on embedded data and report "
                    "the loss of every epoch and the final test accuracy.")
    train.add_argument("--data", choices=("digits", "xor", "spirals"), default="digits",
                       help="digits: 8×8 handwritten digits (default); xor: the XOR "
                            "truth table; spirals: two interleaved spirals")
    train.add_argument("--hidden", type=_positive_int, nargs="*", default=None,
                       metavar="UNITS",
                       help="hidden layer sizes (default: 32 for digits, 4 for xor, "
                            "32 32 for spirals)")
    train.add_argument("--activation", default=None, choices=[
        n for n in activations.NAMES if n not in ("softmax", "step", "linear")],
        help="hidden activation (default: relu; tanh for xor)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="passes over the training data (default: 30 for digits, "
                            "2000 for xor, 300 for spirals)")
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate η in w ← w − η·∂L/∂w (default: 0.1; 0.5 for xor)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--test-size", type=float, default=0.2,
                       help="fraction held out for testing (digits, spirals)")
    train.add_argument("--quiet", action="store_true", help="print only the result")

    sub.add_parser("info", help="version, build and BLAS of this installation")
    return parser


DEFAULTS = {  # hidden, activation, epochs, lr
    "digits": ([32], "relu", 30, 0.1),
    "xor": ([4], "tanh", 2000, 0.5),
    "spirals": ([32, 32], "relu", 300, 0.1),
}


def _train(args) -> int:
    hidden, act, epochs, lr = DEFAULTS[args.data]
    hidden = args.hidden if args.hidden is not None else hidden
    act = args.activation or act
    epochs = args.epochs or epochs
    lr = args.lr or lr
    if not 0 < args.test_size < 1:
        print("backprop: error: --test-size must lie in (0, 1)", file=sys.stderr)
        return 2
    if args.data == "digits":
        X_train, X_test, y_train, y_test = datasets.load_digits(
            return_split=True, test_size=args.test_size, seed=args.seed)
        source = "digits (8×8 handwritten, 1,797 samples, embedded)"
    elif args.data == "spirals":
        X, y = datasets.make_spirals(400, seed=args.seed)
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=args.test_size, seed=args.seed)
        source = "two spirals (400 points, seeded)"
    else:
        X_train, y_train = datasets.truth_table("xor")
        X_test, y_test = X_train, y_train
        source = "XOR truth table (4 rows; tested on the same rows)"
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    sizes = [X_train.shape[1]] + list(hidden)
    layers = [Dense(a, b, activation=act) for a, b in zip(sizes, sizes[1:])]
    layers.append(Dense(sizes[-1], n_classes, activation="softmax"))
    net = Sequential(*layers, loss="cross_entropy", dtype=args.dtype, seed=args.seed)
    if not args.quiet:
        print(f"data: {source}; {len(X_train)} training rows, {len(X_test)} test rows")
        print(net.summary())
        print(f"SGD: lr {lr}, batch size {args.batch_size}, {epochs} epochs, seed {args.seed}")
    start = time.perf_counter()
    history = net.fit(X_train, y_train, epochs=epochs, batch_size=args.batch_size, lr=lr)
    seconds = time.perf_counter() - start
    if not args.quiet:
        width = len(str(epochs))
        every = max(1, epochs // 30)
        for epoch, loss in zip(history.epoch, history.history["loss"]):
            if epoch % every == 0 or epoch in (1, epochs):
                print(f"epoch {epoch:>{width}}/{epochs}  loss {loss:.6f}")
    train_acc = net.evaluate(X_train, y_train)["accuracy"]
    result = net.evaluate(X_test, y_test)
    print(f"trained in {seconds * 1e3:.1f} ms; train accuracy {train_acc:.4f}; "
          f"test loss {result['loss']:.4f}, test accuracy {result['accuracy']:.4f}")
    return 0


def _info() -> int:
    import platform

    import scipy

    print(f"backprop {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}), "
          f"numpy {np.__version__}, scipy {scipy.__version__}")
    print("compiled core: backprop._ops, backprop._engine (Cython); "
          "matrix products by scipy's BLAS")
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _train(args) if args.command == "train" else _info()
    except (ValueError, TypeError) as exc:
        print(f"backprop: error: {exc}", file=sys.stderr)
        return 1
