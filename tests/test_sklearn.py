"""The scikit-learn estimators: scikit-learn's own estimator checks, and
use in pipelines and grid searches."""

import unittest

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
    ],
)
def test_bad_parameters(params, match):
    X_train, _, y_train, _ = digits()
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X_train, y_train)


@pytest.mark.parametrize("name", ["coefs_", "intercepts_"])
def test_the_weights_are_read_as_one_snapshot(name):
    # Read while another thread holds the network (as a fit does), they are
    # refused, never copied layer by layer from different steps.
    import threading

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    with pytest.warns(Warning):  # (two iterations do not converge)
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    holding, done = threading.Event(), threading.Event()

    def hold():
        with est.net_.exclusive():
            holding.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    try:
        with pytest.raises(RuntimeError, match="in use by another thread"):
            getattr(est, name)
    finally:
        done.set()
        t.join()
    assert len(getattr(est, name)) == 2
