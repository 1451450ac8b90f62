"""Print the results of bench/suite.py as plain-text tables.

Every function here reads the same dict that --json writes, so a saved run
can be printed again: `python -m bench.report results.json`.
"""

from __future__ import annotations

import json
import sys

from .systems import ALL_SYSTEMS
from .timing import fmt_time

TITLES = {s.name: s.title for s in ALL_SYSTEMS}
ORDER = [s.name for s in ALL_SYSTEMS]
PREDICTS = [s.name for s in ALL_SYSTEMS if s.inference]  # the prediction sections'
PEERS = ["numpy", "torch", "sklearn", "jax"]
REF = "backprop_fit"
MODE = {
    "interleaved": "systems interleaved in one process",
    "solo": "each system alone in a fresh process",
}


def table(title, headers, rows, legend=()):
    """Print rows under headers, the first column left-aligned, the rest right."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = ["", title, line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows] + [f"  {text}" for text in legend]
    print("\n".join(out))


def _time(stats, spread=True):
    # (a marginal cost lost in the noise can come out ≤ 0: not a time)
    if not stats or stats["median"] <= 0:
        return "–"
    return fmt_time(stats["median"], stats["q3"] / 2 - stats["q1"] / 2 if spread else None)


def _ratio(systems, peer, ref=REF):
    if peer in systems and ref in systems and systems[peer]["median"] > 0:
        return f"{systems[peer]['median'] / systems[ref]['median']:.2f}×"
    return "–"


def header(res):
    m = res["machine"]
    print(f"command: {m['command']}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in m['load_average'])} at start; {m['platform']}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    for line in m["blas"]:
        print(f"BLAS: {line}")
    print("threads: " + "; ".join(res["threads"]))
    cfg = res["settings"]
    print(
        f"settings: {'quick' if cfg['quick'] else 'full'} run, {cfg['reps']} measured "
        f"repetitions after {cfg['warmup']} warm-up, systems interleaved in rotating order, "
        f"{cfg['settle']} s pause before each sample (idle BLAS threads stop spinning)"
    )
    mode = res.get("mode", "interleaved")
    if mode != "interleaved":
        print(
            f"mode: {mode}: training and adam "
            + ("with " if mode == "solo" else "also with ")
            + "each system alone in a fresh process"
        )
    if res["gemm_peak"]:
        start = res.get("gemm_peak_start", res["gemm_peak"])
        print(
            "GEMM peak (scipy BLAS, "
            f"{cfg['gemm_n']}² matrices, best of {cfg['gemm_repeats']} at the start and "
            "at the end): "
            + ", ".join(
                f"{dt} {v / 1e9:.1f} GFLOP/s (start {start[dt] / 1e9:.1f})"
                for dt, v in res["gemm_peak"].items()
            )
        )
    for note in res["notes"]:
        print(f"note: {note}")


def training(res):
    rows, rows_flops = [], []
    for w in res["training"].values():
        s = w["systems"]
        ref = s.get(REF)
        rows.append(
            [w["label"]]
            + [_time(s.get(k)) for k in ORDER]
            + [fmt_time(w["limit_s"])]
            + [_ratio(s, p) for p in PEERS]
            + ([f"{ref['gflops']:.1f}", f"{ref['pct_peak']:.0f}%"] if ref else ["–", "–"])
        )
        rows_flops.append(
            [w["label"], f"{w['flops_per_step'] / 1e6:.3g}"]
            + [
                f"{s[k]['gflops']:.2f} ({s[k]['pct_peak']:.0f}%)"
                if k in s and s[k]["median"] > 0
                else "–"
                for k in ORDER
            ]
        )
    reps = res["settings"]["reps"]
    k2 = res["settings"]["sklearn_k2"]
    mode = MODE[res.get("mode") if res.get("mode") == "solo" else "interleaved"]
    table(
        f"Training: time per step (median ±½IQR over {reps} repetitions, {mode})",
        ["workload"]
        + [TITLES[k] for k in ORDER]
        + ["limit"]
        + [f"{p}/bp" for p in PEERS]
        + ["bp GFLOP/s", "bp % peak"],
        rows,
        [
            "backprop fit = time of net.fit(epochs=1, shuffle=True) / batches; "
            "train_step = one net.train_step call per pre-sliced batch",
            "jax = one jitted call an epoch (permutation, gather, lax.scan of the step); "
            "jax step = one jitted step call per pre-sliced batch; compiled before timing",
            "a sample: as many back-to-back epochs as take "
            f"≥ {1e3 * res['settings']['min_sample']:g} ms "
            "(one for the large workloads), after a pause",
            f"sklearn = marginal cost of extra epochs: (t(max_iter={k2}) − t(max_iter=1)) / "
            f"({k2 - 1} · batches); W0 in sklearn is MLPRegressor (identity output)",
            "limit = the step's matrix-product FLOPs / the GEMM peak of its dtype; "
            "peer/bp = peer's median / backprop fit's median (> 1: backprop faster)",
        ],
    )
    table(
        "Training: achieved GFLOP/s (percent of the GEMM peak of the dtype)",
        ["workload", "MFLOP/step"] + [TITLES[k] for k in ORDER],
        rows_flops,
        [
            "FLOPs per step: forward 2·B·n_in·n_out per layer, weight gradient the same, "
            "input gradient the same except the first layer"
        ],
    )


def _by_optimizer(systems, optimizer):
    """{system: stats} of an adam workload's runs with that optimizer."""
    tail = f"/{optimizer}"
    return {k[: -len(tail)]: st for k, st in systems.items() if k.endswith(tail)}


def _extra(adam_st, sgd_st):
    if adam_st and sgd_st:
        return adam_st["median"] - sgd_st["median"]
    return None


def adam(res):
    results = res["adam"]
    reps = res["settings"]["reps"]
    keys = [k for k in ORDER if any(f"{k}/adam" in w["systems"] for w in results.values())]
    rows, rows_extra = [], []
    for w in results.values():
        runs = {opt: _by_optimizer(w["systems"], opt) for opt in ("sgd", "adam")}
        for opt, s in runs.items():
            rows.append(
                [w["label"], opt] + [_time(s.get(k)) for k in keys] + [_ratio(s, REF, "torch")]
            )
        stream = w["systems"].get("stream")
        extras = [_extra(runs["adam"].get(k), runs["sgd"].get(k)) for k in keys]
        rows_extra.append(
            [w["label"], f"{w['n_params']:,}", _time(stream)]
            + ["–" if e is None else fmt_time(e) for e in extras]
            + ["–" if e is None or not stream else f"{e / stream['median']:.2f}" for e in extras]
        )
    a = next(iter(results.values()))["adam"] if results else {}
    mode = MODE[res.get("mode") if res.get("mode") == "solo" else "interleaved"]
    table(
        f"Adam and SGD: time per step (median ±½IQR over {reps} repetitions, {mode})",
        ["workload", "optimizer"] + [TITLES[k] for k in keys] + ["bp/torch"],
        rows,
        [
            f"Adam: lr {a.get('lr')}, betas {tuple(a.get('betas', ()))}, eps {a.get('eps')}; "
            "SGD: lr of the workload (0.01), no momentum",
            "backprop fit: net.fit(…, optimizer=bp.optimizers.Adam(…)), the same optimizer "
            "every epoch; torch: torch.optim.Adam(…, fused=True); jax: Adam in jax.numpy",
            "bp/torch = backprop fit's median / torch's (< 1: backprop faster)",
        ],
    )
    table(
        "Adam's extra time per step over SGD, against streaming its four arrays once",
        ["workload", "parameters", "stream"]
        + [f"{TITLES[k]} extra" for k in keys]
        + [f"{TITLES[k]} ÷ stream" for k in keys],
        rows_extra,
        [
            "extra = Adam's median − SGD's median, of the same system in the same run",
            "stream = numpy's p += g; m += g; v += g over float32 arrays of the parameter "
            "count: each of p, g, m, v read once from memory and p, m, v written once "
            "(the update's traffic), one thread",
        ],
    )


def _versus_table(title, rows, keys, legend=()):
    """rows (label, interleaved {system: stats}, solo {system: stats}): both
    medians of each system side by side."""
    table(
        title,
        ["workload"] + [h for k in keys for h in (TITLES.get(k, k), "solo")],
        [
            [label] + [_time(s.get(k), spread=False) for k in keys for s in (inter, alone)]
            for label, inter, alone in rows
        ],
        legend,
    )


def solo(res):
    """Interleaved against solo, for the sections measured both ways."""
    both, reps = res["solo"], res["settings"]["reps"]
    legend = [
        "left: interleaved in one process; solo: the system alone in a fresh "
        "`python -m bench --worker` process (the same settings and data)"
    ]
    if "training" in both and "training" in res:
        rows = [
            (w["label"], w["systems"], both["training"].get(name, {}).get("systems", {}))
            for name, w in res["training"].items()
        ]
        _versus_table(
            f"Training: interleaved and solo, time per step (median over {reps} repetitions)",
            rows,
            [k for k in ORDER if any(k in r[1] for r in rows)],
            legend,
        )
    if "adam" in both and "adam" in res:
        rows = [
            (f"{w['label']} {opt}", *(_by_optimizer(d["systems"], opt) for d in (w, alone)))
            for name, w in res["adam"].items()
            for alone in [both["adam"].get(name, {"systems": {}})]
            for opt in ("sgd", "adam")
        ]
        rows += [
            (f"{w['label']} stream", *({"stream": d["systems"].get("stream")} for d in (w, alone)))
            for name, w in res["adam"].items()
            for alone in [both["adam"].get(name, {"systems": {}})]
        ]
        _versus_table(
            f"Adam and SGD: interleaved and solo, time per step (median over {reps} repetitions)",
            rows,
            [k for k in ORDER + ["stream"] if any(k in r[1] for r in rows)],
            legend,
        )


def latency(res):
    rows = []
    for w in res["latency"].values():
        s = w["systems"]
        rows.append(
            [w["label"]]
            + [_time(s.get(k)) for k in PREDICTS]
            + [_ratio(s, p) for p in PEERS if p in PREDICTS]
        )
        min_ms = 1e3 * w["min_sample_s"]
    table(
        "Single-row predict latency (median ±½IQR of per-sample means, "
        f"≥ {min_ms:g} ms of back-to-back calls a sample)",
        ["network"]
        + [TITLES[k] if k != REF else "backprop" for k in PREDICTS]
        + [f"{p}/bp" for p in PEERS if p in PREDICTS],
        rows,
        [
            "backprop net.predict(x) with x 1-D; numpy forward on a (1, n) view into "
            "preallocated buffers; torch under no_grad; sklearn predict(x.reshape(1, -1))",
            "networks trained one epoch first (numpy and torch given backprop's weights)",
        ],
    )


def throughput(res):
    t = res["throughput"]
    s = t["systems"]
    rows = [
        [
            TITLES[k] if k != REF else "backprop",
            _time({**s[k], **{q: s[k][q] * t["rows"] for q in ("median", "q1", "q3")}}),
            f"{s[k]['rows_per_s']:,.0f}",
            _ratio(s, k),
            "–"
            if s[k]["agree_with_backprop"] is None
            else f"{100 * s[k]['agree_with_backprop']:.1f}%",
        ]
        for k in ORDER
        if k in s
    ]
    table(
        f"Batch inference: {t['label']} network, {t['rows']:,} rows in one predict call",
        ["system", f"time / {t['rows']:,} rows", "rows/s", "time/bp", "same labels as bp"],
        rows,
        [
            "backprop's network was trained one epoch (batch 128, 1,024 rows) and its "
            "weights copied into numpy's and torch's, so their labels should agree; "
            "sklearn's network is its own (fitted one epoch)"
        ],
    )


def digits(res):
    d = res["digits"]
    s = d["systems"]
    rows = [
        [
            TITLES[k] if k != REF else "backprop",
            _time(s[k]),
            f"{s[k]['test_accuracy']:.4f}",
            _ratio(s, k),
        ]
        for k in ORDER
        if k in s
    ]
    table(
        f"Digits end to end: 64-32-10 ReLU/softmax, {d['epochs']} epochs, batch "
        f"{d['batch']}, lr {d['lr']}, {d['train_rows']} train / {d['test_rows']} test rows",
        ["system", "wall time (build + train)", "test accuracy", "time/bp"],
        rows,
        [
            "backprop net.fit(epochs=…) once; numpy and torch loop over epochs; "
            "sklearn MLPClassifier(max_iter=epochs)"
        ],
    )


def memory(res):
    rows = []
    for w in res["memory"].values():
        for k in ORDER:
            if k in w["systems"]:
                m = w["systems"][k]
                rows.append(
                    [
                        w["label"],
                        TITLES[k] if k != REF else "backprop",
                        f"{m['peak_rss_growth'] / 2**20:.2f} MiB"
                        + ("" if m["peak_reset"] else " (*)"),
                        f"{m['tracemalloc_peak'] / 2**20:.2f} MiB"
                        + (" (†)" if k == "torch" else ""),
                        f"{m['param_bytes'] / 2**20:.2f} MiB",
                        f"{m['data_bytes'] / 2**20:.2f} MiB",
                    ]
                )
    table(
        "Memory of one training run (build + 1 epoch), a fresh subprocess per system",
        [
            "workload",
            "system",
            "peak RSS growth",
            "tracemalloc peak",
            "parameters",
            "data (not counted)",
        ],
        rows,
        [
            "peak RSS growth: the RSS high-water mark VmHWM after the run (reset through "
            "/proc/self/clear_refs just before) minus the RSS before; the data and a "
            "warm-up on a tiny network come first",
            "tracemalloc peak: a second run under tracemalloc (memory allocated "
            "through Python and numpy)",
            "(†) torch's tensors are allocated outside Python's allocators: "
            "tracemalloc does not see them",
            "(*) high-water mark could not be reset: growth since process start",
        ],
    )


def _score(lib):
    if "error" in lib:
        return "n/a"
    return f"{lib['mean']:.4f} ±{lib['spread']:.4f}"


def parity(res):
    p = res["parity"]
    rows = []
    for name, d in p["datasets"].items():
        size = f"{d['rows']}×{d['features']}" + (f", {d['classes']} cl." if d["classes"] else "")
        for solver, r in d["solvers"].items():
            sk, bp = r["libraries"]["sklearn"], r["libraries"]["backprop"]
            rows.append(
                [
                    f"{name} ({size})",
                    solver,
                    d["metric"],
                    _score(sk),
                    _score(bp),
                    "n/a" if r["delta"] is None else f"{r['delta']:+.4f}",
                    "n/a" if r["agree"] is None else "yes" if r["agree"] else "NO",
                    "n/a" if "error" in sk else _time(sk["time"]),
                    "n/a" if "error" in bp else _time(bp["time"]),
                    "n/a" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}×",
                ]
            )
    seeds = p["seeds"]
    table(
        f"scikit-learn estimators: backprop.sklearn vs sklearn.neural_network, defaults, "
        f"{p['folds']}-fold CV, {len(seeds)} seed{'s' * (len(seeds) > 1)}",
        [
            "data set",
            "solver",
            "metric",
            "sklearn",
            "backprop",
            "bp − sk",
            "agree",
            "sklearn CV time",
            "backprop CV time",
            "sk/bp",
        ],
        rows,
        [
            "make_pipeline(StandardScaler(), MLPClassifier/MLPRegressor(solver=…, "
            "random_state=seed)), each library's defaults otherwise (max_iter 200, "
            "ConvergenceWarnings silenced); regressors inside "
            "TransformedTargetRegressor(transformer=StandardScaler())",
            "the same folds for both (StratifiedKFold / KFold, shuffle=True, random_state=0); "
            f"random_state = {', '.join(map(str, seeds))}",
            "score: mean over seeds of the seed's mean over folds (accuracy or R²) ± the "
            "standard deviation of the seeds' scores",
            f"agree: |bp − sk| ≤ the larger spread, or {p['floor']} when that is smaller; "
            "n/a: the estimator refused the solver or failed (see the notes)",
            "CV time: one seed's cross-validation, fits and scores (median ±½IQR over the "
            "seeds, the libraries interleaved); sk/bp > 1: backprop faster",
        ],
    )


def _onnx_rows(timings, rows=1):
    """(name, time per call, calls or rows per second, time / backprop predict's)."""
    ref = timings.get("backprop predict")
    out = []
    for name, st in timings.items():
        per = {q: st[q] * rows for q in ("median", "q1", "q3")}
        ratio = f"{st['median'] / ref['median']:.3g}×" if ref and ref["median"] > 0 else "–"
        out.append([name, _time({**st, **per}), f"{1 / st['median']:,.0f}", ratio])
    return out


def onnx(res):
    o = res["onnx"]
    table(
        f"ONNX Runtime {o['onnxruntime']}: the digits network (64 → 32 relu → 10 softmax, "
        f"float32, an ONNX file of {o['file_bytes']:,} bytes), one row",
        ["call", "time per call", "calls/s", "÷ predict"],
        _onnx_rows(o["single_row"]),
        [
            "backprop: net.predict(x), net.predict_proba(x) with x 1-D; ONNX Runtime "
            "(one intra-op thread): session.run on x as (1, 64), for the probabilities, "
            "or with the labels too",
            "median ±½IQR of per-call means; ÷ predict: the time over backprop predict's",
        ],
    )
    table(
        f"ONNX Runtime: the digits network, {o['rows']:,} rows in one call "
        f"({o['threads']} thread{'s' * (o['threads'] > 1)} each)",
        ["call", "time per call", "rows/s", "÷ predict"],
        _onnx_rows(o["batch"], o["rows"]),
    )
    table(
        f"the {o['test_rows']} test digits: labels agree {100 * o['labels_agree']:.1f}%, "
        f"largest |Δp| {o['max_abs_dp']:.2g}; accuracy backprop "
        f"{o['accuracy_backprop']:.4f}, ONNX Runtime {o['accuracy_onnxruntime']:.4f}",
        ["row", "digit", "backprop", "p", "onnxruntime", "p "],
        [
            [i, d["digit"], d["backprop"], f"{d['p_backprop']:.6f}", d["onnxruntime"],
             f"{d['p_onnxruntime']:.6f}"]
            for i, d in enumerate(o["shown"])
        ],
    )  # fmt: skip


def print_all(res):
    header(res)
    sections = ["training", "adam", "solo", "latency", "throughput", "digits", "memory"]
    for name in sections + ["parity", "onnx"]:
        if res.get(name):
            globals()[name](res)
    if "elapsed_s" in res:
        print(
            f"\ntotal time: {res['elapsed_s']:.1f} s; load average at the end "
            f"{' '.join(f'{x:.2f}' for x in res['load_average_end'])}; other processes "
            f"used {100 * res['other_load']:.1f}% of the CPUs during the run"
            + (" (a busy machine: expect noise)" if res["other_load"] > 0.05 else "")
        )


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print_all(json.load(f))
