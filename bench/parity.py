"""The `parity` section: backprop.sklearn's estimators against scikit-learn's MLP.

    python -m bench --sections parity [--quick] [--json out.json]

For each data set (iris, wine, breast cancer, digits, a 3-class
make_classification, make_friedman1 and diabetes), each solver (the default
'adam', and 'lbfgs') and each library (sklearn.neural_network and
backprop.sklearn), both estimators with their defaults (max_iter 200, the
estimator's random_state the seed) are cross-validated inside
make_pipeline(StandardScaler(), estimator); a regressor's pipeline sits in
TransformedTargetRegressor(transformer=StandardScaler()), so that it learns
standardised targets and is scored (R²) on the original ones.  Both
libraries see the same folds (StratifiedKFold for classifiers, KFold for
regressors, shuffle=True, random_state=0) and the same seeds; one seed's
whole cross-validation (fits and scores) is one timed sample, the two
libraries interleaved (timing.interleave) after the usual pause.
ConvergenceWarnings are silenced.  An estimator that refuses a solver (or
fails otherwise) gives "n/a" for its cell and a note, never a stopped run.

Per data set and solver: each library's mean score over seeds (accuracy or
R²; a seed's score is its mean over the folds) with its spread, the standard
deviation of the seeds' scores (0 for one seed); the wall time of one seed's
cross-validation (median over seeds); the time ratio sklearn / backprop
(> 1: backprop faster); and whether the two agree: |Δ mean| ≤ the larger
spread, or FLOOR when that is smaller.
"""

from __future__ import annotations

import importlib
import statistics
import warnings
from dataclasses import dataclass

import numpy as np

from .timing import interleave, timed

__all__ = ["Dataset", "DATASETS", "LIBRARIES", "SOLVERS", "FLOOR", "run", "agree"]

LIBRARIES = {"sklearn": "sklearn.neural_network", "backprop": "backprop.sklearn"}
SOLVERS = ("adam", "lbfgs")
FLOOR = 0.005  # scores within this of each other agree, whatever the spreads


@dataclass(frozen=True)
class Dataset:
    name: str
    loader: str  # a function of sklearn.datasets
    kwargs: tuple = ()  # its arguments, as (name, value) pairs
    regression: bool = False

    @property
    def metric(self) -> str:
        return "R²" if self.regression else "accuracy"

    def load(self):
        """X (float64) and y of the data set."""
        from sklearn import datasets

        kwargs = dict(self.kwargs)
        if self.loader.startswith("load_"):
            kwargs["return_X_y"] = True
        X, y = getattr(datasets, self.loader)(**kwargs)
        return np.asarray(X, dtype=np.float64), np.asarray(y)


DATASETS = [
    Dataset("iris", "load_iris"),
    Dataset("wine", "load_wine"),
    Dataset("breast_cancer", "load_breast_cancer"),
    Dataset("digits", "load_digits"),
    Dataset(
        "classification",
        "make_classification",
        (
            ("n_samples", 1000),
            ("n_features", 20),
            ("n_informative", 10),
            ("n_classes", 3),
            ("random_state", 0),
        ),
    ),
    Dataset(
        "friedman1",
        "make_friedman1",
        (("n_samples", 1000), ("noise", 1.0), ("random_state", 0)),
        regression=True,
    ),
    Dataset("diabetes", "load_diabetes", regression=True),
]


def get(name: str) -> Dataset:
    for ds in DATASETS:
        if ds.name == name:
            return ds
    raise KeyError(f"unknown data set {name!r}; choose from {', '.join(d.name for d in DATASETS)}")


def estimator(library: str, ds: Dataset, solver: str, seed: int):
    """A new unfitted model: the library's MLP with its defaults but for
    solver and random_state, after a StandardScaler (regressors also with
    standardised targets)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    module = importlib.import_module(LIBRARIES[library])
    cls = module.MLPRegressor if ds.regression else module.MLPClassifier
    model = make_pipeline(StandardScaler(), cls(solver=solver, random_state=seed))
    if ds.regression:
        return TransformedTargetRegressor(regressor=model, transformer=StandardScaler())
    return model


def folds_of(ds: Dataset, X, y, folds: int) -> list:
    """The (train, test) index pairs every library and seed uses."""
    from sklearn.model_selection import KFold, StratifiedKFold

    kind = KFold if ds.regression else StratifiedKFold
    return list(kind(n_splits=folds, shuffle=True, random_state=0).split(X, y))


def cross_validate(make, X, y, splits) -> list[float]:
    """The score (accuracy or R²) of a new model make() on each fold."""
    from sklearn.exceptions import ConvergenceWarning

    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splits:
            model = make().fit(X[train], y[train])
            scores.append(float(model.score(X[test], y[test])))
    return scores


def summary(fold_scores: list[list[float]], stats) -> dict:
    """One library's figures: scores by seed and fold, their mean and
    spread, and the times of the seeds' cross-validations."""
    by_seed = [statistics.fmean(s) for s in fold_scores]
    return {
        "fold_scores": fold_scores,
        "seed_scores": by_seed,
        "mean": statistics.fmean(by_seed),
        "spread": statistics.stdev(by_seed) if len(by_seed) > 1 else 0.0,
        "time": stats.to_dict(),
        "total_s": sum(stats.samples),
    }


def agree(a: dict, b: dict, floor: float = FLOOR) -> bool:
    """Do two libraries' mean scores agree within their seed-to-seed spread?"""
    return abs(a["mean"] - b["mean"]) <= max(a["spread"], b["spread"], floor)


def compare(ds: Dataset, X, y, splits, solver: str, seeds, settle: float, notes) -> dict:
    """Both libraries on one data set and solver, seeds interleaved."""
    scores: dict[str, list] = {lib: [] for lib in LIBRARIES}

    def sampler(lib):
        queue = list(seeds)

        def one_seed():
            seed = queue.pop(0)
            make = lambda: estimator(lib, ds, solver, seed)  # noqa: E731
            return timed(lambda: scores[lib].append(cross_validate(make, X, y, splits)))

        return one_seed

    errors: dict[str, str] = {}
    stats = interleave({lib: sampler(lib) for lib in LIBRARIES}, len(seeds), 0, errors, settle)
    libs: dict[str, dict] = {}
    for lib in LIBRARIES:
        if lib in stats:
            libs[lib] = summary(scores[lib], stats[lib])
        else:
            libs[lib] = {"error": errors.get(lib, "no result")}
            notes.append(f"parity {ds.name} {solver} {lib}: n/a: {libs[lib]['error']}")
    sk, bp = libs["sklearn"], libs["backprop"]
    both = "error" not in sk and "error" not in bp
    return {
        "libraries": libs,
        "agree": agree(sk, bp) if both else None,
        "delta": bp["mean"] - sk["mean"] if both else None,
        "time_ratio": sk["time"]["median"] / bp["time"]["median"] if both else None,
    }


def run(cfg, notes, progress, datasets=None, seeds=None, folds=None, solvers=SOLVERS) -> dict:
    """The section's results: every data set (names, default all), solver
    and library, with the seeds and folds of cfg unless given."""
    from .machine import optional

    if optional("sklearn") is None:
        notes.append("parity: scikit-learn is not installed, skipped")
        return {}
    seeds = tuple(cfg.parity_seeds if seeds is None else seeds)
    folds = cfg.parity_folds if folds is None else folds
    chosen = DATASETS if datasets is None else [get(name) for name in datasets]
    out = {}
    for ds in chosen:
        X, y = ds.load()
        splits = folds_of(ds, X, y, folds)
        out[ds.name] = {
            "task": "regression" if ds.regression else "classification",
            "metric": ds.metric,
            "rows": int(X.shape[0]),
            "features": int(X.shape[1]),
            "classes": None if ds.regression else int(len(np.unique(y))),
            "solvers": {
                solver: compare(ds, X, y, splits, solver, seeds, cfg.settle, notes)
                for solver in solvers
            },
        }
        progress(f"parity {ds.name}: done")
    return {
        "folds": folds,
        "seeds": list(seeds),
        "floor": FLOOR,
        "datasets": out,
    }
