"""The scikit-learn estimators: scikit-learn's own estimator checks, and
use in pipelines and grid searches."""

import contextlib
import threading
import unittest
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")  # an optional extra; installed by the test extra

from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import backprop as bp  # noqa: E402
from backprop.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(random_state=0), MLPRegressor(random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    # Each of scikit-learn's checks raises on a violation of its API contract
    # (and SkipTest where a dependency it needs, such as pandas, is missing).
    try:
        check(estimator)
    except unittest.SkipTest:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure of the check is the finding)
        pytest.fail(f"{check}: {type(exc).__name__}: {exc}")


# With dropout the estimators pass the same checks but two: a row given
# weight 2 is not two rows, which draw two masks.
WEIGHTS_ARE_NOT_REPEATS = {
    f"check_sample_weight_equivalence_on_{kind}_data": "repeated rows draw other masks"
    for kind in ("dense", "sparse")
}


@parametrize_with_checks(
    [MLPClassifier(random_state=0, dropout=0.2), MLPRegressor(random_state=0, dropout=0.2)],
    expected_failed_checks=lambda estimator: WEIGHTS_ARE_NOT_REPEATS,
)
def test_scikit_learn_estimator_checks_with_dropout(estimator, check):
    check(estimator)


def digits():
    X, y = bp.datasets.load_digits(scale=None)
    return train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)


def test_classifier_on_digits_with_named_classes():
    X_train, X_test, y_train, y_test = digits()
    names = np.array(list("abcdefghij"))
    clf = make_pipeline(
        StandardScaler(), MLPClassifier((32,), max_iter=60, random_state=0, n_iter_no_change=60)
    )
    clf.fit(X_train, names[y_train])
    assert clf.score(X_test, names[y_test]) > 0.95
    mlp = clf[-1]
    assert list(mlp.classes_) == list(names)
    assert [W.shape for W in mlp.coefs_] == [(64, 32), (32, 10)]
    assert [b.shape for b in mlp.intercepts_] == [(32,), (10,)]
    assert len(mlp.loss_curve_) == mlp.n_iter_ == 60
    assert mlp.n_layers_ == 3 and mlp.n_outputs_ == 10 and mlp.out_activation_ == "softmax"
    proba = clf.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-12)


def test_binary_classifier_uses_one_logistic_unit():
    X_train, X_test, y_train, y_test = digits()
    mask_train, mask_test = y_train < 2, y_test < 2
    clf = MLPClassifier((8,), max_iter=100, random_state=0).fit(
        X_train[mask_train] / 16, y_train[mask_train] == 1
    )
    assert clf.out_activation_ == "logistic" and clf.coefs_[-1].shape == (8, 1)
    assert clf.score(X_test[mask_test] / 16, y_test[mask_test] == 1) > 0.97
    assert clf.predict_proba(X_test[:3] / 16).shape == (3, 2)


def test_classifier_predicts_by_scikit_learns_label_rule():
    # scikit-learn's rule: one logistic unit says the second class for p > ½,
    # so exactly ½ is the first class; several classes take the first
    # largest probability of the softmax, which is the network's own label.
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    for y in (["no", "yes", "yes", "no"], ["a", "b", "c", "a"]):
        clf = MLPClassifier((3,), max_iter=200, random_state=0).fit(X, y)
        proba = clf.predict_proba(X)
        expected = proba[:, 1] > 0.5 if len(clf.classes_) == 2 else proba.argmax(axis=1)
        np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected.astype(int)])
        clf.net_.params = np.zeros_like(clf.net_.params)  # every output equal: ties
        np.testing.assert_array_equal(clf.predict(X), [clf.classes_[0]] * 4)


def test_regressor_and_grid_search_in_parallel():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (400, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    search = GridSearchCV(
        MLPRegressor(max_iter=300, random_state=0, n_iter_no_change=300),
        {"hidden_layer_sizes": [(4,), (32,)], "learning_rate_init": [0.01]},
        cv=3,
        n_jobs=2,
    )
    search.fit(X, y)
    assert search.best_params_["hidden_layer_sizes"] == (32,)
    assert search.best_score_ > 0.9


def test_warm_start_and_early_stopping():
    X_train, X_test, y_train, y_test = digits()
    clf = MLPClassifier((16,), max_iter=5, warm_start=True, random_state=0)
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        clf.fit(X_train / 16, y_train)
    first = clf.coefs_[0].copy()
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        clf.fit(X_train / 16, y_train)
    assert len(clf.loss_curve_) == 10 and not np.array_equal(first, clf.coefs_[0])
    stopped = MLPClassifier(
        (64,), max_iter=500, early_stopping=True, n_iter_no_change=3, random_state=0
    ).fit(X_train / 16, y_train)
    assert stopped.n_iter_ < 500 and len(stopped.validation_scores_) == stopped.n_iter_
    assert stopped.best_validation_score_ == max(stopped.validation_scores_)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(solver="newton"), "solver"),
        (dict(n_iter_no_change=0), "n_iter_no_change"),
        (dict(max_fun=0), "max_fun"),
        (dict(momentum=1.5), "momentum"),
        (dict(activation="mish"), "activation"),
        (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate="cyclic"), "learning_rate"),
        (dict(dropout=1.0), "dropout must be a finite number ≥ 0 and < 1"),
        (dict(dropout=-0.1), "dropout must be a finite number ≥ 0 and < 1"),
        (dict(dropout="0.2"), "dropout must be a finite number"),
        (dict(dropout=0.2, solver="lbfgs"), "dropout: solver='lbfgs'"),
    ],
)
def test_bad_parameters(params, match):
    X_train, _, y_train, _ = digits()
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X_train, y_train)


@contextlib.contextmanager
def held_by_another_thread(net):
    """The block runs while another thread holds net (as a fit does)."""
    holding, done = threading.Event(), threading.Event()

    def hold():
        with net.exclusive():
            holding.set()
            done.wait(300)  # (the block's end; the limit only keeps a failure from hanging)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(300), "the other thread did not take the network"
    try:
        yield
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize("name", ["coefs_", "intercepts_"])
def test_the_weights_are_read_as_one_snapshot(name):
    # Read while another thread holds the network (as a fit does), they are
    # refused, never copied layer by layer from different steps.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    with pytest.warns(Warning):  # (two iterations do not converge)
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    with held_by_another_thread(est.net_):
        with pytest.raises(RuntimeError, match="in use by another thread"):
            getattr(est, name)
    assert len(getattr(est, name)) == 2


def fitted_state(est):
    """What a user sees of a fitted classifier, as plain copies."""
    return (
        list(est.classes_),
        est.n_features_in_,
        est.n_iter_,
        est.t_,
        list(est.loss_curve_),
        [c.copy() for c in est.coefs_ + est.intercepts_],
    )


def assert_same_state(a, b):
    assert a[:5] == b[:5]
    for x, y in zip(a[5], b[5]):
        np.testing.assert_array_equal(x, y)


def test_a_partial_fit_refused_by_a_busy_network_changes_nothing():
    X_train, _, y_train, _ = digits()
    X, y = X_train[:60] / 16, y_train[:60]
    est = MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
    est.partial_fit(X, y, classes=np.arange(10)).partial_fit(X, y)
    before = fitted_state(est)
    with held_by_another_thread(est.net_):
        with pytest.raises(RuntimeError, match="in use by another thread"):
            est.partial_fit(X, y)
    assert_same_state(fitted_state(est), before)
    est.partial_fit(X, y)  # and goes on as before
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 3 and est.t_ == 180


class Blocking:
    """An array whose conversion waits until told to go on: a fit that
    reads it stays in progress meanwhile."""

    def __init__(self, X):
        self.X, self.reading, self.go = X, threading.Event(), threading.Event()
        self.shape, self.ndim, self.dtype = X.shape, X.ndim, X.dtype

    def __len__(self):
        return len(self.X)

    def __array__(self, dtype=None, copy=None):
        self.reading.set()
        self.go.wait(300)  # (told to go on; the limit only keeps a failure from hanging)
        return self.X if dtype is None else self.X.astype(dtype)


@pytest.mark.parametrize("second", ["fit", "partial_fit"])
def test_a_second_fit_from_another_thread_is_refused(second):
    # One fit of an estimator at a time: another thread's fit or partial_fit
    # meanwhile is refused at once, and the first fit ends whole.
    X_train, _, y_train, _ = digits()
    X, y = X_train[:60] / 16, y_train[:60]
    est = MLPClassifier(hidden_layer_sizes=(3,), max_iter=4, random_state=0)
    est.partial_fit(X, y, classes=np.arange(10))
    blocking = Blocking(X)
    errors = []

    def first():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
                est.fit(blocking, y)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert blocking.reading.wait(300), "the first fit did not begin"
    try:
        with pytest.raises(RuntimeError, match="being fitted by another thread"):
            getattr(est, second)(X, y)
    finally:
        blocking.go.set()
        t.join()
    assert not errors
    assert est.n_iter_ == len(est.loss_curve_) == 4  # the first fit's, whole
