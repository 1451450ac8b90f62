"""The measurements of `python -m bench`, each section returning plain data
(dicts of numbers, as written to --json); bench/report.py prints them.

- training: seconds per training step of every system on every workload,
  interleaved (timing.interleave), with the step's FLOPs; `add_rates` then
  adds the achieved GFLOP/s and the machine's limit (FLOPs / large-GEMM
  throughput, measured before and after the run, the better taken);
- adam: seconds per step of the systems that train with Adam (backprop fit,
  torch with fused=True, jax, jax step) on W2, W3, W4 and W4 at batch 32,
  by SGD and by Adam interleaved in one run, beside `stream`: the time of
  the numpy passes p += g, m += g, v += g over float32 arrays of the
  network's parameter count (each of Adam's four arrays read once from
  memory, g from cache after the first pass, and p, m, v written once: the
  traffic of the update, which its arithmetic cannot make shorter), so that
  Adam's extra time over SGD can be set against it;
- solo: the training and adam sections again, each system alone in a fresh
  `python -m bench --worker NAME` process (its JSON on stdout), merged;
- latency: one-row prediction (W1 and W3 networks), the mean of as many
  back-to-back calls as take `min_sample` seconds, per sample;
- throughput: batch prediction of 10,000 rows by the W3 network, and whether
  the systems' labels agree (backprop, numpy and torch share the weights);
- digits: the embedded handwritten digits end to end: build, 20 epochs of
  SGD (batch 32, lr 0.1), wall time and test accuracy;
- memory: each system's training run in a fresh subprocess: peak RSS growth
  (the high-water mark VmHWM, reset through /proc/self/clear_refs just
  before, minus the RSS before; ru_maxrss would not do: after fork + exec it
  keeps the parent's peak) and the tracemalloc peak of a second, traced run;
- parity (opt-in): backprop.sklearn's MLPClassifier/MLPRegressor against
  scikit-learn's own, cross-validated on seven data sets with both
  libraries' defaults (bench/parity.py): scores, their agreement, wall time;
- onnx (opt-in): the digits network exported to ONNX, one row and 10,000
  rows in ONNX Runtime against backprop's predict (bench/deploy.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np

from . import deploy as _deploy
from . import parity as _parity
from . import workloads as W
from .machine import gemm_peak, rss_bytes, set_threads
from .systems import ALL_SYSTEMS
from .timing import calls, interleave, per_unit, timed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Settings:
    quick: bool = False
    threads: int = 2
    reps: int = 7  # measured repetitions (after `warmup`)
    warmup: int = 1
    settle: float = 0.2  # seconds of pause before each sample (see timing)
    min_sample: float = 0.05  # seconds a sample lasts at least (timing.autorange)
    sklearn_k2: int = 4  # sklearn's marginal cost: max_iter 1 → k2
    gemm_n: int = 2048
    gemm_repeats: int = 5
    throughput_rows: int = 10_000
    digits_epochs: int = 20
    memory_workloads: tuple = ("W3", "W4")
    adam_workloads: tuple = ("W2", "W3", "W4", "W4b32")  # those of them asked for
    parity_seeds: tuple = (0, 1, 2)  # the estimators' random_state
    parity_folds: int = 5

    @classmethod
    def make(cls, quick: bool, threads: int) -> Settings:
        full = cls(threads=threads)
        if not quick:
            return full
        # (the pause stays: without it another pool's spinning threads made a
        # W3 step 20× slower here)
        return replace(
            full,
            quick=True,
            reps=3,
            settle=0.1,
            min_sample=0.005,
            gemm_n=1024,
            gemm_repeats=2,
            throughput_rows=2_000,
            digits_epochs=3,
            memory_workloads=("W3",),
            adam_workloads=("W2", "W4b32"),
            parity_seeds=(0,),
        )


def _guarded_interleave(samplers, cfg, notes, what):
    errors = {}
    stats = interleave(samplers, cfg.reps, cfg.warmup, errors, cfg.settle)
    notes.extend(f"{what} {name}: failed: {err}" for name, err in errors.items())
    return stats


def _build_all(systems, notes, what, make):
    """{system name: make(system)} for the systems whose make() works."""
    out = {}
    for s in systems:
        try:
            out[s.name] = make(s)
        except Exception as exc:  # noqa: BLE001  (a peer must never stop the suite)
            notes.append(f"{what} {s.title}: failed to build: {exc!r}")
    return out


def peaks(cfg, dtypes, before=None) -> dict:
    """GEMM throughput (FLOP/s) of scipy's BLAS for each dtype; with an
    earlier measurement `before`, the better of the two (a peak is a best
    case: measuring it twice, at the start and at the end of the run, keeps
    a moment of contention on a shared machine from lowering it)."""
    now = {dt: gemm_peak(dt, cfg.gemm_n, cfg.gemm_repeats) for dt in dtypes}
    return {dt: max(v, (before or {}).get(dt, 0.0)) for dt, v in now.items()}


def add_rates(training_results: dict, peak: dict) -> None:
    """Fill in the machine's limit, GFLOP/s and percent of the GEMM peak
    (once the peak is final)."""
    for w in training_results.values():
        flops, top = w["flops_per_step"], peak[w["dtype"]]
        w["limit_s"] = flops / top
        for st in w["systems"].values():
            st["gflops"] = flops / st["median"] / 1e9
            st["pct_peak"] = 100 * flops / st["median"] / top


def _step_samplers(wl, X, y, params, systems, cfg, notes, what) -> dict:
    """{system name: its sampler of seconds per training step on wl}."""
    return _build_all(
        systems,
        notes,
        what,
        lambda s: s.step_sampler(
            wl, X, y, params, min_time=cfg.min_sample, k1=1, k2=cfg.sklearn_k2
        ),
    )


def _workload_facts(wl, X) -> dict:
    return {
        "label": wl.label,
        "sizes": wl.sizes,
        "batch": wl.batch,
        "dtype": wl.dtype,
        "rows": X.shape[0],
        "batches": -(-X.shape[0] // wl.batch),
        "lr": wl.lr,
        "note": wl.note,
        "flops_per_step": wl.flops_per_step(),
    }


def training(wls, systems, cfg, notes, progress) -> dict:
    results = {}
    for wl in wls:
        X, y = W.make_data(wl, wl.rows(cfg.quick))
        params = W.init_params(wl.sizes, wl.hidden, wl.dtype)
        samplers = _step_samplers(wl, X, y, params, systems, cfg, notes, wl.name)
        stats = _guarded_interleave(samplers, cfg, notes, wl.name)
        results[wl.name] = {
            **_workload_facts(wl, X),
            "systems": {name: st.to_dict() for name, st in stats.items()},
        }
        progress(f"training {wl.label}: done")
    return results


def stream_sampler(n: int, dtype, min_time: float):
    """A sampler of the time to stream the Adam update's four arrays of n
    floats (parameters p, gradient g, moments m and v) once: p += g, m += g,
    v += g in numpy, in place (see the module's docstring)."""
    p, g, m, v = np.random.default_rng(0).standard_normal((4, n)).astype(dtype)

    def run():
        np.add(p, g, out=p)
        np.add(m, g, out=m)
        np.add(v, g, out=v)

    return calls(run, min_time)


def adam(wls, systems, cfg, notes, progress, stream=True) -> dict:
    """Seconds per step by SGD and by Adam of every system that trains with
    Adam (keys 'name/sgd', 'name/adam'), and with `stream` the stream time
    (key 'stream'), all interleaved in one run per workload."""
    results = {}
    for wl in wls:
        X, y = W.make_data(wl, wl.rows(cfg.quick))
        params = W.init_params(wl.sizes, wl.hidden, wl.dtype)
        samplers = {}
        both = [s for s in systems if "adam" in s.optimizers]
        for run in (wl, W.adam(wl)):
            what = f"adam {wl.name} {run.optimizer}"
            built = _step_samplers(run, X, y, params, both, cfg, notes, what)
            samplers.update({f"{name}/{run.optimizer}": f for name, f in built.items()})
        if stream:
            samplers["stream"] = stream_sampler(wl.n_params, wl.dtype, cfg.min_sample)
        stats = _guarded_interleave(samplers, cfg, notes, f"adam {wl.name}")
        results[wl.name] = {
            **_workload_facts(wl, X),
            "adam": {"lr": W.ADAM_LR, **W.ADAM},
            "n_params": wl.n_params,
            "systems": {name: st.to_dict() for name, st in stats.items()},
        }
        progress(f"adam {wl.label}: done")
    return results


def _inference_systems(systems):
    return [s for s in systems if s.inference]


def _inference_models(systems, wl, X, y, notes, what):
    """{name: (system, model)} ready to predict: backprop trained one epoch
    on (X, y), numpy and torch given backprop's trained weights (so that all
    three must predict the same labels), sklearn fitted one epoch."""
    weights = [W.init_params(wl.sizes, wl.hidden, wl.dtype)]

    def make(s):
        model = s.inference_model(wl, X, y, weights[0])
        if s.name == "backprop_fit":  # first in ALL_SYSTEMS
            weights[0] = s.weights(model)
        return s, model

    return _build_all(_inference_systems(systems), notes, what, make)


def latency(systems, cfg, notes, progress) -> dict:
    results = {}
    for name in ("W1", "W3"):
        wl = W.get(name)
        X, y = W.make_data(wl, wl.rows(True))
        x = X[0].copy()
        models = _inference_models(systems, wl, X, y, notes, f"latency {name}")
        # (the samplers run within this iteration)
        samplers = {
            n: calls(lambda s=s, m=m: s.predict_one(m, x), cfg.min_sample)  # noqa: B023
            for n, (s, m) in models.items()
        }
        stats = _guarded_interleave(samplers, cfg, notes, f"latency {name}")
        results[name] = {
            "label": wl.label,
            "min_sample_s": cfg.min_sample,
            "systems": {n: st.to_dict() for n, st in stats.items()},
        }
    progress("single-row latency: done")
    return results


def throughput(systems, cfg, notes, progress) -> dict:
    wl = W.get("W3")
    X, y = W.make_data(wl, cfg.throughput_rows, seed=1)
    models = _inference_models(
        systems, wl, X[: wl.batch * 8], y[: wl.batch * 8], notes, "throughput"
    )
    samplers = {
        n: per_unit(lambda s=s, m=m: s.predict(m, X), X.shape[0]) for n, (s, m) in models.items()
    }
    stats = _guarded_interleave(samplers, cfg, notes, "throughput")
    labels = {n: np.asarray(s.predict(m, X)) for n, (s, m) in models.items()}
    ref = labels.get("backprop_fit")
    progress("batch throughput: done")
    return {
        "label": wl.label,
        "rows": X.shape[0],
        "systems": {
            n: {
                **st.to_dict(),
                "rows_per_s": 1 / st.median,
                "agree_with_backprop": (None if ref is None else float(np.mean(labels[n] == ref))),
            }
            for n, st in stats.items()
        },
    }


DIGITS = W.Workload("digits", (64, 32, 10), 32, "float32", 0, lr=0.1)


def digits(systems, cfg, notes, progress) -> dict:
    import backprop as bp

    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, dtype="float32")
    params = W.init_params(DIGITS.sizes, DIGITS.hidden, DIGITS.dtype)
    last = {}  # each system's latest model

    def sampler(s):
        def train():
            last[s.name] = s.train(DIGITS, X_train, y_train, params, cfg.digits_epochs, DIGITS.lr)

        return lambda: timed(train)

    samplers = _build_all(_inference_systems(systems), notes, "digits", sampler)
    stats = _guarded_interleave(samplers, cfg, notes, "digits")
    out = {}
    for name, st in stats.items():
        s = next(s for s in systems if s.name == name)
        acc = float(np.mean(np.asarray(s.predict(last[name], X_test)) == y_test))
        out[name] = {**st.to_dict(), "test_accuracy": acc}
    progress("digits end to end: done")
    return {
        "epochs": cfg.digits_epochs,
        "batch": DIGITS.batch,
        "lr": DIGITS.lr,
        "train_rows": X_train.shape[0],
        "test_rows": X_test.shape[0],
        "systems": out,
    }


def onnx(systems, cfg, notes, progress) -> dict:
    """(The systems are not used: the section runs the digits network in
    backprop and in ONNX Runtime, see bench/deploy.py.)"""
    return _deploy.run(cfg, notes, progress)


def parity(systems, cfg, notes, progress) -> dict:
    """(The systems are not used: the section compares two libraries'
    scikit-learn estimators, see bench/parity.py.)"""
    return _parity.run(cfg, notes, progress)


# -- memory: one subprocess per system and workload -------------------------------


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ≥ 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """The RSS high-water mark of this process (VmHWM in /proc/self/status).
    Not ru_maxrss: after fork + exec that also carries the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def memory_child(system_name: str, workload: str, quick: bool, threads: int) -> dict:
    """In a fresh process: one training run (build + 1 epoch) measured by
    RSS, then a second one under tracemalloc."""
    system = next(s for s in ALL_SYSTEMS if s.name == system_name)
    if system.requires:
        __import__(system.requires)  # so that threadpoolctl sees its libraries
    set_threads(threads)
    wl = W.get(workload)
    X, y = W.make_data(wl, wl.rows(quick))
    params = W.init_params(wl.sizes, wl.hidden, wl.dtype)

    def run():
        system.train(wl, X, y, params, 1, wl.lr)

    # A warm-up on a tiny network first, so that lazy imports and first-use
    # set-up (thread pools, BLAS buffers) are not counted as the training's
    # memory, while no freed blocks of the measured sizes are left to reuse.
    tiny = replace(wl, sizes=(wl.sizes[0], 2, wl.sizes[-1]), batch=4)
    system.train(tiny, X[:8], y[:8], W.init_params(tiny.sizes, tiny.hidden, tiny.dtype), 1, wl.lr)
    before = rss_bytes()
    reset = _reset_peak_rss()
    seconds = timed(run)
    peak = _peak_rss_bytes()
    tracemalloc.start()
    run()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "rss_before": before,
        "peak_rss_growth": peak - before,
        "peak_reset": reset,
        "tracemalloc_peak": traced_peak,
        "seconds": seconds,
        "data_bytes": X.nbytes + y.nbytes,
        "param_bytes": sum(Wt.nbytes + b.nbytes for Wt, b in params),
    }


def run_child(args, notes, what) -> dict | None:
    """`python -m <args>` in a fresh process from the repository root: the
    JSON on the last line of its output, or None and a note if it failed."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    cmd = [sys.executable, "-m", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        notes.append(f"{what}: failed: {tail}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(systems, cfg, notes, progress) -> dict:
    results = {}
    for workload in cfg.memory_workloads:
        rows = {}
        for s in _inference_systems(systems):
            args = ["bench.suite", "memory-child", s.name, workload]
            found = run_child(
                args + ["1" if cfg.quick else "0", str(cfg.threads)],
                notes,
                f"memory {workload} {s.title}",
            )
            if found is not None:
                rows[s.name] = found
        results[workload] = {"label": W.get(workload).label, "systems": rows}
    progress("memory: done")
    return results


# -- solo: each system alone in a fresh process --------------------------------------

SOLO_SECTIONS = ("training", "adam")
STREAM = "stream"  # the solo worker that times the stream alone


def solo(systems, sections, workloads, cfg, notes, progress) -> dict:
    """The `sections` (of SOLO_SECTIONS) measured by one fresh `python -m
    bench --worker NAME` process per system with work in them (and one for
    the stream when adam is among them), merged into the sections' own form."""
    merged: dict = {}
    workers = [s.name for s in systems if "training" in sections or "adam" in s.optimizers]
    workers += [STREAM] if "adam" in sections else []
    for name in workers:
        args = ["bench", "--worker", name, "--sections", ",".join(sections)]
        args += ["--workloads", ",".join(workloads), "--threads", str(cfg.threads)]
        found = run_child(args + ["--quick"] * cfg.quick, notes, f"solo {name}")
        if found is None:
            continue
        notes.extend(f"solo {name}: {note}" for note in found.pop("notes"))
        for section, per_workload in found.items():
            into = merged.setdefault(section, {})
            for key, entry in per_workload.items():
                into.setdefault(key, {**entry, "systems": {}})["systems"].update(entry["systems"])
        progress(f"solo {name}: done")
    return merged


if __name__ == "__main__" and sys.argv[1:2] == ["memory-child"]:
    name, workload, quick, threads = sys.argv[2:6]
    print(json.dumps(memory_child(name, workload, quick == "1", int(threads))))
