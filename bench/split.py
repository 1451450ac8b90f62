"""A training step split across two threads against BLAS's own threading.
`python -m bench.split`

With two threads, fit can cut each step's batch into two shares, each
thread running the forward pass, the loss and the input gradients of its own
rows with one-thread products, and then its part of every layer's parameter
gradient over the whole batch (csrc/epoch.pxi, split_step); or it can run
the step on one thread and let BLAS split each large product
(csrc/threads.pxd).  This times one fit epoch both ways, interleaved, for
the workloads' networks (SGD and Adam) and a sweep of one hidden layer's
width and the batch, and prints which the mode "rule" (BACKPROP_SPLIT_STEPS=rule)
splits.  ratio = split / unsplit (< 1: splitting is faster).

Run it as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.split`.
"""

from __future__ import annotations

import json
import sys

from backprop import _engine, _kernels

from . import workloads as W
from .machine import cpu_model, gemm_peak, set_threads, timing_arguments
from .report import table
from .systems import BackpropFit
from .timing import fmt_time, interleave, timed

HEADERS = "network batch dtype optimizer split unsplit ratio best rule".split()
# (inputs, hidden, outputs) × batches of the sweep, float32, SGD
SWEEP_NETS = ((64, 64, 10), (64, 256, 10), (256, 256, 10), (784, 128, 10), (784, 512, 10))
SWEEP_BATCHES = (32, 64, 128, 256)


def networks(sweep: bool) -> list[W.Workload]:
    """The workloads (SGD, and the Adam ones with Adam), then the sweep."""
    nets = [wl for wl in W.WORKLOADS if wl.name != "W0"]
    nets += [W.adam(wl) for wl in W.ADAM_WORKLOADS]
    if sweep:
        for sizes in SWEEP_NETS:
            for batch in SWEEP_BATCHES:
                name = "-".join(map(str, sizes))
                nets.append(W.Workload(name, sizes, batch, "float32", n_batches=40))
    return nets


def _splits_by_rule(wl: W.Workload) -> bool:
    """Whether the mode "rule" splits this workload's steps."""
    with _kernels.split_steps("rule"):
        return bool(_engine.splits(wl.sizes, wl.batch))


def epoch_sampler(mode: str, system, model):
    def sample():
        with _kernels.split_steps(mode):
            return timed(system.epoch, model)

    return sample


def measure(wl: W.Workload, reps: int, settle: float) -> dict:
    X, y = W.make_data(wl, wl.rows())
    system = BackpropFit()
    model = system.build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype))
    stats = interleave(
        {
            "split": epoch_sampler("always", system, model),
            "unsplit": epoch_sampler("never", system, model),
        },
        reps,
        warmup=1,
        settle=settle,
    )
    steps = max(1, wl.rows() // wl.batch)
    return dict(
        network="-".join(map(str, wl.sizes)),
        name=wl.name,
        batch=wl.batch,
        dtype=wl.dtype,
        optimizer=wl.optimizer,
        split=stats["split"].median / steps,
        unsplit=stats["unsplit"].median / steps,
        split_spread=stats["split"].spread / steps,
        unsplit_spread=stats["unsplit"].spread / steps,
        ratio=stats["split"].median / stats["unsplit"].median,
        best=stats["split"].min / stats["unsplit"].min,
        rule=_splits_by_rule(wl),
    )


def main(argv=None) -> int:
    p = timing_arguments("split", __doc__, reps=7, threads=2)
    p.add_argument("--no-sweep", action="store_true", help="the workloads only")
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds of pause before each epoch (default 0: epochs back to back, as in one "
        "fit of many epochs; python -m bench pauses 0.2 s, which lets every thread go idle)",
    )
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    peak = {dtype: gemm_peak(dtype) for dtype in ("float32", "float64")}
    results, rows = [], []
    for wl in networks(not args.no_sweep):
        r = measure(wl, args.reps, args.settle)
        results.append(r)
        rows.append(
            [
                r["name"] if r["name"].startswith("W") else r["network"],
                str(r["batch"]),
                r["dtype"][-2:],
                r["optimizer"],
                fmt_time(r["split"], r["split_spread"]),
                fmt_time(r["unsplit"], r["unsplit_spread"]),
                f"{r['ratio']:.2f}",
                f"{r['best']:.2f}",
                "split" if r["rule"] else "unsplit",
            ]
        )
        print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    table(
        f"Split steps against BLAS threading: {cpu_model()}, {args.threads} threads, "
        f"GEMM peak {peak['float32'] / 1e9:.0f} / {peak['float64'] / 1e9:.0f} GFLOP/s "
        f"(float32 / float64), kernels {_kernels.kernels_in_use()}",
        HEADERS,
        rows,
        [
            f"time per step of fit (median of the interleaved epochs, {args.settle} s pause "
            "before each)",
            "ratio = split / unsplit (< 1: splitting is faster); best = the same for the fastest",
        ],
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "peak": peak, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
