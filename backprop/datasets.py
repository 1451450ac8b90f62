"""Small data sets that ship with the package: no download, ever.

- `load_digits`: 1,797 handwritten digits, 8×8 pixels of 0–16 each, 10 classes
  (the UCI "Optical Recognition of Handwritten Digits" test set, E. Alpaydin
  and C. Kaynak, 1998, as bundled by scikit-learn; CC BY 4.0).
- `truth_table`: the four rows of AND, OR, NAND, NOR, XOR and XNOR.
- `make_spirals`: two interleaved spirals, a classic non-linear problem.
- `train_test_split`: a seeded, stratified split.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from ._validation import check_dtype, check_int, check_positive_float

__all__ = ["load_digits", "truth_table", "make_spirals", "train_test_split", "GATES"]


def load_digits(
    *,
    return_split: bool = False,
    test_size: float = 0.2,
    seed: int = 0,
    scale: str | None = "standard",
    dtype="float64",
):
    """The handwritten digits: X (1797, 64), y (1797,) with labels 0–9.

    scale: 'standard' (default) gives every pixel mean 0 and variance 1 —
    with the training rows' statistics when the data is split, so nothing of
    the test rows leaks into training; 'unit' divides by 16, into [0, 1];
    None keeps the raw counts 0–16.  With return_split=True, returns
    X_train, X_test, y_train, y_test from a stratified split holding out
    `test_size` of each class, fixed by `seed`.
    """
    dtype = check_dtype(dtype)
    if scale not in ("standard", "unit", None):
        raise ValueError(f"scale must be 'standard', 'unit' or None, got {scale!r}")
    with resources.files("backprop").joinpath("data/digits.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as data:
            X = data["images"].astype(np.float64)
            y = data["target"].astype(np.int64)
    if scale == "unit":
        X /= 16
    parts = train_test_split(X, y, test_size=test_size, seed=seed) if return_split else (X, X, y, y)
    if scale == "standard":
        mean, std = parts[0].mean(axis=0), parts[0].std(axis=0)
        std[std == 0] = 1  # pixels that are always blank stay 0
        parts = ((parts[0] - mean) / std, (parts[1] - mean) / std) + parts[2:]
    X_train, X_test, y_train, y_test = (
        p.astype(dtype) if p.dtype.kind == "f" else p for p in parts
    )
    if return_split:
        return X_train, X_test, y_train, y_test
    return X_train, y_train


def train_test_split(X, y, *, test_size: float = 0.2, seed: int = 0, stratify: bool = True):
    """X_train, X_test, y_train, y_test: a seeded split that holds out
    `test_size` (a fraction in (0, 1)) of the rows — of each class when
    `stratify` (y holding class labels)."""
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}"
        )
    test_size = check_positive_float(test_size, "test_size")
    if not test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(y.shape[0])]
    test = []
    for rows in groups:
        rows = rng.permutation(rows)
        test.append(rows[: int(round(test_size * rows.size))])
    test_rows = np.sort(np.concatenate(test))
    train_rows = np.setdiff1d(np.arange(y.shape[0]), test_rows)
    train_rows = rng.permutation(train_rows)
    return X[train_rows], X[test_rows], y[train_rows], y[test_rows]


GATES = {
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "nor": (1, 0, 0, 0),
    "xor": (0, 1, 1, 0),
    "xnor": (1, 0, 0, 1),
}


def truth_table(gate: str, dtype="float64"):
    """X (4, 2) with the inputs 00, 01, 10, 11 and y (4,) the gate's output
    (0 or 1) for each: 'and', 'or', 'nand', 'nor', 'xor' or 'xnor'."""
    if not isinstance(gate, str) or gate.lower() not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=check_dtype(dtype))
    return X, np.array(GATES[gate.lower()], dtype=np.int64)


def make_spirals(
    n_samples: int = 200, *, noise: float = 0.1, turns: float = 1.5, seed: int = 0, dtype="float64"
):
    """Two interleaved spirals in the plane: X (n_samples, 2), y (n_samples,)
    with labels 0 and 1 (half each, the odd one to class 0).  `noise` is the
    standard deviation of Gaussian jitter; `turns` how often each spiral
    winds around the centre."""
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    noise = check_positive_float(noise, "noise", allow_zero=True)
    turns = check_positive_float(turns, "turns")
    rng = np.random.default_rng(seed)
    n1 = n_samples // 2
    n0 = n_samples - n1
    points, labels = [], []
    for label, n in ((0, n0), (1, n1)):
        t = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2 * np.pi  # angle
        r = t / (turns * 2 * np.pi)  # radius in (0, 1]
        phase = label * np.pi
        points.append(
            np.column_stack([r * np.cos(t + phase), r * np.sin(t + phase)])
            + rng.normal(0.0, noise, (n, 2))
        )
        labels.append(np.full(n, label))
    X = np.concatenate(points).astype(check_dtype(dtype))
    y = np.concatenate(labels).astype(np.int64)
    order = rng.permutation(n_samples)
    return X[order], y[order]
