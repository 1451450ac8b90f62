"""What machine the numbers come from, its thread settings, and its limit.

- `facts()`: CPU model (/proc/cpuinfo), cores, load average, library
  versions and the BLAS libraries with their thread counts (threadpoolctl
  when installed, else scipy.show_config).
- `set_threads(n)`: one thread count for every system: backprop through
  `backprop.set_num_threads` where it exists (else backprop is left alone),
  numpy's and scipy's OpenBLAS through threadpoolctl where installed, torch
  through `torch.set_num_threads`, jax through XLA_FLAGS for one thread
  (XLA's CPU pool is otherwise the size of the cores it may use).
- `timing_arguments(module, doc, reps, threads)`: the command line of a
  standalone timing script (--reps, --threads, --quick).
- `gemm_peak(dtype)`: the machine's large-GEMM throughput, the best of a few
  calls of scipy's own sgemm/dgemm (the BLAS backprop calls) on square
  matrices, in FLOP/s.  FLOPs of a training step divided by this is the
  shortest a step could take if it were nothing but large matrix products.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time

import numpy as np

from .timing import timed

__all__ = [
    "facts",
    "set_threads",
    "timing_arguments",
    "gemm_peak",
    "rss_bytes",
    "optional",
    "OtherLoad",
]


def optional(name: str):
    """The module `name`, or None when it is not installed."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def rss_bytes() -> int:
    """The resident set size of this process now (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class OtherLoad:
    """How much CPU other processes used while a run went on: the machine's
    busy time (/proc/stat) minus this process's and its children's CPU time,
    as a fraction of (wall time × cores).  Above a few percent, the numbers
    were measured on a busy machine."""

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __init__(self):
        self.start = (time.perf_counter(), self._busy(), self._own())

    def fraction(self) -> float:
        wall = time.perf_counter() - self.start[0]
        others = (self._busy() - self.start[1]) - (self._own() - self.start[2])
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_limits = []  # threadpoolctl limits kept alive for the whole run


def set_threads(n: int) -> list[str]:
    """Use n threads everywhere that can be told; returns what was set."""
    import scipy.linalg.blas  # noqa: F401  (load every BLAS before limiting them)

    import backprop

    done = []
    tpc = optional("threadpoolctl")
    if tpc is not None:
        _limits.append(tpc.threadpool_limits(limits=n, user_api="blas"))
        done.append(f"numpy/scipy BLAS → {n} (threadpoolctl)")
    else:
        done.append("numpy/scipy BLAS: default (threadpoolctl not installed)")
    if hasattr(backprop, "set_num_threads"):
        backprop.set_num_threads(n)
        done.append(f"backprop → {n} (backprop.set_num_threads)")
    else:
        done.append("backprop: left alone (no backprop.set_num_threads)")
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(n)
        done.append(f"torch → {n} (torch.set_num_threads)")
    if optional("jax") is not None:
        done.append(_xla_threads(n))
    return done


XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _xla_threads(n: int) -> str:
    """jax's threads: XLA's CPU client takes its intra-op pool from the cores
    it may use and has no setting for another size; one thread through
    XLA_FLAGS, read when jax makes its first array (which must be later)."""
    cores = len(os.sched_getaffinity(0))
    if n == 1:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
        return f"jax → 1 (XLA_FLAGS={XLA_ONE_THREAD})"
    if n == cores:
        return f"jax → {n} (XLA's own pool of the {cores} cores, its default)"
    return f"jax: XLA's own pool of the {cores} cores (XLA cannot be set to {n})"


def timing_arguments(module: str, doc: str, reps: int, threads: int) -> argparse.ArgumentParser:
    """The parser of `python -m bench.<module>`, described by the first line
    of `doc`, with --reps and --threads (their defaults `reps` and
    `threads`) and --quick; the script adds its own."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc.split("\n")[0])
    p.add_argument("--reps", type=int, default=reps, help=f"measured repetitions (default {reps})")
    p.add_argument("--threads", type=int, default=threads, help=f"BLAS threads (default {threads})")
    p.add_argument("--quick", action="store_true", help="a smoke run: little data, few repetitions")
    return p


def blas_description() -> list[str]:
    """One line per BLAS/OpenMP library loaded, with its thread count."""
    tpc = optional("threadpoolctl")
    if tpc is not None:
        return [
            f"{i.get('internal_api')} {i.get('version') or ''} "
            f"{i.get('architecture') or ''} threads={i.get('num_threads')} "
            f"{os.path.basename(i.get('filepath', ''))}".replace("  ", " ")
            for i in tpc.threadpool_info()
        ]
    import scipy

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        scipy.show_config()
    lines = [
        line.strip()
        for line in buf.getvalue().splitlines()
        if "name" in line or "openblas configuration" in line
    ]
    return list(dict.fromkeys(lines))  # unique, in order


def facts() -> dict:
    """Machine facts for the report header (and the JSON)."""
    import scipy

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    import backprop

    versions["backprop"] = backprop.__version__
    for name, module in (
        ("torch", "torch"),
        ("scikit-learn", "sklearn"),
        ("jax", "jax"),
        ("threadpoolctl", "threadpoolctl"),
    ):
        mod = optional(module)
        versions[name] = getattr(mod, "__version__", None) if mod else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "versions": versions,
        "blas": blas_description(),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench"] + sys.argv[1:]),
    }


def gemm_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of C = A @ B with scipy.linalg.blas.{s,d}gemm on n×n
    Fortran-ordered matrices, C preallocated and overwritten (no copies)."""
    from scipy.linalg import blas

    dtype = np.dtype(dtype)
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    rng = np.random.default_rng(0)
    a, b = (np.asfortranarray(rng.standard_normal((n, n)), dtype) for _ in range(2))
    c = np.zeros((n, n), dtype, order="F")
    best = min(timed(gemm, 1.0, a, b, 0.0, c, 0, 0, 1) for _ in range(repeats))
    return 2.0 * n**3 / best
