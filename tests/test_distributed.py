"""Data-parallel training over MPI.  The collective tests (tests/mpi/) run
here under `mpiexec -n 2` and `-n 3`; a failing rank must end the job."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import backprop as bp

dist = pytest.importorskip("backprop.distributed")
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def mpiexec(ranks, *args, timeout=300):
    """Run `python args…` on `ranks` ranks, from a folder without backprop's
    sources (so that the ranks import the installed package)."""
    if MPIEXEC is None:
        pytest.fail("mpiexec is missing: install the test extra (it brings the mpich wheel)")
    start = time.monotonic()
    result = subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )
    return result, time.monotonic() - start


@pytest.mark.parametrize("ranks", [2, 3])
def test_collectives_under_mpiexec(ranks, tmp_path):
    result, _ = mpiexec(
        ranks, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), HERE
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count(" passed") == ranks and "skipped" not in result.stdout


@pytest.mark.parametrize(
    "how, message", [("nan", "training failed"), ("leave", "a rank failed or left"), ("kill", "")]
)
def test_a_failing_rank_ends_the_job(how, message):
    result, seconds = mpiexec(2, os.path.join(HERE, "failing_rank.py"), how, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert seconds < 60


def test_arguments_are_checked():
    net = bp.Sequential(bp.Dense(4, 2, activation="softmax"), loss="cross_entropy")
    X, y = np.zeros((10, 4)), np.zeros(10, int)
    with pytest.raises(ValueError, match="X must be a 2-D array with 4 columns"):
        dist.fit(net, X[:, :3], y)
    with pytest.raises(ValueError, match="y must have one row per sample"):
        dist.fit(net, X, y[:5])
    with pytest.raises(ValueError, match="timeout"):
        dist.fit(net, X, y, timeout=0)
    with pytest.raises(TypeError, match="net must be a backprop.Sequential"):
        dist.fit("net", X, y)
    with pytest.raises(ValueError, match="batch_size"):
        dist.fit(net, X, y, batch_size=0)


def test_apply_gradients_is_the_second_half_of_train_step():
    X = np.random.default_rng(0).normal(size=(32, 4))
    y = (X[:, 0] > 0).astype(int)
    a = bp.Sequential(
        bp.Dense(4, 6, activation="tanh"),
        bp.Dense(6, 2, activation="softmax"),
        loss="cross_entropy",
        seed=0,
    )
    a.optimizer = bp.Adam(0.01)
    b = a.copy()
    b.optimizer = bp.Adam(0.01)
    for _ in range(3):
        a.train_step(X, y)
        b.loss_and_grad(X, y)
        b.apply_gradients()
    np.testing.assert_array_equal(a.params, b.params)
    with pytest.raises(ValueError, match="lr"):
        b.apply_gradients(lr=-1)
