"""Parallel hyper-parameter sweeps (examples/09_sweep.py): GridSearchCV with
n_jobs in joblib's processes and on a Dask cluster finds what the serial
search finds, score for score, and a model in a worker with n_threads=1
trains on one BLAS thread."""

import contextlib
import os
import runpy
import threading
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")  # an optional extra; installed by the test extra

import joblib
from sklearn.model_selection import GridSearchCV

import backprop as bp
from backprop.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "09_sweep.py"
)


@pytest.fixture(scope="module", autouse=True)
def environment_kept():
    """Starting a Dask cluster sets OPENBLAS_NUM_THREADS and the like in this
    process's environment too; the tests after these must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def sweeps():
    """The example's searches with two workers: one model at a time, in two
    joblib processes and (with Dask installed) on two Dask workers."""
    return runpy.run_path(EXAMPLE, run_name="example")["main"](n_workers=2)


def test_grid_search_in_two_processes_matches_one_at_a_time(sweeps):
    serial, parallel = sweeps["serial"], sweeps["joblib"]
    assert np.ptp(serial["mean_test_score"]) > 0.01  # the settings differ …
    np.testing.assert_array_equal(parallel["mean_test_score"], serial["mean_test_score"])
    assert parallel["best_params"] == serial["best_params"]  # … and both runs agree
    assert parallel["test_score"] == serial["test_score"] > 0.95


def test_grid_search_on_a_dask_cluster_matches_one_at_a_time(sweeps):
    pytest.importorskip("dask.distributed")
    serial, dask = sweeps["serial"], sweeps["dask"]
    np.testing.assert_array_equal(dask["mean_test_score"], serial["mean_test_score"])
    assert dask["best_params"] == serial["best_params"]
    assert dask["test_score"] == serial["test_score"]


def helper_thread_cpu() -> float:
    """CPU seconds spent so far by this process's threads that Python did not
    start: BLAS's helper threads (read from Linux's /proc)."""
    python_threads = {t.native_id for t in threading.enumerate()}
    ticks = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) not in python_threads:
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/self/task/{tid}/stat") as stat,
            ):
                ticks += sum(map(int, stat.read().rsplit(")", 1)[1].split()[11:13]))
    return ticks / os.sysconf("SC_CLK_TCK")


class HelperThreadCPU(MLPClassifier):
    """Trains as MLPClassifier does, in a BLAS pool with room for two
    threads; its score is the CPU time BLAS's helper threads spent on it."""

    def fit(self, X, y):
        with bp.num_threads(2):
            time.sleep(0.5)  # BLAS's idle threads spin a moment (~0.1 s) before sleeping
            before = helper_thread_cpu()
            super().fit(X, y)
            self.helper_cpu_ = helper_thread_cpu() - before
        return self

    def score(self, X, y):
        return self.helper_cpu_


def test_each_model_in_a_dask_worker_trains_on_one_blas_thread():
    distributed = pytest.importorskip("dask.distributed")
    X, y = bp.datasets.load_digits()
    search = GridSearchCV(
        HelperThreadCPU((512,), max_iter=30, random_state=0),
        {"n_threads": [1, 2]},
        cv=2,
        refit=False,
        error_score="raise",
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        search.fit(X, y)
    one, two = search.cv_results_["mean_test_score"]
    assert two > 0.02  # a second thread shows as helper CPU time …
    assert one < 0.01  # … and with n_threads=1 the helpers did nothing


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_n_threads_reaches_the_network_and_is_checked(Estimator):
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    model = Estimator(max_iter=2, n_threads=1, warm_start=True).fit(X, y)
    assert model.net_.n_threads == 1
    assert model.set_params(n_threads=None).fit(X, y).net_.n_threads is None
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_threads"):
            Estimator(n_threads=bad).fit(X, y)
