"""Data-parallel training on 1 and 2 ranks of this machine.  `python -m bench.distributed`

Runs itself under `mpiexec -n 1` and `mpiexec -n 2`, alternately, `--reps`
times.  Each run times backprop.distributed.fit on W3 and W4 (after a warm-up
epoch): the time per step with the workload's batch split across the ranks
(the same training as one process: strong scaling) and with the workload's
batch on every rank (twice the rows per step on 2 ranks: weak scaling), and,
apart, the Allreduce of the network's flat gradient and of a 4 MB float32
buffer.  Each rank runs the default of cores ÷ ranks BLAS threads.

From the measured Allreduce, a projection to more hosts: a ring Allreduce
of S bytes over N hosts moves 2(N−1)/N·S through each host's link, so with
the per-rank compute time c of a weak-scaling step and the measured
bandwidth b, a step on N hosts takes about c + 2(N−1)/N·S/b.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from . import workloads as W
from .report import table
from .timing import fmt_time

WORKLOADS = ("W3", "W4")
STEPS = {"W3": 40, "W4": 12}  # steps per timed epoch
PROBE_BYTES = 4 * 2**20
ETHERNET_10G = 1.25e9  # bytes/s of a 10 Gb/s link, for the projection


def _allreduce_seconds(dist, comm, buffer, repeats: int) -> float:
    """Median seconds of one in-place Allreduce of `buffer` across `comm`."""
    from mpi4py import MPI

    times = []
    time.sleep(0.2)  # (let the BLAS threads of the training stop spinning)
    for _ in range(repeats + 2):
        comm.Barrier()
        start = time.perf_counter()
        dist._wait(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), comm, 60, "bench")
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


@contextlib.contextmanager
def _timing(module, name: str):
    """Add up the seconds spent in module.name while the block runs."""
    original, total = getattr(module, name), [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    setattr(module, name, timed)
    try:
        yield total
    finally:
        setattr(module, name, original)


def worker(quick: bool) -> None:
    """One run under mpiexec: rank 0 prints a JSON line of its timings."""
    import backprop as bp
    from backprop import distributed as dist

    comm = dist.MPI.COMM_WORLD
    ranks = comm.Get_size()
    result = {"ranks": ranks, "threads": dist.threads_per_rank(comm), "workloads": {}}
    for name in WORKLOADS:
        wl = W.get(name)
        steps = max(3, STEPS[name] // (4 if quick else 1))
        entry = {"flops": wl.flops_per_step()}
        for scaling, per_rank in (("strong", wl.batch // ranks), ("weak", wl.batch)):
            X, y = W.make_data(wl, per_rank * ranks * steps, seed=1)
            net = bp.Sequential(
                *[
                    bp.Dense(
                        a,
                        b,
                        activation=wl.hidden if i < len(wl.layers) - 1 else "softmax",
                        dtype=wl.dtype,
                    )
                    for i, (a, b) in enumerate(wl.layers)
                ],
                loss="cross_entropy",
                dtype=wl.dtype,
                seed=0,
            )
            dist.fit(net, X, y, epochs=1, batch_size=per_rank, lr=wl.lr)  # warm-up
            comm.Barrier()
            start = time.perf_counter()
            with _timing(dist, "allreduce_gradients") as reducing:
                dist.fit(net, X, y, epochs=1, batch_size=per_rank, lr=wl.lr)
            seconds = comm.allreduce(time.perf_counter() - start, op=dist.MPI.MAX)
            entry[scaling] = {
                "step": seconds / steps,
                "rows": per_rank * ranks,
                "in_step": (comm.allreduce(reducing[0]) / ranks / steps if ranks > 1 else 0.0),
            }
        grads = np.zeros_like(net.grads)
        entry["allreduce"] = _allreduce_seconds(dist, comm, grads, 30) if ranks > 1 else 0.0
        entry["bytes"] = grads.nbytes
        result["workloads"][name] = entry
    probe = np.zeros(PROBE_BYTES // 4, np.float32)
    result["probe"] = _allreduce_seconds(dist, comm, probe, 20) if ranks > 1 else 0.0
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def launch(ranks: int, quick: bool) -> dict:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
        "mpiexec"
    )
    if mpiexec is None:
        raise SystemExit('mpiexec not found: pip install "backprop[mpi]"')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "bench.distributed", "--worker"]
    out = subprocess.run(
        command + (["--quick"] if quick else []),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def _median(runs, *keys):
    values = []
    for run in runs:
        for key in keys:
            run = run[key]
        values.append(run)
    return statistics.median(values)


def report(runs: dict[int, list[dict]]) -> dict:
    rows, summary = [], {}
    for name in WORKLOADS:
        one = {s: _median(runs[1], "workloads", name, s, "step") for s in ("strong", "weak")}
        for ranks, results in sorted(runs.items()):
            entry = results[0]["workloads"][name]
            apart = _median(results, "workloads", name, "allreduce")
            for scaling in ("strong", "weak"):
                step = _median(results, "workloads", name, scaling, "step")
                reduce = _median(results, "workloads", name, scaling, "in_step")
                batch = entry[scaling]["rows"]
                speedup = (
                    one[scaling] / step * (batch / W.get(name).batch if scaling == "weak" else 1)
                )
                multi = ranks > 1
                rows.append(
                    [
                        f"{name} {scaling}",
                        ranks,
                        results[0]["threads"],
                        batch,
                        fmt_time(step),
                        f"{speedup:.2f}×",
                        f"{batch / step:,.0f}",
                        fmt_time(reduce) if multi else "–",
                        f"{100 * reduce / step:.0f} %" if multi else "–",
                        fmt_time(apart) if multi else "–",
                    ]
                )
                summary[f"{name} {scaling} {ranks}"] = {
                    "step": step,
                    "speedup": speedup,
                    "allreduce": reduce,
                    "allreduce_apart": apart,
                }
    table(
        "Data-parallel training (backprop.distributed), one host",
        [
            "workload",
            "ranks",
            "threads/rank",
            "global batch",
            "time per step",
            "speed-up",
            "samples/s",
            "Allreduce",
            "share",
            "apart",
        ],
        rows,
        [
            "speed-up: samples/s over those of 1 rank; strong: the workload's batch split "
            "across the ranks, weak: the workload's batch on each rank",
            "Allreduce: time per step in the gradient's Allreduce during fit (waiting for "
            "the slower rank included), its share of the step, and the same Allreduce "
            "timed apart",
        ],
    )
    probe = _median(runs[2], "probe")
    bandwidth = PROBE_BYTES / probe  # algorithm bandwidth of the 2-rank ring
    print(
        f"\n  4 MB float32 Allreduce, 2 local ranks: {fmt_time(probe)} "
        f"({bandwidth / 1e9:.2f} GB/s per rank)"
    )
    rows = []
    for name in WORKLOADS:
        compute = _median(runs[1], "workloads", name, "weak", "step")
        size = runs[2][0]["workloads"][name]["bytes"]
        for hosts in (1, 2, 4, 8, 16):
            cells = [name, hosts]
            for link in (bandwidth, ETHERNET_10G):
                step = compute + 2 * (hosts - 1) / hosts * size / link
                cells += [fmt_time(step), f"{hosts * compute / step:.1f}×"]
            rows.append(cells)
    table(
        "Projection to more hosts (weak scaling: the workload's batch on each host)",
        ["workload", "hosts", "step, measured b", "speed-up", "step, 10 GbE", "speed-up"],
        rows,
        [
            "step ≈ c + 2(N−1)/N · S / b; c: a 1-rank step (this machine, both cores), "
            "S: the gradient's bytes, b: the Allreduce bandwidth measured here between "
            "2 local ranks, or 1.25 GB/s for a 10 Gb/s Ethernet link (assumed)"
        ],
    )
    summary["probe"] = probe
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.distributed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--reps", type=int, default=3, help="runs at each rank count (default 3)")
    p.add_argument("--quick", action="store_true", help="fewer steps, one run each")
    p.add_argument("--json", metavar="PATH", help="write the runs and the summary as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.quick)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(1 if args.quick else args.reps):
        for ranks in runs:  # interleaved: 1, 2, 1, 2 …
            runs[ranks].append(launch(ranks, args.quick))
    summary = report(runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
