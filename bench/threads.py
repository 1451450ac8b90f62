"""Do two trainings in two Python threads run in parallel?  `python -m bench.threads`

backprop's `fit` runs each epoch in compiled code with the GIL released, so
two Python threads, each training its own network, should take little more
than the longer of the two, where two trainings one after the other take
the sum.  Three pairs of independent trainings (W2 + W2, W3 + W3, W2 + W3
sized networks, each `fit` for a fixed number of epochs) are timed both ways,
interleaved (timing.interleave), with backprop.set_num_threads(1) where it
exists so that each training keeps to one core.  speed-up = sequential /
threaded; the ideal is (t_a + t_b) / max(t_a, t_b), 2 for equal halves.
"""

from __future__ import annotations

import argparse
import threading

import backprop as bp

from . import workloads as W
from .report import table
from .systems import BackpropFit
from .timing import fmt_time, interleave, timed

EPOCHS = {"W2": 60, "W3": 6}  # about half a second each, one thread


def trainer(name: str, epochs: int, seed: int):
    """A function that trains its own `name`-sized network for `epochs`."""
    wl = W.get(name)
    X, y = W.make_data(wl, wl.rows(), seed=seed)
    m = BackpropFit().build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype, seed))
    return lambda: m.net.fit(X, y, epochs=epochs, batch_size=wl.batch, lr=wl.lr)


def in_threads(fns) -> None:
    threads = [threading.Thread(target=fn) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="measured repetitions (default 5)")
    p.add_argument("--quick", action="store_true", help="fewer epochs and repetitions")
    args = p.parse_args(argv)
    reps = 2 if args.quick else args.reps
    scale = 0.2 if args.quick else 1.0
    if hasattr(bp, "set_num_threads"):
        bp.set_num_threads(1)
    rows = []
    for a, b in (("W2", "W2"), ("W3", "W3"), ("W2", "W3")):
        fa, fb = (trainer(n, max(1, int(EPOCHS[n] * scale)), seed) for seed, n in enumerate((a, b)))
        stats = interleave(
            {
                "a": lambda fa=fa: timed(fa),
                "b": lambda fb=fb: timed(fb),
                "sequential": lambda fa=fa, fb=fb: timed(lambda: (fa(), fb())),
                "threaded": lambda fa=fa, fb=fb: timed(in_threads, (fa, fb)),
            },
            reps,
        )
        ta, tb = stats["a"].median, stats["b"].median
        seq, par = stats["sequential"], stats["threaded"]
        rows.append(
            [
                f"{a} + {b}",
                fmt_time(ta),
                fmt_time(tb),
                fmt_time(seq.median, seq.spread),
                fmt_time(par.median, par.spread),
                f"{seq.median / par.median:.2f}×",
                f"{(ta + tb) / max(ta, tb):.2f}×",
            ]
        )
    threads = (
        "backprop.set_num_threads(1)"
        if hasattr(bp, "set_num_threads")
        else "default threads (no backprop.set_num_threads)"
    )
    table(
        f"Two independent trainings: sequential vs two Python threads ({threads}, "
        f"median ±½IQR of {reps})",
        ["pair", "a alone", "b alone", "sequential", "2 threads", "speed-up", "ideal"],
        rows,
        [
            "each training: fit for "
            f"{', '.join(f'{k} {int(v * scale) or 1} epochs' for k, v in EPOCHS.items())}"
            f" on its own random data (W2 {W.get('W2').rows()} rows,"
            f" W3 {W.get('W3').rows()} rows)"
        ],
    )


if __name__ == "__main__":
    main()
