"""The small matrix-product kernels against BLAS, per shape.  `python -m bench.kernels`

The dense layers' three products (csrc/simd/gemm.h) are timed for every
build of the kernels this CPU runs and for float32 and float64, each against
OpenBLAS's sgemm/dgemm called the same way: through the same function of the
core (backprop._ops.repeat_product, a loop of that many calls without
Python), with the small kernels switched on for every product or off
(backprop._kernels.small_products), interleaved, on one BLAS thread.

  forward  C (m, n) = relu(A (m, k) @ W (k, n) + b)    dense_forward
  input    C (m, n) = A (m, k) @ Wᵀ ⊙ [a > 0]          input_gradient
  weight   C (m, n) = Aᵀ @ δ,  A (k, m), δ (k, n)      the weight gradient
  sgd      W ← W − η · Aᵀ @ δ (β = 1)                  dense_sgd_part's

For a layer n_in → n_out at batch B: forward (B, n_out, n_in), input
(B, n_in, n_out), weight and sgd (n_in, n_out, B).  The shapes are those of
the workloads' layers (W1, W2, W3, digits) and, unless --layers-only, a
sweep of m, n, k over 8 … 512.  ratio = kernel / BLAS (< 1: the kernel is
faster); the bounds in csrc/simd/kernels.c (bp_kernel_sets) come from this
table.  Then a whole `fit` epoch of W1 and W2, with the kernels where the
rule picks them and with BLAS alone, interleaved.

Run it as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.kernels`.
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np

from backprop import _kernels, _ops

from . import workloads as W
from .machine import cpu_model, gemm_peak, set_threads, timing_arguments
from .report import table
from .systems import BackpropFit
from .timing import fmt_time, interleave, per_unit, timed

KINDS = ("forward", "input", "weight", "sgd")
HEADERS = "build f kind m×n×k layers kernel BLAS ratio best GFLOP/s rule".split()
SWEEP = (8, 16, 32, 64, 128, 256, 512)
# (name, sizes, batch): the workloads' networks, and the digits network of the
# examples (64-32-10 at batch 32, as W1)
NETWORKS = [(wl.name, wl.sizes, wl.batch) for wl in W.WORKLOADS if wl.name in ("W1", "W2", "W3")]
NETWORKS.append(("digits", (64, 32, 10), 32))


def layer_shapes() -> dict[tuple[str, int, int, int], list[str]]:
    """{(kind, m, n, k): [the layers it comes from]} of the networks."""
    shapes: dict[tuple[str, int, int, int], list[str]] = {}
    for name, sizes, batch in NETWORKS:
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            where = f"{name}.{index + 1}"
            kinds = [("forward", batch, n_out, n_in), ("weight", n_in, n_out, batch)]
            kinds.append(("sgd", n_in, n_out, batch))
            if index > 0:  # the first layer takes no input gradient
                kinds.append(("input", batch, n_in, n_out))
            for key in kinds:
                shapes.setdefault(key, []).append(where)
    return shapes


def operands(kind: str, m: int, n: int, k: int, dtype, rng):
    """C, A, B, bias of repeat_product for that kind and shape."""
    a_shape = (k, m) if kind in ("weight", "sgd") else (m, k)
    b_shape = (n, k) if kind == "input" else (k, n)
    A, B = (rng.standard_normal(s).astype(dtype) for s in (a_shape, b_shape))
    return rng.standard_normal((m, n)).astype(dtype), A, B, rng.standard_normal(n).astype(dtype)


def product_sampler(mode: str, kind: str, arrays, min_time: float):
    """A sampler: seconds per product, the small kernels `mode` ("always"
    or "never"), the calls looped in the core."""
    with _kernels.small_products(mode):
        count = max(
            1, int(min_time / max(timed(_ops.repeat_product, kind, 20, *arrays) / 20, 1e-8))
        )

    def sample():
        with _kernels.small_products(mode):
            return per_unit(lambda: _ops.repeat_product(kind, count, *arrays), count)()

    return sample


def products(builds, dtypes, shapes, reps: int, min_time: float, sweep_reps: int):
    """Rows of the crossover table: per build, dtype and shape, the
    kernel's and BLAS's median time per product and their ratio (and the
    ratio of their fastest samples, which a busy machine disturbs least).
    The networks' shapes take `reps` samples each, the sweep's `sweep_reps`."""
    rows, results = [], []
    rng = np.random.default_rng(0)
    for build, dtype, (key, where) in itertools.product(builds, dtypes, shapes.items()):
        kind, m, n, k = key
        arrays = operands(kind, m, n, k, dtype, rng)
        with _kernels.use_kernels(build):
            stats = interleave(
                {
                    "kernel": product_sampler("always", kind, arrays, min_time),
                    "blas": product_sampler("never", kind, arrays, min_time),
                },
                reps if where else sweep_reps,
            )
            rule = _kernels_rule(kind, m, n, k, dtype)
        mine, theirs = stats["kernel"].median, stats["blas"].median
        ratio = mine / theirs
        best = stats["kernel"].min / stats["blas"].min
        gflops = 2 * m * n * k / mine / 1e9
        results.append(
            dict(
                build=build,
                dtype=np.dtype(dtype).name,
                kind=kind,
                m=m,
                n=n,
                k=k,
                kernel=mine,
                blas=theirs,
                ratio=ratio,
                best=best,
                rule=rule,
                where=where,
            )
        )
        rows.append(
            [
                build,
                np.dtype(dtype).name[-2:],
                kind,
                f"{m}×{n}×{k}",
                " ".join(where),
                fmt_time(mine, stats["kernel"].spread),
                fmt_time(theirs, stats["blas"].spread),
                f"{ratio:.2f}",
                f"{best:.2f}",
                f"{gflops:.1f}",
                "kernel" if rule else "blas",
            ]
        )
        print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows, results


GEMM_KIND = {"forward": "nn", "input": "nt", "weight": "tn", "sgd": "tn"}


def _kernels_rule(kind: str, m: int, n: int, k: int, dtype) -> bool:
    """Whether the rule (bp_small_gemm's bounds, in the build in use) gives
    this product to the kernel."""
    return _ops.small_gemm_rule(np.dtype(dtype) == np.float32, GEMM_KIND[kind], m, n, k)


def epochs(reps: int) -> list[list[str]]:
    """W1 and W2: one fit epoch with the kernels by the rule and with BLAS."""
    rows = []
    for name in ("W1", "W2"):
        wl = W.get(name)
        X, y = W.make_data(wl, wl.rows())
        system = BackpropFit()
        model = system.build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype))

        def sampler(mode, model=model, system=system):
            def sample():
                with _kernels.small_products(mode):
                    return timed(system.epoch, model)

            return sample

        stats = interleave({"rule": sampler("rule"), "blas": sampler("never")}, reps, warmup=2)
        rule, blas = stats["rule"].median, stats["blas"].median
        steps = wl.rows() // wl.batch
        rows.append(
            [
                wl.label,
                _kernels.kernels_in_use(),
                fmt_time(rule, stats["rule"].spread),
                fmt_time(blas, stats["blas"].spread),
                f"{blas / rule:.2f}×",
                fmt_time(rule / steps),
                fmt_time(blas / steps),
            ]
        )
    return rows


def main(argv=None) -> int:
    p = timing_arguments("kernels", __doc__, reps=15, threads=1)
    p.add_argument("--layers-only", action="store_true", help="the networks' shapes, no sweep")
    p.add_argument("--kinds", default=",".join(KINDS), help="products to time (default: all)")
    p.add_argument("--builds", default="", help="builds to time (default: all this CPU runs)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--min-time", type=float, default=0.001, help="seconds per sample")
    p.add_argument("--sweep-reps", type=int, default=5, help="repetitions per sweep shape")
    p.add_argument("--json", help="write every product's numbers to this file")
    p.add_argument("--no-epochs", action="store_true", help="skip the fit epochs")
    p.add_argument("--epochs-only", action="store_true", help="only the fit epochs")
    args = p.parse_args(argv)
    reps = 3 if args.quick else args.reps
    set_threads(args.threads)
    runs = [b for b, ok in _kernels.kernel_builds().items() if ok]
    builds = [b for b in args.builds.split(",") if b] or runs
    kinds = args.kinds.split(",")
    shapes = {key: where for key, where in layer_shapes().items() if key[0] in kinds}
    sweep = (8, 32, 128) if args.quick else SWEEP
    if not args.layers_only:
        for kind in kinds:
            if kind == "sgd":
                continue  # the weight gradient's shapes, with β = 1: the layers say enough
            for m, n, k in itertools.product(sweep, repeat=3):
                shapes.setdefault((kind, m, n, k), [])
    shapes = dict(sorted(shapes.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1:])))
    print(f"CPU: {cpu_model()}; builds: {', '.join(runs)}; BLAS threads: {args.threads}")
    for dtype in args.dtypes.split(","):
        print(
            f"large-GEMM peak ({dtype}, one call of n = 2048): {gemm_peak(dtype) / 1e9:.1f} GFLOP/s"
        )
    if not args.epochs_only:
        sweep_reps = 3 if args.quick else args.sweep_reps
        rows, results = products(
            builds, args.dtypes.split(","), shapes, reps, args.min_time, sweep_reps
        )
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(results, fh, indent=1)
        table(
            "small kernels against BLAS, per product (medians; ratio = kernel / BLAS)",
            HEADERS,
            rows,
            [
                "best: the ratio of the fastest samples; GFLOP/s: the kernel's (median);",
                "rule: what bp_small_gemm picks for that product now",
            ],
        )
    if not args.no_epochs:
        table(
            "one fit epoch (plain SGD), small kernels by the rule and BLAS alone",
            ["workload", "build", "rule", "BLAS only", "speed-up", "step (rule)", "step (BLAS)"],
            epochs(reps),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
