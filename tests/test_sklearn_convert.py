"""backprop.sklearn.to_sklearn and from_sklearn: networks to fitted
scikit-learn MLPs and back, checked by scikit-learn's own predict and
predict_proba; what scikit-learn cannot hold is refused, saying why."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.utils.validation import check_is_fitted

import backprop as bp
from backprop.activations import LeakyReLU
from backprop.sklearn import MLPClassifier, MLPRegressor, from_sklearn, to_sklearn

Dense = bp.Dense
TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}
HAS_POISSON = "loss" in SkRegressor().get_params()
HEADS = {  # name: (output activation, loss, outputs, class names)
    "softmax": ("softmax", "cross_entropy", 3, ["zebra", "ant", "moth"]),
    "softmax_unnamed": ("softmax", "cross_entropy", 4, None),
    "softmax_two": ("softmax", "cross_entropy", 2, ["yes", "no"]),
    "sigmoid_one": ("sigmoid", "binary_cross_entropy", 1, ["spam", "ham"]),
    "sigmoid_one_unnamed": ("sigmoid", "binary_cross_entropy", 1, None),
    "multilabel": ("sigmoid", "binary_cross_entropy", 3, None),
    "identity": ("identity", "mse", 1, None),
    "identity_many": ("identity", "mse", 3, None),
    "poisson": ("exp", "poisson", 2, None),
}


def network(hidden, head, dtype="float64", sizes=(4, 7, 6), seed=0):
    output, loss, n_out, names = HEADS[head]
    layers = [Dense(a, b, hidden) for a, b in zip(sizes, sizes[1:])]
    layers.append(Dense(sizes[-1], n_out, output))
    net = bp.Sequential(*layers, loss=loss, dtype=dtype, seed=seed)
    net.classes = names
    return net


def inputs(rows=80, n_in=4, seed=1, dtype="float64"):
    return np.random.default_rng(seed).normal(size=(rows, n_in)).astype(dtype)


def sklearn_view(net, X):
    """What scikit-learn's estimator should give for net: (proba or values,
    labels), its probability columns in the sorted order of the classes."""
    out = net.predict_proba(X).astype(np.float64)
    if not net.is_classifier:
        return (out[:, 0] if net.n_outputs == 1 else out), None
    if net.n_outputs > 1 and net.loss.name == "binary_cross_entropy":  # multi-label
        return out, net.predict(X)
    names = np.array(net.classes if net.classes is not None else range(max(net.n_outputs, 2)))
    order = np.argsort(names, kind="stable")
    if net.n_outputs == 1:
        out = np.column_stack([1 - out[:, 0], out[:, 0]])
    return out[:, order], names[net.predict(X)]


# -- to_sklearn -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", ["identity", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("head", HEADS)
def test_to_sklearn_predicts_as_the_network(head, hidden, dtype):
    if head == "poisson" and not HAS_POISSON:
        pytest.skip("scikit-learn < 1.7 has no poisson MLPRegressor")
    net = network(hidden, head, dtype)
    est = to_sklearn(net)
    check_is_fitted(est)
    X = inputs(dtype=dtype)
    want, labels = sklearn_view(net, X)
    assert isinstance(est, SkClassifier if net.is_classifier else SkRegressor)
    assert est.hidden_layer_sizes == (7, 6) and est.n_features_in_ == 4
    assert est.activation == {"sigmoid": "logistic"}.get(hidden, hidden)
    if net.is_classifier:
        np.testing.assert_allclose(est.predict_proba(X), want, **TOLERANCE[dtype])
        np.testing.assert_array_equal(est.predict(X), labels)
    else:
        np.testing.assert_allclose(est.predict(X), want, **TOLERANCE[dtype])
    assert all(W.dtype == np.dtype(dtype) for W in est.coefs_ + est.intercepts_)


def test_to_sklearn_uses_scikit_learns_own_outputs_and_classes():
    cases = {
        "softmax": ("softmax", 3, ["ant", "moth", "zebra"]),
        "softmax_two": ("logistic", 1, ["no", "yes"]),  # one logistic unit, as scikit-learn
        "sigmoid_one": ("logistic", 1, ["ham", "spam"]),
        "sigmoid_one_unnamed": ("logistic", 1, [0, 1]),
        "multilabel": ("logistic", 3, [0, 1, 2]),
        "identity_many": ("identity", 3, None),
    }
    for head, (out, n_outputs, classes) in cases.items():
        est = to_sklearn(network("relu", head))
        assert (est.out_activation_, est.n_outputs_, est.n_layers_) == (out, n_outputs, 4)
        assert getattr(est, "classes_", None) is None or est.classes_.tolist() == classes
        if classes is None:
            assert not hasattr(est, "classes_")


def test_a_network_without_hidden_layers():
    net = bp.Sequential(Dense(4, 3, "softmax"), loss="cross_entropy", seed=0)
    est = to_sklearn(net)
    X = inputs()
    assert est.hidden_layer_sizes == () and est.n_layers_ == 2
    np.testing.assert_allclose(est.predict_proba(X), net.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(from_sklearn(est).predict_proba(X), net.predict_proba(X))


def test_to_sklearn_leaves_an_estimator_that_trains_on_with_warm_start():
    X = inputs(200)
    y = np.array(["ant", "moth", "zebra"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    net = network("tanh", "softmax")
    est = to_sklearn(net)
    before = est.score(X, y)
    est.set_params(warm_start=True, max_iter=30, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert est.n_iter_ == 30 and est.score(X, y) > before + 0.1  # it learned
    # from the network's weights, not from scratch: one tiny step stays beside them
    est = to_sklearn(net).set_params(warm_start=True, max_iter=1, learning_rate_init=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    np.testing.assert_allclose(est.coefs_[0], net.layers[0].W, atol=1e-6)


@pytest.mark.parametrize(
    "net,message",
    [
        (network(LeakyReLU(0.1), "softmax"), r"layers\[0\] has the leaky_relu activation"),
        (network("step", "softmax"), r"layers\[0\] has the step activation"),
        (network("exp", "identity"), r"layers\[0\] has the exp activation"),
        (
            bp.Sequential(Dense(4, 5, "relu"), Dense(5, 5, "tanh"), Dense(5, 2, "softmax"),
                          loss="cross_entropy"),
            "one activation for all hidden layers; this network's hidden layers have relu, tanh",
        ),
        (
            bp.Sequential(Dense(4, 5, "relu"), Dense(5, 2, "sigmoid"), loss="mse"),
            "MLPRegressor has an identity output; this mse network's output layer is 'sigmoid'",
        ),
        (
            bp.Sequential(Dense(4, 5, "relu"), Dense(5, 3, "softmax"), loss="mse"),
            "output layer is 'softmax'",
        ),
    ],
)  # fmt: skip
def test_to_sklearn_refuses_what_scikit_learn_cannot_hold(net, message):
    with pytest.raises(ValueError, match=message):
        to_sklearn(net)


def test_to_sklearn_takes_a_sequential():
    with pytest.raises(TypeError, match="net must be a backprop Sequential, got Dense"):
        to_sklearn(Dense(2, 2))


# -- from_sklearn ---------------------------------------------------------------------
def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _targets(kind, X):
    if kind == "multiclass":
        return np.array(["b", "c", "a"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3)]
    if kind == "binary":
        return np.where(X[:, 0] + X[:, 2] > 0, 7, 3)
    if kind == "multilabel":
        return np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 1]).astype(int)
    if kind == "regression":
        return X[:, 0] * 2 - X[:, 1]
    if kind == "regression_many":
        return np.column_stack([X[:, 0], X[:, 1] * X[:, 2]])
    return np.random.default_rng(0).poisson(np.exp(0.5 * X[:, 0]))  # counts


KINDS = ["multiclass", "binary", "multilabel", "regression", "regression_many", "poisson"]


@pytest.mark.parametrize("library", ["sklearn", "backprop"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("kind", KINDS)
def test_from_sklearn_predicts_as_the_estimator(kind, activation, dtype, library):
    if kind == "poisson" and not HAS_POISSON:
        pytest.skip("scikit-learn < 1.7 has no poisson MLPRegressor")
    X = inputs(150, dtype=dtype)
    y = _targets(kind, X)
    classifier = kind in ("multiclass", "binary", "multilabel")
    cls = {"sklearn": (SkClassifier, SkRegressor), "backprop": (MLPClassifier, MLPRegressor)}
    make = cls[library][0 if classifier else 1]
    extra = {"loss": "poisson"} if kind == "poisson" else {}
    est = make(hidden_layer_sizes=(6, 5), activation=activation, max_iter=40, random_state=0)
    est = _fit(est.set_params(**extra), X, y)
    net = from_sklearn(est)
    assert net.dtype == np.dtype(dtype)
    tol = TOLERANCE[dtype]
    if not classifier:
        np.testing.assert_allclose(net.predict(X), est.predict(X), **tol)
        return
    proba = net.predict_proba(X)
    if kind == "binary":
        assert net.classes == ["3", "7"] and net.n_outputs == 1
        np.testing.assert_allclose(proba[:, 0], est.predict_proba(X)[:, 1], **tol)
        np.testing.assert_array_equal(np.array([3, 7])[net.predict(X)], est.predict(X))
    elif kind == "multiclass":
        assert net.classes == ["a", "b", "c"]
        np.testing.assert_allclose(proba, est.predict_proba(X), **tol)
        np.testing.assert_array_equal(np.array(net.classes)[net.predict(X)], est.predict(X))
    else:  # multi-label: labels are numbered
        assert net.classes is None and net.loss.name == "binary_cross_entropy"
        np.testing.assert_allclose(proba, est.predict_proba(X), **tol)
        np.testing.assert_array_equal(net.predict(X), est.predict(X))


def test_from_backprop_sklearn_keeps_leaky_relu():
    X = inputs(150)
    y = _targets("multiclass", X)
    est = _fit(MLPClassifier((6,), "leaky_relu", max_iter=30, random_state=0), X, y)
    net = from_sklearn(est)
    assert net.layers[0].activation == est.net_.layers[0].activation
    assert net is not est.net_
    np.testing.assert_array_equal(net.predict_proba(X), est.predict_proba(X))


def test_default_class_numbers_stay_numbers_both_ways():
    X = inputs(150)
    est = _fit(
        SkClassifier((5,), max_iter=30, random_state=0),
        X,
        (X[:, 0] > 0).astype(int) + (X[:, 1] > 0),
    )
    net = from_sklearn(est)
    assert net.classes is None
    again = to_sklearn(net)
    assert again.classes_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(again.predict_proba(X), est.predict_proba(X), rtol=1e-12)
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_from_sklearn_refusals():
    with pytest.raises(NotFittedError):
        from_sklearn(SkClassifier())
    with pytest.raises(NotFittedError):
        from_sklearn(MLPRegressor())
    with pytest.raises(TypeError, match="estimator must be a fitted MLPClassifier or"):
        from_sklearn(bp.Sequential(Dense(2, 1)))
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TypeError, match="got LogisticRegression"):
        from_sklearn(LogisticRegression())
