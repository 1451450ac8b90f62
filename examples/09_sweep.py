"""A hyper-parameter sweep in parallel: GridSearchCV over MLPClassifier on
the handwritten digits, one model per core, first in joblib's worker
processes on this machine, then on a Dask cluster (here a LocalCluster; a
real cluster is used the same way, through its scheduler's address).

Each model trains with n_threads=1: the sweep already keeps every core busy
with a model of its own, so BLAS threads inside the models would only make
them compete for the cores.  Every search gives the same scores: with a
fixed random_state, training is deterministic wherever it runs.

    python examples/09_sweep.py [N_WORKERS]      (default: one per core)

The Dask part needs Dask: pip install "backprop[dask]".
"""

import os
import sys
import time
import warnings

import joblib
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, ParameterGrid

import backprop as bp
from backprop.sklearn import MLPClassifier

GRID = {
    "hidden_layer_sizes": [(64,), (256,)],
    "alpha": [1e-4, 1e-2],
    "learning_rate_init": [1e-3, 1e-2],
}


def sweep(data, n_jobs: int) -> dict:
    """Fit the grid (3-fold cross-validation) with `n_jobs` models at once."""
    X_train, X_test, y_train, y_test = data
    model = MLPClassifier(max_iter=60, random_state=0, n_threads=1)
    search = GridSearchCV(model, GRID, cv=3, n_jobs=n_jobs)
    start = time.perf_counter()
    with warnings.catch_warnings():  # the short runs stop at max_iter, on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_train, y_train)
    return {
        "seconds": time.perf_counter() - start,
        "best_params": search.best_params_,
        "cv_score": search.best_score_,
        "test_score": search.score(X_test, y_test),
        "mean_test_score": search.cv_results_["mean_test_score"],
    }


def report(name: str, result: dict) -> None:
    print(
        f"{name:<28} {result['seconds']:6.2f} s   best {result['best_params']}  "
        f"cv accuracy {result['cv_score']:.4f}, test accuracy {result['test_score']:.4f}"
    )


def main(n_workers: int | None = None) -> dict:
    n_workers = n_workers or os.cpu_count()
    data = bp.datasets.load_digits(return_split=True, seed=0)
    n_fits = 3 * len(ParameterGrid(GRID))
    print(
        f"{n_fits} fits (3-fold cross-validation of {n_fits // 3} settings), {n_workers} at a time"
    )
    results = {"serial": sweep(data, n_jobs=1)}
    report("one model at a time", results["serial"])
    results["joblib"] = sweep(data, n_jobs=n_workers)
    report(f"joblib, {n_workers} processes", results["joblib"])
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print(
            'dask.distributed is not installed; pip install "backprop[dask]" (dask and '
            "distributed) to run the sweep on a Dask cluster too."
        )
        return results
    start = time.perf_counter()
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        print(
            f"Dask LocalCluster with {n_workers} workers started in "
            f"{time.perf_counter() - start:.2f} s"
        )
        results["dask"] = sweep(data, n_jobs=-1)
    report(f"Dask, {n_workers} workers", results["dask"])
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
