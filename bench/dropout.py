"""What dropout's mask costs in training: `python -m bench.dropout`

One epoch of `fit` on the W3 workload (784-256-10, ReLU and softmax, batch
128, float32, plain SGD, shuffled; 50 batches of random data), as it is and
with Dropout(rate) after the hidden layer, interleaved (timing.interleave).
With dropout each step also draws the mask of its 128 × 256 hidden units
(the counter-based stream of csrc/shuffle.pxd), multiplies it in after the
activation and again into the gradient; predict pays nothing.  The table
gives the median time of an epoch and of a step, and the cost of the mask
against the epoch without it.
"""

from __future__ import annotations

import backprop as bp

from . import workloads as W
from .machine import set_threads, timing_arguments
from .report import table
from .timing import fmt_time, interleave, timed


def network(wl: W.Workload, rate: float) -> bp.Sequential:
    """The workload's network, with Dropout(rate) after each hidden layer."""
    stack: list = []
    for i, (n_in, n_out) in enumerate(wl.layers):
        last = i == len(wl.layers) - 1
        stack.append(bp.Dense(n_in, n_out, wl.output if last else wl.hidden, dtype=wl.dtype))
        if rate and not last:
            stack.append(bp.Dropout(rate))
    return bp.Sequential(*stack, loss="cross_entropy", dtype=wl.dtype, seed=0)


def epoch_of(wl: W.Workload, rate: float, X, y):
    """A sampler: one epoch of fit on (X, y), its time in seconds."""
    net = network(wl, rate)
    net.fit(X[: wl.batch], y[: wl.batch], batch_size=wl.batch, lr=wl.lr)  # (the workspace)
    return lambda: timed(lambda: net.fit(X, y, batch_size=wl.batch, lr=wl.lr))


def main(argv=None) -> dict:
    p = timing_arguments("dropout", __doc__, reps=21, threads=1)  # (--quick: 6 batches, twice)
    p.add_argument("--rates", default="0.2,0.5", help="the dropout rates timed beside none")
    p.add_argument("--workload", default="W3")
    args = p.parse_args(argv)
    set_threads(args.threads)
    wl = W.get(args.workload)
    X, y = W.make_data(wl, wl.rows(args.quick))
    batches = X.shape[0] // wl.batch
    rates = [0.0] + [float(r) for r in args.rates.split(",")]
    names = {rate: "none" if rate == 0 else f"Dropout({rate:g})" for rate in rates}
    stats = interleave(
        {names[rate]: epoch_of(wl, rate, X, y) for rate in rates},
        2 if args.quick else args.reps,
        settle=0.1,
    )
    base = stats["none"].median
    rows = [
        [
            name,
            fmt_time(stats[name].median, stats[name].spread),
            fmt_time(stats[name].median / batches),
            "–" if rate == 0 else f"{stats[name].median / base - 1:+.1%}",
        ]
        for rate, name in names.items()
    ]
    table(
        f"One epoch of fit on {wl.label} ({batches} batches, plain SGD, shuffled; "
        f"{args.threads} BLAS thread{'s' * (args.threads != 1)}, median ±½IQR of "
        f"{2 if args.quick else args.reps})",
        ["dropout", "epoch", "step", "the mask's cost"],
        rows,
        ["the mask's cost: the epoch's time against the network without dropout"],
    )
    return {name: stats[name].to_dict() for name in stats}


if __name__ == "__main__":
    main()
