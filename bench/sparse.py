"""Training on a sparse X: rows gathered dense, or sparse products?  `python -m bench.sparse`

fit on a scipy.sparse CSR matrix takes each batch's rows from it in the
core, in one of two ways: gather them into the dense batch buffer (zero the
rows, scatter the nonzeros) and run the first layer's products in BLAS as for
dense data, or run the first layer's forward product and weight gradient on
the nonzeros alone (backprop._sources.SPARSE_DENSITY picks by the matrix's
density).  Both are timed here, one epoch of `fit` each (shuffled, plain SGD),
on 20,000 rows × 5,000 features at several densities with a 100-unit ReLU
layer and 10 softmax outputs, batch 200, float32 and float64, interleaved
(timing.interleave), beside fit on the dense X.toarray() and, when installed,
scikit-learn's MLPClassifier (one epoch of sgd on the same sparse matrix).
"""

from __future__ import annotations

import warnings

import numpy as np

import backprop as bp
from backprop import _sources

from .machine import optional, set_threads, timing_arguments
from .report import table
from .timing import fmt_time, interleave, timed

ROWS, FEATURES, HIDDEN, CLASSES, BATCH = 20_000, 5_000, 100, 10, 200
# scikit-learn's MLP trained as backprop is: one epoch of plain SGD
SKLEARN = dict(solver="sgd", momentum=0, alpha=0, learning_rate_init=0.01)
SKLEARN.update(batch_size=BATCH, max_iter=1, random_state=0)


def matrix(rows: int, density: float, dtype, seed: int = 0):
    """A (rows, FEATURES) CSR matrix with `density` of its entries stored,
    at random columns (a few of them twice: they add up), and class labels."""
    sparse = __import__("scipy.sparse", fromlist=["_"])
    rng = np.random.default_rng(seed)
    per_row = max(1, round(density * FEATURES))
    indices = np.sort(rng.integers(0, FEATURES, (rows, per_row)), 1)
    indptr = np.arange(0, rows * per_row + 1, per_row)
    data = rng.random(rows * per_row).astype(dtype)
    X = sparse.csr_matrix((data, indices.ravel(), indptr), shape=(rows, FEATURES))
    return X, rng.integers(0, CLASSES, rows)


def network(dtype) -> bp.Sequential:
    return bp.Sequential(
        bp.Dense(FEATURES, HIDDEN, "relu"),
        bp.Dense(HIDDEN, CLASSES, "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )


def backprop_epoch(X, y, dtype, gather: bool | None):
    """One epoch of fit on X, its batches gathered dense (gather True), by
    sparse products (False) or as fit chooses (None)."""
    net = network(dtype)
    net.fit(X[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, lr=0.01)  # (the workspace)

    def run():
        kept = _sources.SPARSE_DENSITY
        if gather is not None:
            _sources.SPARSE_DENSITY = 0.0 if gather else 2.0
        try:
            net.fit(X, y, epochs=1, batch_size=BATCH, lr=0.01)
        finally:
            _sources.SPARSE_DENSITY = kept

    return lambda: timed(run)


def sklearn_epoch(X, y):
    neural_network = optional("sklearn.neural_network")
    if neural_network is None:
        return None
    exceptions = __import__("sklearn.exceptions", fromlist=["_"])

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            neural_network.MLPClassifier((HIDDEN,), **SKLEARN).fit(X, y)

    return lambda: timed(run)


def main(argv=None) -> None:
    p = timing_arguments("sparse", __doc__, reps=3, threads=2)  # (--quick: 2,000 rows, once)
    p.add_argument("--densities", default="0.001,0.01,0.05,0.1,0.2", help="fractions stored")
    p.add_argument("--dtypes", default="float32,float64")
    args = p.parse_args(argv)
    set_threads(args.threads)
    rows_n = 2_000 if args.quick else ROWS
    reps = 1 if args.quick else args.reps
    rows = []
    for dtype in args.dtypes.split(","):
        for density in (float(d) for d in args.densities.split(",")):
            X, y = matrix(rows_n, density, dtype)
            samplers = {
                "gather": backprop_epoch(X, y, dtype, True),
                "sparse": backprop_epoch(X, y, dtype, False),
                "dense X": backprop_epoch(X.toarray(), y, dtype, None),
            }
            peer = sklearn_epoch(X, y) if dtype == "float64" else None
            if peer is not None:
                samplers["sklearn"] = peer
            stats = interleave(samplers, reps, settle=0.2)
            gather, sparse = stats["gather"].median, stats["sparse"].median
            rows.append(
                [
                    dtype,
                    f"{density:g}",
                    *(fmt_time(stats[k].median, stats[k].spread) for k in samplers),
                    *([] if peer is not None else ["–"]),
                    f"{gather / sparse:.2f}×",
                    "gather" if density >= _sources.SPARSE_DENSITY else "sparse",
                ]
            )
    table(
        f"One epoch of fit on a sparse X ({rows_n:,} × {FEATURES:,}, {FEATURES}-{HIDDEN}-"
        f"{CLASSES} relu/softmax, batch {BATCH}, {args.threads} threads, median ±½IQR of {reps})",
        [
            "dtype",
            "density",
            "gather",
            "sparse",
            "dense X",
            "sklearn",
            "gather/sparse",
            "fit takes",
        ],
        rows,
        [
            "gather: each batch's rows gathered dense, then BLAS; sparse: the first layer's",
            "products on the nonzeros; dense X: fit on X.toarray(); sklearn: MLPClassifier,",
            "sgd, one epoch on the same CSR matrix (float64 only); fit takes: what fit chooses",
        ],
    )


if __name__ == "__main__":
    main()
