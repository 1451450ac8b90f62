"""Training steps on two threads, the core's two ways, against BLAS's own
threading.  `python -m bench.split [--compare split|cut]`

With two threads, fit can cut each step's batch into two shares, each
thread running the forward pass, the loss and the input gradients of its own
rows with one-thread products, and then its part of every layer's parameter
gradient over the whole batch (csrc/epoch.pxi, split_step: --compare split,
the default); or cut each large layer's products by the columns of their
result, each thread taking half of each (cut steps: --compare cut); or run
the step on one thread and let BLAS split each large product
(csrc/threads.pxd).  This times fit epochs with the way asked for in its
mode "always" and with it "never", interleaved (a sample: as many
back-to-back epochs as take --min-time, 0.05 s as in python -m bench, so
that the wake of idle threads after the pause does not count as a step's
time; --min-time 0 takes one epoch a sample), for the workloads' networks
(SGD and Adam) and a sweep of one hidden layer's width and the batch, and
prints whether the mode "rule" (BACKPROP_SPLIT_STEPS=rule, or
BACKPROP_CUT_STEPS=rule: the default) takes it.  ratio = on / off (< 1:
the two threads' way is faster).

Run it as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.split`.
"""

from __future__ import annotations

import contextlib
import json
import sys

from backprop import _engine, _kernels

from . import workloads as W
from .machine import cpu_model, gemm_peak, set_threads, timing_arguments
from .report import table
from .systems import BackpropFit
from .timing import autorange, fmt_time, interleave, per_unit, repeat

HEADERS = "network batch dtype optimizer on off ratio best rule".split()
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


def _by_rule(compare: str, wl: W.Workload) -> bool:
    """Whether the mode "rule" takes this workload's steps the way compared."""
    if compare == "split":
        with _kernels.split_steps("rule"):
            return bool(_engine.splits(wl.sizes, wl.batch))
    with _kernels.split_steps("never"), _kernels.cut_steps("rule"):
        return bool(_engine.cuts(wl.sizes, wl.batch))


@contextlib.contextmanager
def _mode(compare: str, mode: str):
    """The way compared in this mode ("always" or "never"), the other off."""
    if compare == "split":
        with _kernels.split_steps(mode):
            yield
    else:
        with _kernels.split_steps("never"), _kernels.cut_steps(mode):
            yield


def epochs_per_sample(compare: str, system, model, min_time: float) -> int:
    """Back-to-back epochs a sample of either mode takes: as many as take
    min_time in the slower mode (autorange; one when min_time is 0), so that
    both modes' samples hold the same epochs."""
    if min_time <= 0:
        return 1
    counts = []
    for mode in ("always", "never"):
        with _mode(compare, mode):
            counts.append(autorange(lambda: system.epoch(model), min_time))
    return max(counts)


def epoch_sampler(compare: str, mode: str, system, model, k: int):
    """A sampler: seconds per epoch over k back-to-back epochs in the mode."""

    def sample():
        with _mode(compare, mode):
            return per_unit(repeat(lambda: system.epoch(model), k), k)()

    return sample


def measure(
    wl: W.Workload, reps: int, settle: float, compare: str = "split", min_time: float = 0.05
) -> dict:
    X, y = W.make_data(wl, wl.rows())
    system = BackpropFit()
    model = system.build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype))
    k = epochs_per_sample(compare, system, model, min_time)
    stats = interleave(
        {
            "on": epoch_sampler(compare, "always", system, model, k),
            "off": epoch_sampler(compare, "never", system, model, k),
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
        on=stats["on"].median / steps,
        off=stats["off"].median / steps,
        on_spread=stats["on"].spread / steps,
        off_spread=stats["off"].spread / steps,
        ratio=stats["on"].median / stats["off"].median,
        best=stats["on"].min / stats["off"].min,
        rule=_by_rule(compare, wl),
    )


def main(argv=None) -> int:
    p = timing_arguments("split", __doc__, reps=7, threads=2)
    p.add_argument("--no-sweep", action="store_true", help="the workloads only")
    p.add_argument(
        "--compare",
        choices=("split", "cut"),
        default="split",
        help="split steps (the batch in two shares) or cut steps (each large product in two)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds of pause before each epoch (default 0: epochs back to back, as in one "
        "fit of many epochs; python -m bench pauses 0.2 s, which lets every thread go idle)",
    )
    p.add_argument(
        "--min-time",
        type=float,
        default=0.05,
        help="seconds a sample lasts at least, in back-to-back epochs (default 0.05, as "
        "python -m bench; 0: one epoch a sample)",
    )
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    if args.min_time < 0 or args.settle < 0:
        p.error("--min-time and --settle must be at least 0")
    threads = set_threads(args.threads)
    peak = {dtype: gemm_peak(dtype) for dtype in ("float32", "float64")}
    results, rows = [], []
    for wl in networks(not args.no_sweep):
        r = measure(wl, args.reps, args.settle, args.compare, args.min_time)
        results.append(r)
        rows.append(
            [
                r["name"] if r["name"].startswith("W") else r["network"],
                str(r["batch"]),
                r["dtype"][-2:],
                r["optimizer"],
                fmt_time(r["on"], r["on_spread"]),
                fmt_time(r["off"], r["off_spread"]),
                f"{r['ratio']:.2f}",
                f"{r['best']:.2f}",
                args.compare if r["rule"] else "–",
            ]
        )
        print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    sample = f"back-to-back epochs for ≥ {args.min_time} s" if args.min_time else "one epoch"
    table(
        f"{args.compare.capitalize()} steps against BLAS threading: {cpu_model()}, "
        f"{args.threads} threads, "
        f"GEMM peak {peak['float32'] / 1e9:.0f} / {peak['float64'] / 1e9:.0f} GFLOP/s "
        f"(float32 / float64), kernels {_kernels.kernels_in_use()}",
        HEADERS,
        rows,
        [
            f"time per step of fit (median of the interleaved samples, each {sample}, "
            + (f"after a {args.settle} s pause)" if args.settle else "no pause between)"),
            f"on = {args.compare} steps always, off = never; ratio = on / off (< 1: {args.compare} "
            "steps are faster); best = the same for the fastest; rule: what the default takes",
        ],
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"compare": args.compare, "threads": threads, "peak": peak, "results": results},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
