"""`python -m bench`: backprop against numpy, PyTorch, scikit-learn and JAX.

Run from the repository root (with backprop built in place or installed):

    python -m bench                      the full suite (a few minutes)
    python -m bench --quick              a fast smoke run
    python -m bench --workloads W1,W3 --sections training --json out.json
    python -m bench --sections parity    backprop.sklearn vs scikit-learn's MLP
    python -m bench --sections onnx      the digits network in ONNX Runtime vs backprop
    python -m bench --mode both          training and adam also with each system
                                         alone in a fresh process (solo)

Prints the machine, the thread settings and one table per section; --json
writes every number (medians, quartiles, extremes, FLOPs, accuracies,
memory) to a file.  Peers that are not installed are skipped with a note.
The standalone scripts `python -m bench.memory`, `python -m bench.threads`
and `python -m bench.distributed` measure allocation inside training, GIL
release, and data-parallel training on 1 and 2 MPI ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from . import report, suite
from . import workloads as W
from .machine import OtherLoad, facts, set_threads
from .systems import ALL_SYSTEMS, available_systems

SECTIONS = ["training", "adam", "latency", "throughput", "digits", "memory", "parity", "onnx"]
# Run only when named in --sections: parity cross-validates 7 data sets × 2
# solvers × 2 libraries × 3 seeds × 5 folds, longer than the rest together;
# onnx needs onnx and onnxruntime, which the suite's peers do not.
OPT_IN = ["parity", "onnx"]
DEFAULT = [s for s in SECTIONS if s not in OPT_IN]
MODES = ["interleaved", "solo", "both"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="few repetitions and small epochs: a smoke run"
    )
    p.add_argument(
        "--workloads",
        default=",".join(w.name for w in W.WORKLOADS),
        help="comma-separated training workloads (default: all, W0–W5)",
    )
    p.add_argument(
        "--sections",
        default=",".join(DEFAULT),
        help=f"comma-separated sections (default: {','.join(DEFAULT)}; opt-in: {','.join(OPT_IN)})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for every system (default: the cores this process may use, %(default)s here)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="interleaved",
        help="training and adam: all systems interleaved in this process (default), each "
        "alone in a fresh process (solo), or both, side by side",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    # (a solo run's child: one system's training and adam sections, as JSON on stdout)
    p.add_argument("--worker", metavar="SYSTEM", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.workloads = [W.get(name) for name in args.workloads.split(",") if name.strip()]
    except KeyError as exc:
        p.error(exc.args[0])
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(
            f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.worker and args.worker not in [s.name for s in ALL_SYSTEMS] + [suite.STREAM]:
        p.error(f"unknown system {args.worker!r}")
    return args


def measure(args, systems, cfg, notes, progress, stream=True) -> dict:
    """The sections of suite.SOLO_SECTIONS that args asks for, measured in
    this process (training only when there are systems to train)."""
    out = {}
    if "training" in args.sections and systems:
        out["training"] = suite.training(args.workloads, systems, cfg, notes, progress)
    if "adam" in args.sections:
        named = {w.name for w in args.workloads}
        wls = [w for w in W.adam_workloads(named) if w.name in cfg.adam_workloads]
        out["adam"] = suite.adam(wls, systems, cfg, notes, progress, stream)
    return out


def worker(args) -> dict:
    """A solo run's child: args.worker's sections alone in this process."""
    notes: list[str] = []
    systems = [s for s in ALL_SYSTEMS if s.name == args.worker]
    for s in systems:
        if s.missing():  # (imports it, so that set_threads reaches its libraries)
            raise SystemExit(s.missing())
    set_threads(args.threads)
    cfg = suite.Settings.make(args.quick, args.threads)

    def progress(msg):
        print(f"{args.worker}: {msg}", file=sys.stderr, flush=True)

    found = measure(args, systems, cfg, notes, progress, stream=args.worker == suite.STREAM)
    return {**found, "notes": notes}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args), default=float))
        return 0
    start = time.perf_counter()
    load = OtherLoad()
    notes: list[str] = []
    systems = available_systems(notes)  # imports the peers that exist
    cfg = suite.Settings.make(args.quick, args.threads)

    def progress(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    res = {
        "threads": set_threads(args.threads),
        "machine": facts(),
        "settings": asdict(cfg),
        "mode": args.mode,
        "notes": notes,
    }
    dtypes = sorted({w.dtype for w in args.workloads}) if "training" in args.sections else []
    res["gemm_peak"] = suite.peaks(cfg, dtypes)
    progress("GEMM peak: done")
    if args.mode != "solo":
        res.update(measure(args, systems, cfg, notes, progress))
    if args.mode != "interleaved":
        sections = [s for s in suite.SOLO_SECTIONS if s in args.sections]
        names = [w.name for w in args.workloads]
        solo = suite.solo(systems, sections, names, cfg, notes, progress)
        res.update(solo if args.mode == "solo" else {"solo": solo})
    for section in SECTIONS:
        if section in args.sections and section not in suite.SOLO_SECTIONS:
            res[section] = getattr(suite, section)(systems, cfg, notes, progress)
    if dtypes:
        res["gemm_peak_start"] = res["gemm_peak"]
        res["gemm_peak"] = suite.peaks(cfg, dtypes, before=res["gemm_peak_start"])
        for found in (res, res.get("solo", {})):
            if "training" in found:
                suite.add_rates(found["training"], res["gemm_peak"])
    res["elapsed_s"] = time.perf_counter() - start
    res["other_load"] = load.fraction()
    res["load_average_end"] = os.getloadavg()
    report.print_all(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
        print(f"results written to {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
