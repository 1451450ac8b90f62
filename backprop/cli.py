"""The `backprop` command (also `python -m backprop`).

    backprop train [--data digits|xor|spirals|FILE.csv] [--hidden 32 …] [--save model.npz] …
    backprop predict model.npz data.csv [--proba]
    backprop export model.npz model.onnx [--labels] [--opset N]
    backprop bench [options of python -m bench]
    backprop info

`train` fits a network on an embedded data set or a CSV file (numbers, one
row per sample, the label in the last column or --label-column; a header
line is recognised), prints the loss of every epoch and the test accuracy,
and saves the model if asked.  CSV files are UTF-8 text, with or without a
byte-order mark, with any line ends; blank lines are skipped.  Exit codes:
0 success, 1 the run failed (bad file, bad data), 2 bad command-line
options, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import os
import subprocess
import sys
import time
import warnings

import numpy as np

from . import __version__, _ops, activations, datasets
from . import losses as _losses
from . import onnx as _onnx
from . import optimizers as _optimizers
from ._kernels import CUT_ENV, ENV, SPLIT_ENV, cut_mode, kernel_builds, kernels_in_use, split_mode
from ._threads import blas_info
from .layers import Dense, Dropout
from .network import Sequential, load

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(Exception):
    """A failure to report in one line, with exit code 1."""

    code = EXIT_FAILED


class UsageError(CommandError):
    """An option that does not suit the data or the machine: exit code 2."""

    code = EXIT_USAGE


def _at_least(minimum):
    def integer(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return integer


_positive_int = _at_least(1)


def _positive_float(text):
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def _momentum(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


_rate = _momentum  # (a dropout rate lies in [0, 1) too)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop",
        description="Train small neural networks by backpropagation, in compiled code.",
    )
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a network on embedded data or a CSV file",
        description="Train a multi-layer perceptron and report the loss of every epoch "
        "and the final test accuracy.",
    )
    train.add_argument(
        "--data",
        default="digits",
        metavar="digits|xor|spirals|FILE.csv",
        help="digits: 8×8 handwritten digits (default); xor: the XOR "
        "truth table; spirals: two interleaved spirals; or a CSV "
        "file of numbers with the class label in one column",
    )
    train.add_argument(
        "--label-column",
        default="-1",
        metavar="INDEX|NAME",
        help="the CSV column holding the label (default: the last)",
    )
    train.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="*",
        default=None,
        metavar="UNITS",
        help="hidden layer sizes (default: 32 for digits and CSV files, "
        "4 for xor, 32 32 for spirals)",
    )
    train.add_argument(
        "--activation",
        default=None,
        choices=[n for n in activations.NAMES if n not in ("softmax", "step", "linear")],
        help="hidden activation (default: relu; tanh for xor)",
    )
    train.add_argument(
        "--optimizer", default="sgd", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"]
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate η (default: 0.1 for sgd, 0.5 for xor, the optimizer's own otherwise)",
    )
    train.add_argument(
        "--momentum", type=_momentum, default=None, help="SGD's momentum (default: 0)"
    )
    train.add_argument(
        "--dropout",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="drop this fraction of every hidden layer's units in training (default: 0, none)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="passes over the training data (default: 30; 2000 for xor, 300 for spirals)",
    )
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--seed", type=_at_least(0), default=0)
    train.add_argument(
        "--test-size",
        type=_fraction,
        default=0.2,
        help="fraction held out for testing (not for xor)",
    )
    train.add_argument(
        "--validation-split",
        type=_fraction,
        default=None,
        help="fraction of the training rows scored after every epoch",
    )
    train.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the validation loss stops improving; keep the best",
    )
    train.add_argument("--patience", type=_positive_int, default=5)
    train.add_argument("--save", metavar="MODEL.npz", help="write the trained model here")
    train.add_argument(
        "--checkpoint",
        metavar="RUN.npz",
        help="keep the run safe in this file after every epoch; run the same command "
        "again to resume it (a complete run is not trained twice)",
    )
    train.add_argument("--quiet", action="store_true", help="print only the result")

    predict = sub.add_parser(
        "predict",
        help="predict with a saved model",
        description="Print one prediction per row of a CSV file: the class "
        "name, for a model with class names, or the label "
        "or output values.",
    )
    predict.add_argument("model", help="a model file written by train --save")
    predict.add_argument(
        "data",
        help="a CSV file of feature rows (a header line is "
        "recognised; a label column, if any, is dropped "
        "when it has one column too many)",
    )
    predict.add_argument(
        "--proba", action="store_true", help="print the output probabilities instead of labels"
    )

    export = sub.add_parser(
        "export",
        help="write a saved model as an ONNX graph",
        description="Write a model file as an ONNX graph, which ONNX Runtime "
        "loads from Python, C, C++, C#, Java or JavaScript (needs the onnx "
        'package: pip install "backprop[onnx]").',
    )
    export.add_argument("model", help="a model file written by train --save")
    export.add_argument("output", metavar="model.onnx", help="the ONNX file to write")
    export.add_argument(
        "--labels",
        action="store_true",
        help="also output the predicted labels (classifiers), beside the probabilities",
    )
    export.add_argument(
        "--opset",
        type=_at_least(_onnx.MIN_OPSET),
        default=None,
        help=f"the ONNX operator set (default: {_onnx.DEFAULT_OPSET})",
    )

    bench = sub.add_parser(
        "bench", help="run the benchmark suite (from a source checkout)", add_help=False
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)

    sub.add_parser("info", help="version, build, BLAS and threads of this installation")
    return parser


DEFAULTS = {  # hidden, activation, epochs, lr
    "digits": ([32], "relu", 30, 0.1),
    "csv": ([32], "relu", 30, 0.1),
    "xor": ([4], "tanh", 2000, 0.5),
    "spirals": ([32, 32], "relu", 300, 0.1),
}


def _line_of(data: bytes, offset: int) -> int:
    """The line (from 1, after LF, CRLF or CR line ends) of a byte that is not a line end."""
    return len(data[: offset + 1].splitlines())


def _decode(data: bytes, path: str) -> str:
    """The text of a CSV file: UTF-8, with or without a byte-order mark."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CommandError(
            f'{path} is UTF-16 text (Excel\'s "Unicode Text"): save it as "CSV UTF-8"'
        )
    nul = data.find(b"\0")
    if nul >= 0:
        raise CommandError(
            f"{path}, line {_line_of(data, nul)}: a NUL byte; this is not a text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{path}, line {_line_of(data, exc.start)}: byte "
            f"0x{data[exc.start]:02x} is not UTF-8; save the file as UTF-8 "
            f'(Excel: "CSV UTF-8")'
        ) from None
    return text.lstrip("\ufeff")  # the byte-order mark, if any (or two)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _is_header(first, second) -> bool:
    """Whether the first row names the columns: a word above a number, or
    no number at all in a file of one row."""
    if second is None:
        return not any(_is_number(cell) for cell in first)
    return any(
        cell.strip() and not _is_number(cell) and _is_number(below)
        for cell, below in zip(first, second)
    )


def read_csv(path: str):
    """(header or None, rows of strings, the line each row starts on) of a
    CSV file.  Blank lines are skipped."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    reader = csv.reader(io.StringIO(_decode(data, path), newline=""))
    rows, lines, done = [], [], 0
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(done + 1)
            done = reader.line_num
    except csv.Error as exc:
        raise CommandError(f"{path}, line {done + 1}: {exc}") from None
    if not rows:
        raise CommandError(f"{path} holds no rows")
    for row, line in zip(rows, lines):
        if len(row) != len(rows[0]):
            raise CommandError(f"{path}, line {line}: {len(row)} columns, expected {len(rows[0])}")
    if not _is_header(rows[0], rows[1] if len(rows) > 1 else None):
        return None, rows, lines
    if len(rows) < 2:
        raise CommandError(f"{path} holds a header line and no data rows")
    return [cell.strip() for cell in rows[0]], rows[1:], lines[1:]


def _numbers(rows, lines, path: str) -> np.ndarray:
    try:
        values = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError:
        line, cell = next(
            (line, cell) for row, line in zip(rows, lines) for cell in row if not _is_number(cell)
        )
        raise CommandError(f"{path}, line {line}: {cell.strip()!r} is not a number") from None
    if not np.isfinite(values).all():
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise CommandError(f"{path}, line {lines[row]}: NaN or infinity")
    return values


def load_csv(path: str, label_column: str):
    """X (float64), y (class indices), class names, from a CSV file."""
    header, rows, lines = read_csv(path)
    width = len(rows[0])
    if width < 2:
        raise CommandError(
            f"{path} needs at least one feature column and a label column, separated by commas"
        )
    if header and label_column.strip() in header:
        col = header.index(label_column.strip())
    else:
        try:
            col = int(label_column)
        except ValueError:
            where = "" if header else " (it has no header line)"
            raise UsageError(
                f"--label-column {label_column!r}: no such column in {path}{where}"
            ) from None
        if not -width <= col < width:
            raise UsageError(f"--label-column {col}: {path} has {width} columns")
        col %= width
    labels = [row[col].strip() for row in rows]
    if "" in labels:
        raise CommandError(f"{path}, line {lines[labels.index('')]}: no label")
    X = _numbers([row[:col] + row[col + 1 :] for row in rows], lines, path)
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise CommandError(f"{path}: the label column holds a single class")
    return X, y, [str(c) for c in classes]


def standardize_into_first_layer(net: Sequential, mean: np.ndarray, std: np.ndarray) -> None:
    """A network trained on (x − mean)/std, rewritten to take x itself:
    ((x − μ)/σ)·W + b = x·(W/σ) + (b − (μ/σ)·W), exactly, in the first layer."""
    first = net.layers[0]
    W = first.W.astype(np.float64) / std[:, None]
    b = first.b.astype(np.float64) - (mean / std) @ first.W.astype(np.float64)
    first.W, first.b = W, b


def _check_split(option: str, value: float, kept: int, held: int, what: str) -> None:
    if kept < 1 or held < 1:
        raise UsageError(
            f"{option} {value:g} leaves {kept} training and {held} {what} rows of {kept + held}"
        )


def _network(sizes, activation: str, args) -> Sequential:
    """The classifier with these layer sizes; one that cannot fit in memory
    is a bad --hidden."""
    n_weights = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    try:
        if n_weights * 8 > sys.maxsize:  # more bytes than an array can have
            raise MemoryError
        layers: list[Dense | Dropout] = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers.append(Dense(a, b, activation=activation))
            if args.dropout:
                layers.append(Dropout(args.dropout))
        layers.append(Dense(sizes[-2], sizes[-1], activation="softmax"))
        return Sequential(*layers, loss="cross_entropy", dtype=args.dtype, seed=args.seed)
    except MemoryError:
        raise UsageError(
            f"--hidden {' '.join(map(str, sizes[1:-1]))}: {n_weights:,} "
            f"weights do not fit in memory"
        ) from None


def _train(args) -> int:
    if args.momentum is not None and args.optimizer != "sgd":
        raise UsageError(f"--momentum applies to --optimizer sgd, not {args.optimizer}")
    kind = args.data if args.data in ("digits", "xor", "spirals") else "csv"
    hidden, act, epochs, lr = DEFAULTS[kind]
    hidden = args.hidden if args.hidden is not None else hidden
    act = args.activation or act
    epochs = args.epochs or epochs
    classes = None
    if kind == "digits":
        X_train, X_test, y_train, y_test = datasets.load_digits(
            return_split=True, test_size=args.test_size, seed=args.seed, scale=None
        )
        source = "digits (8×8 handwritten, 1,797 samples, embedded)"
    elif kind == "spirals":
        X, y = datasets.make_spirals(400, seed=args.seed)
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=args.test_size, seed=args.seed
        )
        source = "two spirals (400 points, seeded)"
    elif kind == "xor":
        X_train, y_train = datasets.truth_table("xor")
        X_test, y_test = X_train, y_train
        source = "XOR truth table (4 rows; tested on the same rows)"
    else:
        X, y, classes = load_csv(args.data, args.label_column)
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=args.test_size, seed=args.seed, stratify=np.bincount(y).min() >= 2
        )
        source = f"{args.data} ({len(X)} rows, {X.shape[1]} features, {len(classes)} classes)"
    if kind != "xor":
        _check_split("--test-size", args.test_size, len(X_train), len(X_test), "test")
    if args.validation_split:
        held = int(round(args.validation_split * len(X_train)))
        _check_split(
            "--validation-split", args.validation_split, len(X_train) - held, held, "validation"
        )
    # Standardise with the training rows; folded into the first layer afterwards.
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1
    if kind == "xor":
        mean, std = np.zeros(X_train.shape[1]), np.ones(X_train.shape[1])
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    net = _network([X_train.shape[1], *hidden, max(n_classes, 2)], act, args)
    net.classes = classes
    optimizer: _optimizers.Optimizer
    if args.optimizer == "sgd":
        optimizer = _optimizers.SGD(args.lr or lr, momentum=args.momentum or 0.0)
    else:
        optimizer = _optimizers.get(args.optimizer, args.lr)
    if not args.quiet:
        print(f"data: {source}; {len(X_train)} training rows, {len(X_test)} test rows")
        print(net.summary())
        print(
            f"optimizer: {optimizer}; batch size {args.batch_size}, {epochs} epochs, "
            f"seed {args.seed}"
        )
    start = time.perf_counter()
    history = net.fit(
        (X_train - mean) / std,
        y_train,
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer=optimizer,
        validation_split=args.validation_split or 0.0,
        early_stopping=args.early_stopping,
        patience=args.patience,
        checkpoint=args.checkpoint,
    )
    seconds = time.perf_counter() - start
    standardize_into_first_layer(net, mean, std)
    if not args.quiet:
        width = len(str(epochs))
        every = max(1, len(history.epoch) // 30)
        for i, epoch in enumerate(history.epoch):
            if epoch % every == 0 or epoch in (1, history.epoch[-1]):
                extra = "".join(
                    f"  {k} {history.history[k][i]:.6f}"
                    for k in ("val_loss", "val_accuracy")
                    if k in history.history
                )
                print(
                    f"epoch {epoch:>{width}}/{epochs}  loss {history.history['loss'][i]:.6f}{extra}"
                )
    train_acc = net.evaluate(X_train, y_train)["accuracy"]
    result = net.evaluate(X_test, y_test)
    print(
        f"trained in {seconds * 1e3:.1f} ms; train accuracy {train_acc:.4f}; "
        f"test loss {result['loss']:.4f}, test accuracy {result['accuracy']:.4f}"
    )
    if args.save:
        try:
            print(f"saved {net.save(args.save)}")
        except OSError as exc:
            raise CommandError(f"cannot write {args.save}: {exc.strerror or exc}") from None
    return EXIT_OK


def _predictions(net: Sequential, X: np.ndarray, model: str) -> np.ndarray:
    """What the model predicts for each row: a class name (the output unit
    with the highest output), or the label or values of net.predict."""
    names = net.classes
    if names is None:
        return np.atleast_1d(net.predict(X))
    if net.n_outputs == 1 and net.loss.code == _losses.BINARY_CROSS_ENTROPY:
        return np.asarray(names)[np.atleast_1d(net.predict(X))]  # label 0 or 1
    if net.n_outputs < 2 or net.loss.code == _losses.BINARY_CROSS_ENTROPY:
        raise CommandError(
            f"{model}: class names label a model with one output unit per "
            f"class (cross_entropy or mse) or one sigmoid unit, not a "
            f"{net.loss.name} model with {net.n_outputs}; use --proba to "
            "print its outputs"
        )
    labels = (
        net.predict(X)
        if net.is_classifier  # cross_entropy's own labels
        else _ops.labels(_losses.CROSS_ENTROPY, net.predict_proba(X))
    )  # mse: the same rule
    return np.asarray(names)[np.atleast_1d(labels)]


def _text(value) -> str:
    return f"{value:.6g}" if isinstance(value, (float, np.floating)) else str(value)


def _predict(args) -> int:
    net = _load(args.model)
    _, rows, lines = read_csv(args.data)
    if len(rows[0]) == net.n_inputs + 1:  # a labelled file: drop the last column
        rows = [row[:-1] for row in rows]
    X = _numbers(rows, lines, args.data)
    if X.shape[1] != net.n_inputs:
        raise CommandError(
            f"{args.data} has {X.shape[1]} feature columns; the model takes {net.n_inputs}"
        )
    values = net.predict_proba(X) if args.proba else _predictions(net, X, args.model)
    for row in values:
        sys.stdout.write((",".join(map(_text, row)) if np.ndim(row) else _text(row)) + "\n")
    return EXIT_OK


def _load(path: str) -> Sequential:
    try:
        return load(path)
    except ValueError as exc:
        raise CommandError(str(exc).replace("path:", f"{path}:", 1)) from None


def _export(args) -> int:
    net = _load(args.model)
    try:
        model = _onnx.export(net, args.output, args.opset, labels=args.labels)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # an option that does not suit the model: --labels, --opset
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    graph = model.graph
    outputs = ", ".join(f"{out.name} {_shape(out)}" for out in graph.output)
    print(
        f"exported {args.output}: ONNX opset {model.opset_import[0].version}, "
        f"{net.dtype.name}, {graph.input[0].name} {_shape(graph.input[0])} -> {outputs}"
    )
    return EXIT_OK


def _shape(value_info) -> str:
    dims = value_info.type.tensor_type.shape.dim
    return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"


def _bench(bench_args) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "bench", "__main__.py")):
        for candidate in (os.getcwd(),):
            if os.path.isfile(os.path.join(candidate, "bench", "__main__.py")):
                root = candidate
                break
        else:
            raise CommandError(
                "bench/ ships with the source repository: run "
                "`backprop bench` from a checkout of it"
            )
    return subprocess.call([sys.executable, "-m", "bench", *bench_args], cwd=root)


def _info(args) -> int:
    import platform

    import scipy

    blas = blas_info()
    print(f"backprop {__version__} ({os.path.dirname(os.path.abspath(__file__))})")
    print(
        f"python {platform.python_version()} ({platform.machine()}), "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )
    print(
        "compiled core: backprop._ops, backprop._engine, backprop._codes "
        "(Cython, float32 and float64)"
    )
    builds = kernel_builds()
    others = ", ".join(f"{b}{'' if ok else ' (not on this CPU)'}" for b, ok in builds.items())
    print(f"kernels: {kernels_in_use()} ({ENV}={os.environ.get(ENV, 'unset')}; builds: {others})")
    print(f"split steps: {split_mode()} ({SPLIT_ENV}={os.environ.get(SPLIT_ENV, 'unset')})")
    print(f"cut steps: {cut_mode()} ({CUT_ENV}={os.environ.get(CUT_ENV, 'unset')})")
    print(f"BLAS: {blas['config']} ({blas['library'] or 'not found'})")
    print(
        f"BLAS threads: {blas['threads']} (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; cores {os.cpu_count()})"
    )
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"backprop: warning: {message}", file=sys.stderr)


def _run(argv) -> int:
    if argv[:1] == ["bench"]:  # everything after it belongs to python -m bench
        return _bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return {"train": _train, "predict": _predict, "export": _export, "info": _info}[args.command](
        args
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _run(argv)
    except CommandError as exc:
        print(f"backprop: error: {exc}", file=sys.stderr)
        return exc.code
    except (ValueError, TypeError) as exc:
        print(f"backprop: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:
        print("backprop: error: out of memory", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("backprop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `backprop predict … | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
