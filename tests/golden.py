"""Golden check: train a matrix of configurations and write, or compare,
their final parameters and loss curves, bit for bit.

It compares two builds of backprop on one machine (before and after a
change that must not change results): every activation, loss, optimizer
and dtype; with and without sample and class weights; data in memory,
memory-mapped, chunked and streamed; shuffle on and off; fit split across
calls, partial_fit, train_step and validation.  It is not a suite test with
stored numbers: another BLAS kernel or thread count rounds differently.

    python tests/golden.py write before.npz      # with the old build installed
    python tests/golden.py compare before.npz    # with the new one: exit 1 on any difference
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

import backprop as bp

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
HEADS = {
    "mse": ("identity", 3),
    "binary_cross_entropy": ("sigmoid", 1),
    "binary_cross_entropy_multi": ("sigmoid", 3),
    "cross_entropy": ("softmax", 3),
}
OPTIMIZERS = {
    "sgd": lambda: bp.SGD(0.05),
    "sgd_momentum": lambda: bp.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: bp.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd_l2_decay_clip": lambda: bp.SGD(0.05, l2=1e-3, weight_decay=1e-3, clip_norm=1.0),
    "adam": lambda: bp.Adam(0.01),
    "adamw": lambda: bp.AdamW(0.01),
    "rmsprop": lambda: bp.RMSProp(0.01),
    "adagrad": lambda: bp.AdaGrad(0.05),
}


def problem(n=200, n_in=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    labels = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, labels, rng.random(n) + 0.5


def network(hidden, head, dtype, seed=0):
    out_act, n_out = HEADS[head]
    loss = "binary_cross_entropy" if head.startswith("binary") else head
    return bp.Sequential(
        bp.Dense(6, 8, activation=hidden),
        bp.Dense(8, 5, activation=hidden),
        bp.Dense(5, n_out, activation=out_act),
        loss=loss,
        dtype=dtype,
        seed=seed,
    )


def targets(head, labels, X):
    if head == "mse":
        return np.stack([X[:, 0], X[:, 1] ** 2, labels.astype(float)], axis=1)
    if head == "binary_cross_entropy":
        return (labels > 0).astype(np.int64)
    if head == "binary_cross_entropy_multi":
        return np.stack([labels > 0, labels > 1, X[:, 4] > 0], axis=1).astype(float)
    return labels


def runs(folder: Path):
    """(name, function giving (params, losses)) for every configuration."""
    X, labels, weights = problem()

    def fitted(net, *args, **kwargs):
        history = net.fit(*args, **kwargs)
        return net.params, history.history["loss"]

    for hidden, head, dtype in itertools.product(HIDDEN, HEADS, ["float32", "float64"]):
        y = targets(head, labels, X)
        yield (
            f"net/{hidden}/{head}/{dtype}",
            lambda h=hidden, k=head, d=dtype, y=y: fitted(
                network(h, k, d), X, y, epochs=4, batch_size=16, lr=0.05
            ),
        )
    for (name, make), dtype in itertools.product(OPTIMIZERS.items(), ["float32", "float64"]):
        yield (
            f"optimizer/{name}/{dtype}",
            lambda m=make, d=dtype: fitted(
                network("tanh", "cross_entropy", d),
                X,
                labels,
                epochs=4,
                batch_size=16,
                optimizer=m(),
            ),
        )
    X_file = folder / "X.npy"
    np.save(X_file, X)
    for source, shuffle, weighted, dtype in itertools.product(
        ["memory", "memmap", "chunked", "stream"],
        [False, True],
        [False, True],
        ["float32", "float64"],
    ):

        def run(source=source, shuffle=shuffle, weighted=weighted, dtype=dtype):
            net = network("relu", "cross_entropy", dtype)
            w = weights if weighted else None
            if source == "stream":
                batches = [
                    (X[i : i + 40], labels[i : i + 40]) + ((w[i : i + 40],) if weighted else ())
                    for i in range(0, len(X), 40)
                ]
                return fitted(
                    net, batches, epochs=3, batch_size=16, shuffle=shuffle, optimizer=bp.Adam(0.01)
                )
            data = np.load(X_file, mmap_mode="r") if source == "memmap" else X
            return fitted(
                net,
                data,
                labels,
                epochs=3,
                batch_size=16,
                shuffle=shuffle,
                sample_weight=w,
                optimizer=bp.Adam(0.01),
                chunk_size=48 if source == "chunked" else None,
            )

        yield f"source/{source}/shuffle={shuffle}/weights={weighted}/{dtype}", run

    def split_calls():
        net = network("tanh", "cross_entropy", "float64")
        a = net.fit(X, labels, epochs=2, optimizer=bp.Adam(0.01)).history["loss"]
        b = net.fit(X, labels, epochs=2).history["loss"]
        return net.params, a + b

    def partial():
        net = network("tanh", "cross_entropy", "float32")
        return net.params, [
            net.partial_fit(X[i : i + 50], labels[i : i + 50]) for i in range(0, 200, 50)
        ]

    def steps():
        net = network("sigmoid", "mse", "float64")
        net.optimizer = bp.SGD(0.05, momentum=0.5)
        Y = targets("mse", labels, X)
        return net.params, [net.train_step(X[i : i + 20], Y[i : i + 20]) for i in range(0, 200, 20)]

    def validated():
        net = network("relu", "cross_entropy", "float32")
        history = net.fit(
            X,
            labels,
            epochs=6,
            validation_split=0.25,
            early_stopping=True,
            patience=2,
            class_weight="balanced",
            optimizer=bp.RMSProp(0.01),
            callbacks=[bp.callbacks.ExponentialDecay(0.9)],
        )
        return net.params, history.history["loss"] + history.history["val_loss"]

    yield "calls/split", split_calls
    yield "calls/partial_fit", partial
    yield "calls/train_step", steps
    yield "calls/validation", validated


def collect() -> dict[str, np.ndarray]:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, run in runs(Path(folder)):
            params, losses = run()
            results[name + "/params"] = np.array(params)
            results[name + "/losses"] = np.array(losses, dtype=np.float64)
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("write", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    results = collect()
    if argv[0] == "write":
        np.savez(argv[1], **results)
        print(f"wrote {len(results) // 2} configurations to {argv[1]}")
        return 0
    before = dict(np.load(argv[1]))
    differ = sorted(
        k
        for k in set(before) | set(results)
        if k not in before
        or k not in results
        or before[k].dtype != results[k].dtype
        or before[k].shape != results[k].shape
        or not np.array_equal(before[k], results[k], equal_nan=True)
    )
    for key in differ:
        print(f"differs: {key}")
    print(f"{len(results) // 2} configurations, {len(differ)} arrays differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
