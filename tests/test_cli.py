"""The command line, run as a user runs it: a separate process."""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import backprop as bp

# The folder that holds the backprop under test: the subprocesses import it too.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bp.__file__)))


def command(*args):
    """argv and environment to run `python -m backprop *args` on the backprop under test."""
    path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "backprop", *args], {**os.environ, "PYTHONPATH": path}


def run(*args):
    # From a neutral directory, so that the working directory plays no part.
    argv, env = command(*args)
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd,
                              env=env)


def test_train_digits_prints_epochs_and_accuracy():
    result = run("train", "--epochs", "12")
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"^epoch +(\d+)/12 +loss ([0-9.]+)$", result.stdout, re.M)
    assert [int(e) for e, _ in epochs] == list(range(1, 13))
    losses = [float(v) for _, v in epochs]
    assert losses[-1] < losses[0]
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.9


def test_train_xor():
    result = run("train", "--data", "xor", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "test accuracy 1.0000" in result.stdout


@pytest.mark.parametrize("args,code,message", [
    (("train", "--lr", "-1"), 2, "must be a finite number > 0"),
    (("train", "--data", "mnist.csv"), 1, "cannot read mnist.csv"),
    (("train", "--optimizer", "lbfgs"), 2, "invalid choice"),
    (("predict", "missing.npz", "x.csv"), 1, "missing.npz: not a usable backprop model"),
    (("train", "--epochs", "0"), 2, "must be at least 1"),
    (("train", "--test-size", "2"), 2, "must lie in (0, 1)"),
    ((), 2, "usage"),
])
def test_bad_options_exit_2(args, code, message):
    result = run(*args)
    assert result.returncode == code
    assert message in result.stderr + result.stdout


def test_info():
    result = run("info")
    assert result.returncode == 0 and result.stdout.startswith("backprop ")


def test_csv_train_save_and_predict(tmp_path):
    """A labelled CSV with a header and named classes: train, save, predict
    raw rows; the model file carries the standardisation and class names."""
    X, y = bp.datasets.make_spirals(300, noise=0.05, seed=2)
    X = X * 50 + 100                                # far from standardised
    names = np.array(["left", "right"])[y]
    lines = ["a,b,arm"] + [f"{p:.6f},{q:.6f},{n}" for (p, q), n in zip(X, names)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "rows.csv").write_text("\n".join(f"{p:.6f},{q:.6f}" for p, q in X[:40]) + "\n")
    model = tmp_path / "model.npz"
    result = run("train", "--data", str(tmp_path / "train.csv"), "--hidden", "32", "32",
                 "--epochs", "300", "--optimizer", "adam", "--lr", "0.01", "--save", str(model),
                 "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"saved {model}" in result.stdout
    predicted = run("predict", str(model), str(tmp_path / "rows.csv"))
    assert predicted.returncode == 0, predicted.stderr
    labels = predicted.stdout.split()
    assert set(labels) <= {"left", "right"} and len(labels) == 40
    assert np.mean(np.array(labels) == names[:40]) > 0.85
    proba = run("predict", str(model), str(tmp_path / "train.csv"), "--proba")
    rows = [list(map(float, line.split(","))) for line in proba.stdout.split()]
    assert len(rows) == 300 and all(abs(sum(r) - 1) < 1e-4 for r in rows)


def test_bad_csv_files(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    result = run("train", "--data", str(tmp_path / "ragged.csv"))
    assert result.returncode == 1 and "line 2: 2 columns, expected 3" in result.stderr
    (tmp_path / "nan.csv").write_text("1,2,0\n3,nan,1\n4,5,1\n")
    result = run("train", "--data", str(tmp_path / "nan.csv"))
    assert result.returncode == 1 and "NaN" in result.stderr
    (tmp_path / "one.csv").write_text("1,2,0\n3,4,0\n")
    result = run("train", "--data", str(tmp_path / "one.csv"))
    assert result.returncode == 1 and "single class" in result.stderr


def test_bench_subcommand_runs_the_suite():
    # As a user runs it: the installed `backprop` command, in a checkout.
    import shutil
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = shutil.which("backprop", path=os.path.dirname(sys.executable))
    if command is None or not os.path.isdir(os.path.join(root, "bench")):
        pytest.skip("needs the installed `backprop` command and a checkout with bench/")
    result = subprocess.run([command, "bench", "--quick", "--sections", "digits",
                             "--threads", "1"],
                            capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Digits end to end" in result.stdout
