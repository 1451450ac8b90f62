"""The benchmark suite runs, as a user runs it, and its numpy peer is right.
(Speed is shown by bench/, never asserted here.)"""

import importlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(module):
    """bench.<module>, imported from the repository root."""
    sys.path.insert(0, ROOT)
    try:
        return importlib.import_module(f"bench.{module}")
    finally:
        if ROOT in sys.path:  # (bench takes the root off the path itself when
            sys.path.remove(ROOT)  # backprop there is an unbuilt source folder)


def run_bench(module, *args):
    """`python -m <module> <args>` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_numpy_peer_gradients_match_finite_differences():
    assert _bench("numpy_mlp").check_gradients() < 1e-6


needs_bench = pytest.mark.skipif(
    not os.path.isdir(os.path.join(ROOT, "bench")), reason="no bench/ here"
)


@needs_bench
def test_parity_agreement_is_within_the_larger_spread_or_the_floor():
    agree = _bench("parity").agree
    assert agree({"mean": 0.90, "spread": 0.02}, {"mean": 0.915, "spread": 0.0})
    assert not agree({"mean": 0.90, "spread": 0.002}, {"mean": 0.91, "spread": 0.001})
    assert agree({"mean": 0.90, "spread": 0.0}, {"mean": 0.904, "spread": 0.0})  # the floor
    assert not agree({"mean": 0.90, "spread": 0.0}, {"mean": 0.904, "spread": 0.0}, floor=0.001)


@needs_bench
def test_parity_section_scores_both_libraries_on_the_same_folds(capsys):
    pytest.importorskip("sklearn")
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parity, report, suite = _bench("parity"), _bench("report"), _bench("suite")
    notes, progress = [], []
    cfg = suite.Settings(settle=0.0)
    # rmsprop: a solver that scikit-learn's MLP refuses (backprop's does not)
    res = parity.run(
        cfg, notes, progress.append, ["iris"], seeds=(0,), folds=2, solvers=("adam", "rmsprop")
    )
    assert (res["folds"], res["seeds"]) == (2, [0])
    iris = res["datasets"]["iris"]
    assert (iris["rows"], iris["features"], iris["classes"], iris["metric"]) == (
        150,
        4,
        3,
        "accuracy",
    )
    adam = iris["solvers"]["adam"]
    for lib in ("sklearn", "backprop"):
        r = adam["libraries"][lib]
        assert len(r["fold_scores"]) == 1 and len(r["fold_scores"][0]) == 2
        assert all(0.6 < s <= 1 for s in r["fold_scores"][0])  # 3 classes: chance is 1/3
        assert r["mean"] == pytest.approx(sum(r["fold_scores"][0]) / 2)
        assert r["spread"] == 0.0  # one seed
        assert 0 < r["time"]["median"] == r["total_s"]
    sk, bp = adam["libraries"]["sklearn"], adam["libraries"]["backprop"]
    assert adam["delta"] == pytest.approx(bp["mean"] - sk["mean"])
    assert isinstance(adam["agree"], bool)
    assert adam["time_ratio"] == pytest.approx(sk["time"]["median"] / bp["time"]["median"])
    # scikit-learn's first fold, fitted here on the folds the section says it uses
    X, y = parity.get("iris").load()
    train, test = next(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    model = make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (not converged in 200 iterations)
        model.fit(X[train], y[train])
    assert sk["fold_scores"][0][0] == pytest.approx(model.score(X[test], y[test]))
    # the refused solver: n/a for that library and a note, the other still scored
    rms = iris["solvers"]["rmsprop"]
    assert "solver" in rms["libraries"]["sklearn"]["error"]
    assert rms["agree"] is None and rms["delta"] is None and rms["time_ratio"] is None
    assert 0.6 < rms["libraries"]["backprop"]["mean"] <= 1
    assert any(n.startswith("parity iris rmsprop sklearn: n/a") for n in notes)
    assert progress == ["parity iris: done"]
    report.parity({"parity": res})
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("iris")]
    assert len(rows) == 2 and "n/a" not in rows[0] and rows[1].count("n/a") == 5


@needs_bench
def test_parity_regressors_are_scored_on_the_original_targets():
    pytest.importorskip("sklearn")
    parity, suite = _bench("parity"), _bench("suite")
    notes = []
    res = parity.run(
        suite.Settings(settle=0.0), notes, lambda msg: None, ["diabetes"], (0,), 2, ("adam",)
    )
    assert notes == []
    d = res["datasets"]["diabetes"]
    assert (d["rows"], d["features"], d["classes"], d["metric"]) == (442, 10, None, "R²")
    for r in d["solvers"]["adam"]["libraries"].values():
        # R² of predictions on diabetes's own scale (targets 25–346): a model
        # that had not undone the scaling would score far below 0
        assert all(0.2 < s < 0.8 for s in r["fold_scores"][0])


@needs_bench
def test_parity_is_opt_in():
    main = _bench("__main__")
    assert "parity" not in main.parse_args([]).sections
    assert main.parse_args(["--sections", "parity"]).sections == ["parity"]


@needs_bench
def test_quick_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench(
        "bench",
        "--quick",
        "--sections",
        "training,latency,digits",
        "--workloads",
        "W0,W1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Training: time per step" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["training"]) == {"W0", "W1"}
    for workload in data["training"].values():
        for system in ("backprop_fit", "backprop_step", "numpy"):
            timing = workload["systems"][system]
            assert 0 < timing["min"] <= timing["median"] <= timing["max"]
    digits = data["digits"]["systems"]
    assert digits["backprop_fit"]["test_accuracy"] > 0.85  # 3 epochs in a quick run
    assert digits["numpy"]["test_accuracy"] > 0.85


@needs_bench
def test_distributed_bench_runs_at_one_and_two_ranks(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "distributed.json"
    result = run_bench("bench.distributed", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Projection to more hosts" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["runs"]) == {"1", "2"}
    for name in ("W3", "W4"):
        for ranks in (1, 2):
            entry = data["summary"][f"{name} strong {ranks}"]
            assert entry["step"] > 0
            assert (entry["allreduce"] > 0) == (entry["allreduce_apart"] > 0) == (ranks == 2)
    assert data["summary"]["probe"] > 0


@needs_bench
def test_onnx_is_opt_in():
    main = _bench("__main__")
    assert "onnx" not in main.parse_args([]).sections
    assert main.parse_args(["--sections", "onnx"]).sections == ["onnx"]


@needs_bench
def test_onnx_section_runs_the_digits_network_in_both_runtimes(capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    deploy, report, suite = _bench("deploy"), _bench("report"), _bench("suite")
    cfg = suite.Settings(
        reps=1, warmup=0, settle=0.0, min_sample=0.001, digits_epochs=2, throughput_rows=500
    )
    notes, progress = [], []
    res = deploy.run(cfg, notes, progress.append)
    assert notes == [] and progress == ["onnx single row: done", "onnx batch: done"]
    assert res["labels_agree"] == 1.0 and res["max_abs_dp"] < 1e-5
    assert res["accuracy_backprop"] == res["accuracy_onnxruntime"] > 0.5
    assert res["rows"] == 500 and res["test_rows"] == 359 and res["file_bytes"] > 64 * 32 * 4
    names = [
        "backprop predict",
        "backprop predict_proba",
        "onnxruntime probabilities",
        "onnxruntime probabilities + label",
    ]
    for timings in (res["single_row"], res["batch"]):
        assert list(timings) == names and all(t["median"] > 0 for t in timings.values())
    assert len(res["shown"]) == deploy.SHOWN
    for row in res["shown"]:
        assert row["backprop"] == row["onnxruntime"]
        assert row["p_backprop"] == pytest.approx(row["p_onnxruntime"], abs=1e-5)
    report.onnx({"onnx": res})
    out = capsys.readouterr().out
    assert "500 rows in one call" in out and "labels agree 100.0%" in out


@needs_bench
def test_dropout_bench_times_w3_with_and_without_the_mask():
    result = run_bench("bench.dropout", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "One epoch of fit on W3 784-256-10 b128 f32" in result.stdout
    for name in ("none", "Dropout(0.2)", "Dropout(0.5)"):
        assert f"\n{name} " in result.stdout


@needs_bench
def test_activations_bench_times_each_unit_against_relu(capsys):
    _bench("activations").main(["--quick", "--activations", "relu,gelu,elu"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[4:7]}
    assert set(rows) == {"relu", "gelu", "elu"}
    assert "1.00×" in rows["relu"]


def _tiny(workloads, **changes):
    """A small float64 classifier workload (8-6-3, batch 4, 2 batches)."""
    return workloads.Workload("T", (8, 6, 3), 4, "float64", 2, **changes)


def _quick_settings(suite):
    return suite.Settings(reps=1, warmup=0, settle=0.0, min_sample=0.001)


@needs_bench
def test_jax_peer_steps_follow_the_numpy_gradients():
    pytest.importorskip("jax")
    jax_mlp, numpy_mlp, W = _bench("jax_mlp"), _bench("numpy_mlp"), _bench("workloads")
    wl = _tiny(W)
    X, y = W.make_data(wl, wl.batch)  # one batch: the shuffled epoch is one step too
    params = W.init_params(wl.sizes, wl.hidden, wl.dtype)
    ref = numpy_mlp.NumpyMLP(wl.sizes, wl.hidden, wl.output, wl.dtype, params=params)
    ref.loss_and_grad(X, ref.targets(y))
    grads = [(dW.copy(), db.copy()) for dW, db in zip(ref.dW, ref.db)]
    b1, b2 = W.ADAM["betas"]
    eps = W.ADAM["eps"]
    for optimizer, lr in (("sgd", 0.1), ("adam", 0.01)):
        for run in ("epoch", "step_epoch"):
            model = jax_mlp.JaxMLP(
                wl.sizes, wl.hidden, wl.output, params, X, y, wl.batch, optimizer, lr,
                **(W.ADAM if optimizer == "adam" else {}),
            )  # fmt: skip
            getattr(model, run)()
            for (W0, b0), (gW, gb), (W1, b1_) in zip(params, grads, model.params):
                for start, g, now in ((W0, gW, W1), (b0, gb, b1_)):
                    if optimizer == "sgd":
                        want = start - lr * g
                    else:  # the first Adam step: m = (1 − β₁)g, v = (1 − β₂)g²
                        m, v = (1 - b1) * g, (1 - b2) * g * g
                        want = start - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
                    np.testing.assert_allclose(np.asarray(now), want, rtol=1e-9, atol=1e-12)


@needs_bench
def test_adam_section_times_sgd_and_adam_beside_the_stream(capsys):
    report, suite, systems, W = (_bench(m) for m in ("report", "suite", "systems", "workloads"))
    wl = _tiny(W)
    notes, progress = [], []
    fit, numpy_peer = systems.BackpropFit(), systems.Numpy()
    res = suite.adam([wl], [fit, numpy_peer], _quick_settings(suite), notes, progress.append)
    assert notes == [] and progress == [f"adam {wl.label}: done"]
    t = res["T"]
    # numpy trains with SGD only: it is left out of the section
    assert set(t["systems"]) == {"backprop_fit/sgd", "backprop_fit/adam", "stream"}
    assert all(st["median"] > 0 for st in t["systems"].values())
    assert t["n_params"] == 8 * 6 + 6 + 6 * 3 + 3
    assert t["adam"] == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
    report.adam({"adam": res, "settings": {"reps": 1}})
    out = capsys.readouterr().out
    assert "Adam and SGD: time per step" in out and "÷ stream" in out


@needs_bench
def test_backprop_fit_trains_the_adam_workload_with_adam():
    systems, W = _bench("systems"), _bench("workloads")
    wl = W.adam(_tiny(W))
    X, y = W.make_data(wl, wl.rows())
    fit = systems.BackpropFit()
    m = fit.build(wl, X, y, W.init_params(wl.sizes, wl.hidden, wl.dtype))
    for _ in range(2):
        fit.epoch(m)
    opt = m.net.optimizer
    assert type(opt).__name__ == "Adam" and opt.lr == 1e-3
    assert (opt.betas, opt.eps) == ((0.9, 0.999), 1e-8)
    assert m.net.optimizer_steps == 2 * 2  # the moments carry on from epoch to epoch


@needs_bench
def test_adam_workloads_follow_the_named_ones():
    W = _bench("workloads")
    assert [w.name for w in W.adam_workloads({"W1", "W4"})] == ["W4", "W4b32"]
    w = W.adam(W.get("W3"))
    assert (w.optimizer, w.lr, w.sizes, w.batch) == ("adam", 1e-3, (784, 256, 10), 128)


@needs_bench
def test_solo_runs_each_system_in_its_own_process():
    suite, systems = _bench("suite"), _bench("systems")
    cfg = suite.Settings.make(quick=True, threads=1)
    notes, progress = [], []
    fit, numpy_peer = systems.BackpropFit(), systems.Numpy()
    res = suite.solo([fit, numpy_peer], ["training"], ["W0"], cfg, notes, progress.append)
    assert notes == [] and progress == ["solo backprop_fit: done", "solo numpy: done"]
    w0 = res["training"]["W0"]
    assert w0["label"] == "W0 2-4-1 b4 f64" and set(w0["systems"]) == {"backprop_fit", "numpy"}
    assert all(st["n"] == cfg.reps and st["median"] > 0 for st in w0["systems"].values())
    # numpy has no Adam: the adam section runs the stream alone, in its own process
    stream = suite.solo([numpy_peer], ["adam"], ["W2"], cfg, notes, progress.append)
    assert progress[2:] == ["solo stream: done"]
    assert set(stream["adam"]["W2"]["systems"]) == {"stream"}


@needs_bench
def test_mode_and_worker_arguments():
    main = _bench("__main__")
    assert main.parse_args([]).mode == "interleaved"
    assert "adam" in main.parse_args([]).sections
    assert main.parse_args(["--mode", "both"]).mode == "both"
    for bad in (["--mode", "alone"], ["--worker", "nonesuch"]):
        with pytest.raises(SystemExit):
            main.parse_args(bad)


@needs_bench
def test_solo_report_shows_both_medians_side_by_side(capsys):
    report = _bench("report")

    def st(median):
        return {"median": median, "q1": median, "q3": median}

    res = {
        "settings": {"reps": 3},
        "training": {"W1": {"label": "W1 net", "systems": {"numpy": st(2e-6)}}},
        "solo": {"training": {"W1": {"label": "W1 net", "systems": {"numpy": st(3e-6)}}}},
    }
    report.solo(res)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("W1"))
    assert row.split()[2:] == ["2.00", "µs", "3.00", "µs"]


@needs_bench
def test_kernels_bench_times_the_layer_products_against_blas(tmp_path):
    out = tmp_path / "kernels.json"
    result = run_bench(
        "bench.kernels", "--quick", "--layers-only", "--kinds", "forward,sgd",
        "--dtypes", "float32", "--builds", "portable", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "small kernels against BLAS" in result.stdout
    assert "W1 64-32-10 b32 f32" in result.stdout  # the fit epochs
    rows = json.loads(out.read_text())
    shapes = {(r["kind"], r["m"], r["n"], r["k"]) for r in rows}
    assert ("forward", 32, 32, 64) in shapes and ("sgd", 64, 32, 32) in shapes  # W1's first layer
    assert all(r["kernel"] > 0 and r["blas"] > 0 for r in rows)


def test_bench_split_samples_hold_the_same_epochs_in_both_modes(monkeypatch):
    """bench.split: a sample is k back-to-back epochs, the same k for both
    modes: the count the slower mode needs to last min_time (autorange, here
    a stand-in that answers by the mode in force); each sample runs its
    epochs in its own mode."""
    from backprop import _kernels

    split = _bench("split")
    needs = {"always": 20, "never": 5}  # epochs each mode needs (always: the slower)
    asked = []

    def autorange(fn, min_time):
        asked.append((_kernels.split_mode(), min_time))
        return needs[_kernels.split_mode()]

    monkeypatch.setattr(split, "autorange", autorange)
    modes = []

    class Epochs:
        def epoch(self, model):
            modes.append(_kernels.split_mode())

    assert split.epochs_per_sample("split", Epochs(), None, 0.05) == 20
    assert sorted(asked) == [("always", 0.05), ("never", 0.05)]
    for mode in ("never", "always"):
        modes.clear()
        assert split.epoch_sampler("split", mode, Epochs(), None, 20)() >= 0
        assert modes == [mode] * 20
    assert split.epochs_per_sample("split", Epochs(), None, 0) == 1
