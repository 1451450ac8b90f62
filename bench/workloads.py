"""The workloads: network sizes, batch, dtype and the random data they train on.

Each workload is a multilayer perceptron trained by plain mini-batch SGD:
ReLU hidden layers with a softmax + cross-entropy output, except W0 (XOR),
which has a tanh hidden layer and a sigmoid output with the mean squared error
C = 1/(2n) Σ‖y − a‖².  The data is random from a fixed seed (XOR's four rows
repeated), with enough rows for ≥ 50 batches an epoch on the small networks
and fewer on W4/W5, so that one measurement (one epoch) stays well under a
couple of seconds.  `init_params` draws one set of starting weights that
every system given weights from outside (backprop, numpy, torch, jax)
starts from.

The Adam rows (`ADAM_WORKLOADS`, each trained by SGD and by `adam(wl)`)
are W2, W3 and W4, and W4 at batch 32; Adam's settings are `ADAM` with
the rate `ADAM_LR`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "Workload",
    "WORKLOADS",
    "ADAM",
    "ADAM_LR",
    "ADAM_WORKLOADS",
    "adam",
    "adam_workloads",
    "get",
    "make_data",
    "init_params",
    "batches",
]

ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}  # (every system's Adam)
ADAM_LR = 1e-3


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]  # input, hidden…, output
    batch: int
    dtype: str  # 'float32' or 'float64'
    n_batches: int  # batches per epoch in a full run
    lr: float = 0.01
    hidden: str = "relu"  # 'relu' or 'tanh'
    output: str = "softmax"  # 'softmax' (cross-entropy) or 'sigmoid' (MSE)
    optimizer: str = "sgd"  # 'sgd' (at lr) or 'adam' (ADAM, at lr)
    note: str = field(default="", compare=False)

    @property
    def layers(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def is_classifier(self) -> bool:
        return self.output == "softmax"

    @property
    def label(self) -> str:
        return f"{self.name} {'-'.join(map(str, self.sizes))} b{self.batch} f{self.dtype[-2:]}"

    @property
    def n_params(self) -> int:
        """Weights and biases of the network."""
        return sum(n_in * n_out + n_out for n_in, n_out in self.layers)

    def flops_per_step(self, rows: int | None = None) -> int:
        """Floating-point operations of one training step's matrix products:
        forward z = a @ W (2·B·n_in·n_out per layer), the weight gradient
        aᵀ @ δ (the same), and the input gradient δ @ Wᵀ (the same, for every
        layer but the first).  Elementwise passes are not counted."""
        rows = self.batch if rows is None else rows
        per_layer = [2 * rows * n_in * n_out for n_in, n_out in self.layers]
        return 2 * sum(per_layer) + sum(per_layer[1:])

    def rows(self, quick: bool = False) -> int:
        """Rows of training data: n_batches full batches (fewer when quick)."""
        return self.batch * (max(4, self.n_batches // 8) if quick else self.n_batches)


WORKLOADS = [
    Workload(
        "W0",
        (2, 4, 1),
        4,
        "float64",
        64,
        lr=0.5,
        hidden="tanh",
        output="sigmoid",
        note="XOR, the four rows repeated",
    ),
    Workload("W1", (64, 32, 10), 32, "float32", 64),
    Workload("W2", (64, 128, 64, 10), 64, "float32", 64),
    Workload("W3", (784, 256, 10), 128, "float32", 50),
    Workload("W4", (784, 1024, 1024, 10), 256, "float32", 12),
    Workload("W5", (784, 1024, 1024, 10), 256, "float64", 12),
]


ADAM_WORKLOADS = [
    WORKLOADS[2],
    WORKLOADS[3],
    WORKLOADS[4],
    Workload("W4b32", (784, 1024, 1024, 10), 32, "float32", 48, note="W4 at batch 32"),
]


def adam_workloads(names) -> list[Workload]:
    """The ADAM_WORKLOADS among the workloads named (W4 brings W4b32)."""
    return [wl for wl in ADAM_WORKLOADS if wl.name in names or wl.name[:2] in names]


def adam(wl: Workload) -> Workload:
    """The workload trained by Adam (ADAM, at ADAM_LR) instead of SGD."""
    return replace(wl, optimizer="adam", lr=ADAM_LR)


def get(name: str) -> Workload:
    for wl in WORKLOADS:
        if wl.name.lower() == name.strip().lower():
            return wl
    raise KeyError(f"unknown workload {name!r}; choose from {', '.join(w.name for w in WORKLOADS)}")


def make_data(wl: Workload, rows: int, seed: int = 0):
    """X (rows, n_in) of the workload's dtype and targets y: class labels
    (int64, rows) for classifiers, XOR's values (rows,) for W0."""
    if wl.output == "sigmoid":
        base_x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=wl.dtype)
        base_y = np.array([0, 1, 1, 0], dtype=wl.dtype)
        reps = -(-rows // 4)
        return np.tile(base_x, (reps, 1))[:rows].copy(), np.tile(base_y, reps)[:rows].copy()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, wl.sizes[0])).astype(wl.dtype)
    y = rng.integers(0, wl.sizes[-1], rows).astype(np.int64)
    return X, y


def init_params(sizes, hidden: str, dtype, seed: int = 0):
    """[(W (n_in, n_out), b (n_out,)), …]: He-uniform weights for ReLU
    layers, Glorot-uniform otherwise, zero biases."""
    rng = np.random.default_rng(seed)
    params = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        relu = hidden == "relu" and i < len(sizes) - 2
        limit = np.sqrt(6.0 / n_in) if relu else np.sqrt(6.0 / (n_in + n_out))
        W = rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype)
        params.append((W, np.zeros(n_out, dtype)))
    return params


def batches(X, y, batch: int) -> list:
    """[(X[i : i + batch], y[i : i + batch]), …]: the rows in order, sliced."""
    return [(X[i : i + batch], y[i : i + batch]) for i in range(0, X.shape[0], batch)]
