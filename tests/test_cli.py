"""The command line, run as a user runs it: a separate process."""
import re
import subprocess
import sys
import tempfile

import pytest


def run(*args):
    # From a neutral directory, so that `python -m` finds the installed package.
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "backprop", *args], capture_output=True,
                              text=True, timeout=300, cwd=cwd)


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
    (("train", "--data", "mnist"), 2, "invalid choice"),
    (("train", "--epochs", "0"), 2, "must be at least 1"),
    (("train", "--test-size", "2"), 2, "--test-size"),
    ((), 2, "usage"),
])
def test_bad_options_exit_2(args, code, message):
    result = run(*args)
    assert result.returncode == code
    assert message in result.stderr + result.stdout


def test_info():
    result = run("info")
    assert result.returncode == 0 and result.stdout.startswith("backprop ")
