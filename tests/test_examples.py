"""Every example runs headless, writes its figure, and shows what it claims."""

import os
import runpy

import numpy as np
import pytest

pytest.importorskip("matplotlib")  # the optional extra "plot"; in the test extra
from matplotlib import image

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run(name, out):
    main = runpy.run_path(os.path.join(EXAMPLES, name), run_name="example")["main"]
    return main(str(out))


def test_gradient_descent_on_w_squared(tmp_path):
    paths = run("01_gradient_descent.py", tmp_path)
    assert (tmp_path / "gradient_descent.png").stat().st_size > 10_000
    for lr, path in paths.items():  # w_k = w₀ (1 − 2η)^k exactly
        np.testing.assert_allclose(path, (1 - 2 * lr) ** np.arange(len(path)), rtol=1e-12)
    assert abs(paths[0.3][-1]) < 1e-6 < 0.3 < abs(paths[0.02][-1]) < 1  # good vs too small
    assert np.all(np.abs(paths[1.0]) == 1)  # oscillates
    assert abs(paths[1.05][-1]) > 5 * abs(paths[1.05][0])  # diverges


def test_where_descent_ends_depends_on_the_start(tmp_path):
    result = run("02_local_minima.py", tmp_path)
    assert (tmp_path / "local_minima.png").stat().st_size > 10_000
    ends = result["non_convex"]
    assert ends[-2.0] == pytest.approx(-1.3008, abs=1e-3) == ends[-0.5]
    assert ends[2.0] == pytest.approx(1.1309, abs=1e-3) == ends[0.5]
    assert all(abs(w) < 1e-3 for w in result["convex"].values())  # one minimum


def test_chain_rule_trace(tmp_path, capsys):
    trace = run("05_chain_rule.py", tmp_path)
    assert (tmp_path / "chain_rule.png").stat().st_size > 10_000
    assert trace.max_rel_error_numerical < 1e-6
    assert "layer 1 (sigmoid)" in capsys.readouterr().out


def test_plot_needs_two_columns_for_a_boundary():
    from backprop import plot

    with pytest.raises(ValueError, match="two columns"):
        plot.decision_boundary(None, np.zeros((3, 3)), [0, 1, 0])


def test_perceptron(tmp_path):
    r = run("03_perceptron.py", tmp_path)
    assert (tmp_path / "perceptron.png").stat().st_size > 10_000
    assert r["AND"] and r["OR"] and r["NAND"]  # one unit each
    assert r["xor_single_units"] == 0  # no single unit computes XOR
    assert r["xor_trained_single_correct"] <= 3  # a trained one fails too
    assert r["xor_two_layers"] and r["xor_trained_two_layers"]  # two layers do


def test_numerical_and_analytic_gradients(tmp_path):
    rows = run("04_numerical_vs_analytic.py", tmp_path)
    assert (tmp_path / "numerical_vs_analytic.png").stat().st_size > 10_000
    weights, errors, numerical, analytic = map(np.array, zip(*rows))
    assert errors.max() < 1e-6  # they agree
    assert np.all(numerical > 100 * analytic)  # backpropagation is cheaper …
    assert numerical[-1] / numerical[0] > 5  # … and the numerical cost grows


def test_binary_classifier(tmp_path):
    r = run("06_binary_classifier.py", tmp_path)
    assert (tmp_path / "binary_classifier.png").stat().st_size > 10_000
    assert np.array_equal(r["p"] >= 0.5, r["y"] == 1)
    p, y = np.asarray(r["p"]), r["y"]
    expect = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(r["losses"], expect, rtol=1e-6, atol=1e-12)


def test_digits_training_curves(tmp_path):
    with pytest.warns(RuntimeWarning, match="too large"):  # lr 5 diverges, as shown
        r = run("07_digits_training_curves.py", tmp_path)
    assert (tmp_path / "digits_training.png").stat().st_size > 10_000
    acc = r["accuracy"]
    assert acc[0.5] > 0.95 and acc[0.05] > 0.95 and acc[0.002] < acc[0.05]
    losses = {k: v.history["loss"] for k, v in r["histories"].items()}
    assert losses["lr = 0.002"][-1] > 10 * losses["lr = 0.05"][-1]  # too small learns slowly
    assert not np.isfinite(losses["lr = 5.0"][-1])  # too large diverges
    assert 0 < len(r["wrong"]) < 20


def test_cross_entropy_learns_faster_than_squared_error(tmp_path):
    curves = run("08_mse_vs_cross_entropy.py", tmp_path)
    assert (tmp_path / "mse_vs_cross_entropy.png").stat().st_size > 10_000
    mse, ce = curves.values()
    assert ce[0] > mse[0] + 0.1 and ce[2] > mse[2] and ce[-1] >= mse[-1]


def test_dropout_against_overfitting(tmp_path):
    runs = run("10_dropout.py", tmp_path)
    figure = image.imread(tmp_path / "dropout.png")
    assert figure.shape[:2] == (450, 1500)  # three panels side by side
    plain, dropped = runs["no dropout"], runs["Dropout(0.5)"]
    assert len(plain["train"]) == len(plain["val"]) == len(dropped["val"]) == 300
    # without dropout the network learns the points by heart:
    assert plain["train"][-1] < 0.4 * plain["train"][0]
    assert plain["val"][-1] > 1.5 * plain["val"].min()  # (its lowest within the first epochs)
    assert plain["val"].argmin() < 20
    # with it, the validation loss ends lower and the gap is smaller
    assert dropped["val"][-1] < 0.7 * plain["val"][-1]
    gaps = {label: r["val"][-1] - r["train"][-1] for label, r in runs.items()}
    assert 0 < gaps["Dropout(0.5)"] < 0.5 * gaps["no dropout"]
    assert dropped["net"].dropout == (0.5, 0.5, 0.0) and plain["net"].dropout == (0.0, 0.0, 0.0)


def test_plot_names_the_extra_when_matplotlib_is_missing(monkeypatch):
    import sys

    from backprop import plot

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "backprop\[plot\]"'):
        plot.loss_curves({"a": [1.0, 0.5]})
