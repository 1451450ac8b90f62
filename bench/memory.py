"""Does backprop allocate inside a training step?  `python -m bench.memory`

A W1-sized network (64-32-10, batch 32, float32; `--workload W3` for
another) runs, after a warm-up that sizes its workspace:

- `train_step` on pre-sliced ready-made batches (float32 rows, int64 labels),
  100 and 10,000 calls;
- steps inside `fit`: 1 epoch of 100 batches, and 100 epochs of 100 batches
  (10,000 steps);
- one-row `predict` (x 1-D), 100 and 10,000 calls.

Each is run twice: once plain, for the RSS (/proc/self/statm) before and
after, and once under tracemalloc, for the growth of traced memory (what is
still allocated after the calls: a leak) and its peak above the start (the
largest transient allocation).  If nothing is allocated per step, 10,000
calls show the same peak as 100 and no growth; what `fit` does allocate is
once per call or epoch (the one-hot targets, the finiteness check, the
shuffled order).
"""

from __future__ import annotations

import argparse
import tracemalloc

import backprop as bp

from . import workloads as W
from .machine import rss_bytes
from .report import table
from .systems import BackpropFit


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def measure(fn) -> dict:
    """RSS before/after a plain run of fn, then traced growth and peak of a
    second run under tracemalloc."""
    before = rss_bytes()
    fn()
    after = rss_bytes()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fn()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "traced_growth": current - start,
        "traced_peak": peak - start,
        "rss_before": before,
        "rss_after": after,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="W1", help="network size (default W1)")
    args = p.parse_args(argv)
    if hasattr(bp, "set_num_threads"):
        bp.set_num_threads(1)
    wl = W.get(args.workload)
    X, y = W.make_data(wl, wl.batch * 100)
    m = BackpropFit().build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype))
    net, batches, x_row = m.net, m.batches, X[0].copy()

    def steps(n):
        def run():
            for i in range(n):
                xb, yb = batches[i % len(batches)]
                net.train_step(xb, yb, wl.lr)

        return run

    def fit(epochs):
        return lambda: net.fit(X, y, epochs=epochs, batch_size=wl.batch, lr=wl.lr)

    def predicts(n):
        def run():
            for _ in range(n):
                net.predict(x_row)

        return run

    phases = [
        ("train_step", 100, steps(100)),
        ("train_step", 10_000, steps(10_000)),
        ("fit (1 epoch)", 100, fit(1)),
        ("fit (100 epochs)", 10_000, fit(100)),
        ("predict one row", 100, predicts(100)),
        ("predict one row", 10_000, predicts(10_000)),
    ]
    for _, _, fn in phases:  # warm-up: workspace, caches, lazy imports
        fn()
    rows = []
    for name, calls, fn in phases:
        r = measure(fn)
        rows.append(
            [
                name,
                f"{calls:,}",
                _kib(r["traced_growth"]),
                _kib(r["traced_peak"]),
                _mib(r["rss_before"]),
                _mib(r["rss_after"]),
                _kib(r["rss_after"] - r["rss_before"]),
            ]
        )
    threads = "backprop.set_num_threads(1)" if hasattr(bp, "set_num_threads") else "default threads"
    table(
        f"backprop memory inside training and prediction: {wl.label}, {X.shape[0]} rows, {threads}",
        [
            "what",
            "steps/calls",
            "traced growth",
            "traced peak",
            "RSS before",
            "RSS after",
            "RSS growth",
        ],
        rows,
        [
            "traced growth: tracemalloc current after − before (memory kept: a leak if > 0)",
            "traced peak: tracemalloc peak − current before (largest transient allocation)",
            "RSS from /proc/self/statm around a separate, untraced run of the same calls",
        ],
    )


if __name__ == "__main__":
    main()
