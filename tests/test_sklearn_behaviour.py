"""The scikit-learn estimators behave as scikit-learn's own MLP.

Where the computation is the same (one full batch per epoch, so that no
shuffled order enters; plain SGD, which both libraries compute by the same
formula; L-BFGS, which is deterministic), the results are scikit-learn's to
rounding: scikit-learn itself is the reference.  Elsewhere the tests check
the behaviour scikit-learn documents.
"""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import make_friedman1, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from backprop import sklearn as bp  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0)
    Y = np.column_stack([2 * X[:, 0] + X[:, 1], np.sin(X[:, 2])])
    return X, y, Y


def full_batch(**params):
    """Settings under which both libraries compute the same numbers."""
    settings = dict(
        hidden_layer_sizes=(5,),
        solver="sgd",
        momentum=0,
        batch_size=60,
        max_iter=20,
        random_state=1,
        learning_rate_init=0.1,
    )
    return settings | params


def both(name, X, y, **params):
    """The estimator `name` with `params`, fitted on (X, y): ours and scikit-learn's."""
    return getattr(bp, name)(**params).fit(X, y), getattr(sk, name)(**params).fit(X, y)


def assert_same_model(ours, theirs, rtol=1e-9, atol=1e-12):
    for name in ("coefs_", "intercepts_"):
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"alpha": 0.5},
        {"activation": "logistic"},
        {"activation": "tanh", "alpha": 0.1},
        {"learning_rate": "invscaling", "power_t": 0.25},
        {"momentum": 0.9, "nesterovs_momentum": False},
    ],
)
def test_full_batch_sgd_is_scikit_learns(params):
    # The initial weights and biases (Glorot uniform, drawn from random_state
    # as scikit-learn draws them), the penalty alpha on the weights alone, the
    # learning-rate schedule and the reported loss, epoch after epoch.
    X, y, _ = data()
    ours, theirs = both("MLPClassifier", X, y, **full_batch(**params))
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)


def test_initial_weights_are_scikit_learns():
    X, y, _ = data()
    params = dict(hidden_layer_sizes=(7, 3), max_iter=1, learning_rate_init=1e-300)
    for activation in ("relu", "logistic"):
        ours = bp.MLPClassifier(activation=activation, random_state=3, **params).fit(X, y)
        theirs = sk.MLPClassifier(activation=activation, random_state=3, **params).fit(X, y)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_array_equal(a, b)
    bound = np.sqrt(2 / (4 + 7))  # logistic: √(2 / (fan_in + fan_out))
    assert np.abs(ours.coefs_[0]).max() <= bound and np.abs(ours.coefs_[0]).max() > 0.8 * bound


def test_multi_output_regression_is_scikit_learns():
    X, _, Y = data()
    ours, theirs = both("MLPRegressor", X, Y, **full_batch(alpha=0.01))
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert ours.predict(X).shape == (60, 2)
    np.testing.assert_allclose(ours.score(X, Y), theirs.score(X, Y), rtol=1e-9)


@pytest.mark.parametrize("estimator", ["MLPClassifier", "MLPRegressor"])
def test_lbfgs_is_scikit_learns(estimator):
    X, y, Y = data()
    target = y if estimator == "MLPClassifier" else Y
    params = dict(solver="lbfgs", hidden_layer_sizes=(6,), alpha=0.01, random_state=0)
    ours, theirs = both(estimator, X, target, max_iter=30, **params)
    assert_same_model(ours, theirs, rtol=1e-6, atol=1e-8)
    assert not hasattr(ours, "loss_curve_")  # (as scikit-learn: lbfgs keeps no curve)


def test_lbfgs_max_fun_and_its_warning():
    X, y, _ = data()
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        few = bp.MLPClassifier(solver="lbfgs", max_fun=5, random_state=0).fit(X, y)
    assert few.n_iter_ <= 5
    converged = bp.MLPClassifier(solver="lbfgs", max_iter=2000, random_state=0).fit(X, y)
    assert converged.score(X, y) == 1.0 and converged.loss_ < few.loss_


def test_lbfgs_sample_weight_is_repetition():
    X, y, _ = data()
    w = np.arange(60) % 3
    repeated = np.repeat(np.arange(60), w)
    params = dict(solver="lbfgs", hidden_layer_sizes=(4,), max_iter=15, random_state=0)
    weighted = bp.MLPClassifier(**params).fit(X, y, sample_weight=w)
    copies = bp.MLPClassifier(**params).fit(X[repeated], y[repeated])
    for a, b in zip(weighted.coefs_, copies.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_sample_weight_in_full_batch_sgd_is_scikit_learns():
    X, y, _ = data()
    w = np.random.default_rng(1).uniform(0, 2, 60)
    ours = bp.MLPClassifier(**full_batch(alpha=0.1)).fit(X, y, sample_weight=w)
    theirs = sk.MLPClassifier(**full_batch(alpha=0.1)).fit(X, y, sample_weight=w)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # the reported loss too: the penalty over the weights' sum, not the rows
    params = full_batch(alpha=1.0)
    ours = bp.MLPClassifier(**params).fit(X, y, sample_weight=3 * w)
    theirs = sk.MLPClassifier(**params).fit(X, y, sample_weight=3 * w)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


def test_sample_weight_zero_leaves_a_sample_out():
    X, y, _ = data()
    X2, y2 = np.vstack([X, 50 + X[:5]]), np.concatenate([y, [0] * 5])
    w = np.r_[np.ones(60), np.zeros(5)]
    params = full_batch(batch_size=200)
    with_zeros = bp.MLPClassifier(**params).fit(X2, y2, sample_weight=w)
    without = bp.MLPClassifier(**params).fit(X, y)
    for a, b in zip(with_zeros.coefs_, without.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weights,match", [(np.ones(3), "shape"), (-np.ones(60), "≥ 0")])
def test_bad_sample_weight(weights, match):
    X, y, _ = data()
    with pytest.raises(ValueError, match=match):
        bp.MLPClassifier(max_iter=2).fit(X, y, sample_weight=weights)


def test_partial_fit_goes_on_as_one_fit():
    # Two calls of one epoch each are one fit of two epochs (no shuffling):
    # the optimizer's state and the schedule's sample count t_ carry over.
    X, y, _ = data()
    params = dict(hidden_layer_sizes=(5,), batch_size=16, shuffle=False, random_state=0)
    for extra in ({"solver": "adam"}, {"solver": "sgd", "learning_rate": "invscaling"}):
        once = bp.MLPClassifier(max_iter=2, **params, **extra).fit(X, y)
        steps = bp.MLPClassifier(**params, **extra)
        steps.partial_fit(X, y, classes=np.unique(y))
        steps.partial_fit(X, y)
        assert steps.n_iter_ == 1 and steps.t_ == 120 and len(steps.loss_curve_) == 2
        np.testing.assert_allclose(steps.loss_curve_, once.loss_curve_, rtol=1e-12)
        for a, b in zip(steps.coefs_, once.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_partial_fit_errors_are_scikit_learns():
    X, y, _ = data()
    est = bp.MLPClassifier(hidden_layer_sizes=(3,))
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert list(est.classes_) == [0, 1, 2] and est.predict_proba(X).shape == (60, 3)
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        est.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="is not the same as on last call"):
        est.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(bp.MLPClassifier(solver="lbfgs"), "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as info:
        bp.MLPRegressor(solver="lbfgs").partial_fit(X, y)
    assert "lbfgs is not stochastic" in str(info.value.__cause__)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        bp.MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_regressor_partial_fit():
    X, _, Y = data()
    est = bp.MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.01, random_state=0)
    first = None
    for _ in range(30):
        est.partial_fit(X, Y[:, 0])
        first = est.loss_curve_[0] if first is None else first
    assert est.t_ == 1800 and est.loss_curve_[-1] < 0.5 * first


def test_warm_start_refuses_other_classes():
    X, y, _ = data()
    est = bp.MLPClassifier(max_iter=3, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same"):
        est.fit(X, np.minimum(y, 1))


@pytest.mark.parametrize(
    "change", [{"hidden_layer_sizes": (4,)}, {"activation": "tanh"}, {"loss": "poisson"}]
)
def test_warm_start_refuses_another_network(change):
    X, _, Y = data()
    est = bp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, warm_start=True).fit(X, Y[:, 0])
    before = est.coefs_
    with pytest.raises(ValueError, match="warm_start / partial_fit go on training"):
        est.set_params(**change).fit(X, np.abs(Y[:, 0]))
    with pytest.raises(ValueError, match="layer sizes"):
        est.set_params(hidden_layer_sizes=(3,), activation="relu", loss="squared_error").fit(X, Y)
    for a, b in zip(est.coefs_, before):  # refused before any training
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_dropout_is_an_extension_after_every_hidden_layer(name):
    X, y, Y = data(120)
    target = y if name == "MLPClassifier" else Y
    params = dict(hidden_layer_sizes=(8, 6), max_iter=20, random_state=0)
    plain = getattr(bp, name)(**params).fit(X, target)
    zero = getattr(bp, name)(dropout=0.0, **params).fit(X, target)
    dropped = [getattr(bp, name)(dropout=0.3, **params).fit(X, target) for _ in range(2)]
    assert plain.get_params()["dropout"] == 0.0 and dropped[0].get_params()["dropout"] == 0.3
    assert dropped[0].net_.dropout == (0.3, 0.3, 0.0)
    for a, b in zip(plain.coefs_, zero.coefs_):  # 0: no Dropout layer at all
        np.testing.assert_array_equal(a, b)
    for a, b, c in zip(dropped[0].coefs_, dropped[1].coefs_, plain.coefs_):
        np.testing.assert_array_equal(a, b)  # random_state fixes the masks too
        assert not np.allclose(a, c)
    outputs = dropped[0].predict_proba(X) if name == "MLPClassifier" else dropped[0].predict(X)
    without = dropped[0].net_.copy(dropout=False).predict_proba(X)  # prediction runs without it
    np.testing.assert_array_equal(outputs, without if without.shape[1] > 1 else without[:, 0])


def test_warm_start_refuses_other_dropout():
    X, y, _ = data()
    est = bp.MLPClassifier(max_iter=2, warm_start=True, dropout=0.2).fit(X, y)
    with pytest.raises(ValueError, match="dropout 0.2; this fit asks for .* and 0.5"):
        est.set_params(dropout=0.5).fit(X, y)


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=300, n_classes=4, random_state=0)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
    params = dict(hidden_layer_sizes=(30,), max_iter=300, random_state=0)
    ours, theirs = both("MLPClassifier", X_train, Y_train, **params)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 4
    assert ours.predict(X_test).shape == Y_test.shape
    assert set(np.unique(ours.predict(X_test))) <= {0, 1}
    proba = ours.predict_proba(X_test)
    assert proba.shape == (75, 4)
    np.testing.assert_array_equal(ours.predict(X_test), (proba > 0.5).astype(int))
    assert abs(ours.score(X_test, Y_test) - theirs.score(X_test, Y_test)) < 0.1
    # partial_fit takes the indicator matrix as its classes
    step = bp.MLPClassifier(hidden_layer_sizes=(5,)).partial_fit(X, Y, classes=[0, 1, 2, 3])
    assert step.predict(X).shape == Y.shape


def test_binary_ties_go_to_the_first_class():
    # scikit-learn's rule for one logistic unit: the second class for p > ½.
    X, y, _ = data()
    est = bp.MLPClassifier(max_iter=2).fit(X, y > 0)
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_array_equal(est.predict_proba(X[:3]), 0.5)
    np.testing.assert_array_equal(est.predict(X[:3]), [False] * 3)


def test_dtype_follows_the_input():
    X, y, _ = data()
    single = bp.MLPClassifier(max_iter=3).fit(X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in single.coefs_ + single.intercepts_)
    assert single.predict_proba(X.astype(np.float32)).dtype == np.float32
    double = bp.MLPClassifier(max_iter=3).fit(X, y)
    assert double.coefs_[0].dtype == np.float64
    forced = bp.MLPRegressor(max_iter=3, dtype="float32").fit(X, y)
    assert forced.coefs_[0].dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        bp.MLPRegressor(dtype="int8").fit(X, y)


def test_validation_scores():
    X, y, Y = data(200)
    plain = bp.MLPClassifier(max_iter=5).fit(X, y)
    assert plain.validation_scores_ is None and plain.best_validation_score_ is None
    assert plain.best_loss_ == min(plain.loss_curve_)
    reg = bp.MLPRegressor(
        hidden_layer_sizes=(20,),
        early_stopping=True,
        learning_rate_init=0.01,
        max_iter=60,
        warm_start=True,
        random_state=0,
    ).fit(X, Y[:, 0])
    # R², higher is better: the best is the largest, and the weights kept
    # are the best epoch's (the held-out rows are scikit-learn's).
    assert reg.best_loss_ is None
    assert reg.best_validation_score_ == max(reg.validation_scores_)
    first = len(reg.validation_scores_)
    assert -5 < min(reg.validation_scores_) and 0.5 < max(reg.validation_scores_) <= 1
    reg.fit(X, Y[:, 0])  # warm start: the scores go on
    assert len(reg.validation_scores_) == first + reg.n_iter_


def test_early_stopping_split_messages():
    X, y, _ = data()
    binary = np.zeros_like(y)
    binary[0] = 1  # a class with one member cannot be stratified…
    with pytest.raises(ValueError, match="least populated class"):
        bp.MLPClassifier(early_stopping=True).fit(X, binary)
    y[0] = 7  # …but as in scikit-learn only one output (two classes) is stratified
    bp.MLPClassifier(early_stopping=True, max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="The validation set is too small"):
        bp.MLPRegressor(early_stopping=True).fit(X[:8], y[:8])


@pytest.mark.parametrize("n_iter_no_change", [3, np.inf])
def test_the_stopping_rule_is_scikit_learns(n_iter_no_change):
    # tol is so large that no epoch counts as an improvement: scikit-learn
    # stops after n_iter_no_change + 2 epochs, and never for np.inf.
    X, y, _ = data()
    params = full_batch(tol=1e9, n_iter_no_change=n_iter_no_change, max_iter=12)
    ours, theirs = both("MLPClassifier", X, y, **params)
    assert ours.n_iter_ == theirs.n_iter_ == (5 if n_iter_no_change == 3 else 12)


def test_the_adaptive_rate_is_scikit_learns():
    X, y, _ = data()
    params = full_batch(learning_rate="adaptive", tol=1e9, n_iter_no_change=2, max_iter=40)
    ours, theirs = both("MLPClassifier", X, y, **params)
    assert_same_model(ours, theirs)
    assert ours.net_.optimizer.lr == pytest.approx(theirs._optimizer.learning_rate)


def test_divergence_raises_as_scikit_learn():
    X, y, _ = data()
    params = dict(solver="sgd", learning_rate_init=1e200, momentum=0, max_iter=5)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        bp.MLPRegressor(**params).fit(X * 1e100, y * 1e100)


def test_verbose_prints_scikit_learns_lines(capsys):
    X, y, _ = data()
    est = bp.MLPClassifier(max_iter=4, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Iteration {i + 1}, loss = {v:.8f}" for i, v in enumerate(est.loss_curve_)]
    est = bp.MLPClassifier(solver="lbfgs", max_iter=4, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == est.n_iter_ and lines[-1] == f"Iteration 4, loss = {est.loss_:.8f}"


def test_coefs_and_intercepts_are_assignable():
    X, y, _ = data()
    est = bp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=3).fit(X, y)
    coefs = [np.full_like(c, 0.1) for c in est.coefs_]
    est.coefs_ = coefs
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    relu = np.maximum(X @ coefs[0], 0)
    np.testing.assert_allclose(est.predict(X), (relu @ coefs[1])[:, 0], rtol=1e-12)
    before = [c.copy() for c in est.coefs_]
    with pytest.raises(ValueError, match=r"coefs_\[1\]"):
        est.coefs_ = [np.ones_like(coefs[0]), np.ones((2, 2))]
    for a, b in zip(est.coefs_, before):  # nothing was written
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 arrays"):
        est.intercepts_ = [np.zeros(3)]


def test_r2_on_friedman_matches_scikit_learn():
    X, y = make_friedman1(n_samples=400, noise=1.0, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    params = dict(hidden_layer_sizes=(50,), max_iter=300, random_state=0)
    ours, theirs = both("MLPRegressor", X_train, y_train, **params)
    ours_r2 = r2_score(y_test, ours.predict(X_test))
    assert abs(ours_r2 - theirs.score(X_test, y_test)) < 0.05


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_poisson_regression_is_scikit_learns(solver):
    X, _, _ = data()
    y = np.random.default_rng(2).poisson(np.exp(0.5 * X[:, 0]))
    params = full_batch(loss="poisson", alpha=0.01, learning_rate_init=0.01, solver=solver)
    ours, theirs = both("MLPRegressor", X, y, **params)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert_same_model(ours, theirs, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-7)
    with pytest.raises(ValueError, match="≥ 0"):
        bp.MLPRegressor(loss="poisson", max_iter=2).fit(X, y - 5.0)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("density", [0.05, 0.5])
def test_sparse_input_is_scikit_learns(solver, density):
    # Sparse X (below and above the density where the core switches from a
    # sparse first-layer product to gathering dense batches): scikit-learn's
    # model, and our own on the dense array.
    import scipy.sparse

    rng = np.random.default_rng(3)
    X = scipy.sparse.random(60, 30, density=density, format="csr", random_state=3)
    y = rng.integers(0, 3, 60)
    params = full_batch(solver=solver, alpha=0.01)
    ours, theirs = both("MLPClassifier", X, y, **params)
    assert_same_model(ours, theirs, rtol=1e-7, atol=1e-10)
    dense = bp.MLPClassifier(**params).fit(X.toarray(), y)
    for a, b in zip(ours.coefs_, dense.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(ours.predict(X.tocsc()), dense.predict(X.toarray()))


# -- on the edges ------------------------------------------------------------------
def test_validation_fraction_zero_is_allowed_without_early_stopping():
    # scikit-learn's range for validation_fraction is [0, 1); only early
    # stopping uses it, and it needs rows to hold out.
    X, y, _ = data()
    ours, theirs = both("MLPClassifier", X, y, validation_fraction=0.0, max_iter=3)
    assert ours.n_iter_ == theirs.n_iter_ == 3
    with pytest.raises(ValueError, match="validation_fraction"):
        bp.MLPClassifier(validation_fraction=0.0, early_stopping=True).fit(X, y)


@pytest.mark.parametrize(
    "name,value",
    [
        ("beta_1", 1.0),
        ("beta_2", 1.0),
        ("alpha", np.inf),
        ("learning_rate_init", np.inf),
        ("tol", np.inf),
        ("epsilon", np.inf),
        ("power_t", np.inf),
        ("random_state", -1),
        ("random_state", "seed"),
    ],
)
def test_bad_parameters_are_named(name, value):
    # scikit-learn refuses each of these naming the parameter; so must we,
    # not by an internal name (betas[0], l2, lr) or not at all.
    X, y, _ = data()
    for module in (sk, bp):
        with pytest.raises(ValueError, match=name):
            module.MLPClassifier(**{name: value}).fit(X, y)


def test_a_refused_fit_leaves_the_fitted_model_alone():
    # Bad weights or a bad random_state with data of another shape and
    # other classes: the refused fit changes neither the model nor the
    # attributes that describe it.
    X, y, _ = data()
    est = bp.MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0).fit(X, y)
    before = (list(est.classes_), est.n_features_in_, est.loss_curve_.copy())
    proba = est.predict_proba(X)
    rng = np.random.default_rng(1)
    X5, y5 = rng.normal(size=(40, 5)), np.array(list("ab"))[rng.integers(0, 2, 40)]
    with pytest.raises(ValueError, match="sample_weight"):
        est.fit(X5, y5, sample_weight=np.ones(3))
    est.set_params(random_state=-1)
    with pytest.raises(ValueError, match="random_state"):
        est.fit(X5, y5)
    est.set_params(random_state=0, early_stopping=True)
    with pytest.raises(ValueError, match="test_size"):  # (too few rows to hold out)
        est.fit(X5[:5], y5[:5])
    assert (list(est.classes_), est.n_features_in_, est.loss_curve_) == before
    np.testing.assert_array_equal(est.predict_proba(X), proba)


def test_a_refused_first_partial_fit_keeps_no_classes():
    # The classes of a first partial_fit that failed are not kept: the next
    # first call may name others.
    X, y, _ = data()
    est = bp.MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.partial_fit(bad, y, classes=[0, 1, 2])
    assert not hasattr(est, "classes_")
    est.partial_fit(X, y % 2, classes=[0, 1])
    assert list(est.classes_) == [0, 1]


def test_lbfgs_line_search_beyond_the_float_range():
    # Inputs so large that the first line search steps past the float range:
    # scikit-learn keeps the last finite point and warns; so do we.
    X, _, Y = data()
    params = dict(solver="lbfgs", hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    theirs = sk.MLPRegressor(**params).fit(X * 1e200, Y[:, 0])
    with pytest.warns(ConvergenceWarning):
        ours = bp.MLPRegressor(**params).fit(X * 1e200, Y[:, 0])
    assert ours.n_iter_ == theirs.n_iter_
    assert all(np.isfinite(c).all() for c in ours.coefs_ + ours.intercepts_)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize(
    "weights,match",
    [
        (np.ones(60) + 1j, "real"),  # (not the real parts alone)
        (np.r_[np.full(30, 1e308), np.ones(30)], "add up"),  # the sum overflows
        (np.full(60, 1e-320), "too small"),  # alpha / their sum overflows
    ],
)
def test_sample_weight_beyond_what_training_can_use(solver, weights, match):
    X, _, Y = data()
    with pytest.raises(ValueError, match=f"sample_weight.*{match}"):
        bp.MLPRegressor(solver=solver, max_iter=3).fit(X, Y[:, 0], sample_weight=weights)


@pytest.mark.parametrize(
    "params",
    [
        dict(learning_rate="invscaling", momentum=0.9),
        dict(learning_rate="invscaling", momentum=0.9, nesterovs_momentum=False),
        dict(learning_rate="adaptive", momentum=0.9, tol=1e9, n_iter_no_change=1),
    ],
)
def test_momentum_under_a_changing_rate_is_scikit_learns(params):
    # scikit-learn's velocity keeps each past step at the rate it was taken
    # with: a change of the rate leaves the steps already in it alone.
    X, y, _ = data()
    ours, theirs = both("MLPClassifier", X, y, **full_batch(**params))
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


def test_partial_fit_penalty_follows_each_call():
    # The penalty's gradient is alpha·W over the batch's rows (their weight):
    # calls of other sizes, weights and alpha each use their own.
    X, y, _ = data()
    params = full_batch(batch_size=200, alpha=1.0)
    ours, theirs = bp.MLPClassifier(**params), sk.MLPClassifier(**params)
    calls = [(10, None, 1.0), (60, None, 1.0), (30, np.full(30, 3.0), 1.0), (30, None, 5.0)]
    for i, (rows, weights, alpha) in enumerate(calls):
        for est in (ours, theirs):
            est.set_params(alpha=alpha)
            est.partial_fit(X[:rows], y[:rows], weights, classes=[0, 1, 2] if i == 0 else None)
        assert_same_model(ours, theirs)


def test_early_stopping_holds_out_scikit_learns_rows():
    # scikit-learn stratifies the held-out rows for one output (two classes)
    # only: with three classes its split is the plain shuffled one, and a
    # class of one member is fine.
    X, y, _ = data(100)
    y[0] = 7
    params = full_batch(batch_size=200, early_stopping=True, validation_fraction=0.3, max_iter=8)
    for target in (y, y % 2):
        ours, theirs = both("MLPClassifier", X, target, **params)
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-12)
        assert_same_model(ours, theirs)


def test_coefs_are_the_models_own_arrays():
    # Writing into coefs_ and intercepts_ changes the model, as in
    # scikit-learn (here: the weights of a feature set to zero).
    X, _, Y = data()
    params = dict(solver="lbfgs", hidden_layer_sizes=(4,), max_iter=20, random_state=0)
    ours, theirs = both("MLPRegressor", X, Y[:, 0], **params)
    for est in (ours, theirs):
        est.coefs_[0][1, :] = 0
        est.intercepts_[-1][:] += 1.5
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    X2 = X.copy()
    X2[:, 1] = 100.0  # the feature no longer counts
    np.testing.assert_allclose(ours.predict(X2), ours.predict(X), rtol=1e-12)


def test_warm_start_after_early_stopping_is_switched_off():
    X, y, _ = data()
    est = bp.MLPClassifier(
        hidden_layer_sizes=(4,), max_iter=5, early_stopping=True, warm_start=True, random_state=0
    ).fit(X, y)
    est.set_params(early_stopping=False)
    est.fit(X, y)
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 10
    assert est.best_loss_ == min(est.loss_curve_[5:])


def test_random_state_draws_the_batch_order():
    # As in scikit-learn, random_state decides the shuffling too: a warm
    # start from the same model with another random_state visits the rows
    # in another order, with the same one in the same order.
    X, y, _ = data()
    est = bp.MLPClassifier(
        hidden_layer_sizes=(4,), max_iter=3, batch_size=10, warm_start=True, random_state=0
    ).fit(X, y)
    again = {}
    for seed in (1, 1, 2):
        twin = pickle.loads(pickle.dumps(est)).set_params(random_state=seed)
        again.setdefault(seed, []).append(twin.fit(X, y).coefs_[0])
    np.testing.assert_array_equal(again[1][0], again[1][1])
    assert not np.allclose(again[1][0], again[2][0])


def test_lbfgs_leaves_the_thread_pool_as_it_was():
    # L-BFGS-B's own updates run on one BLAS thread; the pool is the user's
    # again afterwards, also when fits in several threads overlap.
    import threading

    import backprop

    X, y, _ = data(200)
    with backprop.num_threads(2):
        before = backprop.get_num_threads()
        fits = [
            threading.Thread(
                target=bp.MLPClassifier(solver="lbfgs", max_iter=30, random_state=i).fit,
                args=(X, y),
            )
            for i in range(4)
        ]
        for t in fits:
            t.start()
        for t in fits:
            t.join()
        bp.MLPRegressor(solver="lbfgs", max_iter=5).fit(X, y)
        assert backprop.get_num_threads() == before
