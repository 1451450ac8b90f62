"""scikit-learn estimators on backprop's compiled core.

    from backprop.sklearn import MLPClassifier, MLPRegressor

They take scikit-learn's parameter names where they mean the same
(hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
learning_rate_init, power_t, max_iter, shuffle, random_state, tol,
warm_start, momentum, nesterovs_momentum, early_stopping,
validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change) and set the
fitted attributes users rely on (coefs_, intercepts_, loss_curve_,
classes_, n_iter_, n_layers_, n_outputs_, out_activation_, best_loss_,
validation_scores_, best_validation_score_, t_).  They work in Pipeline and
GridSearchCV (also with n_jobs).  Beyond scikit-learn's MLP: the activations
'leaky_relu' and 'sigmoid' (= 'logistic'), the solvers 'rmsprop', 'adagrad'
and 'adamw', float32 training (dtype='float32'), and n_threads: the BLAS
threads for this model's training and prediction, None (the default) for
automatic, which inside joblib's worker processes follows the limits joblib
sets for them; set n_threads=1 when a sweep runs one model per core
(GridSearchCV(n_jobs=...), joblib's Dask backend), so that the models do not
compete for the cores.

Differences: 'lbfgs' is not offered (backprop trains by mini-batch
gradient descent); alpha, the L2 penalty α/2·‖W‖² per sample, also reaches
the biases.  Requires scikit-learn (pip install "backprop[sklearn]").
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - only without the optional extra
    raise ImportError(
        "backprop.sklearn needs scikit-learn: pip install 'backprop[sklearn]' (or scikit-learn)"
    ) from exc

from . import callbacks as _callbacks
from . import optimizers as _optimizers
from ._threads import check_threads
from .layers import Dense
from .network import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {
    "identity": "identity",
    "logistic": "sigmoid",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
}


class _AdaptiveRate(_callbacks.Callback):
    """scikit-learn's learning_rate='adaptive': divide the rate by 5 when
    the training loss has not fallen by `tol` for two epochs running."""

    def __init__(self, tol):
        self.tol = tol

    def on_train_begin(self, net, logs):
        self.best, self.wait = np.inf, 0

    def on_epoch_end(self, net, epoch, logs):
        if logs["loss"] < self.best - self.tol:
            self.best, self.wait = logs["loss"], 0
        else:
            self.wait += 1
            if self.wait >= 2:
                net.optimizer.lr /= 5
                self.wait = 0


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        dtype="float64",
        n_threads=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.n_threads = n_threads

    # -- building ------------------------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.solver not in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
            raise ValueError(
                f"solver {self.solver!r} is not supported: choose 'sgd', "
                "'adam', 'adamw', 'rmsprop' or 'adagrad'"
            )
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError(
                f"learning_rate must be 'constant', 'invscaling' or "
                f"'adaptive', got {self.learning_rate!r}"
            )
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not 0 <= self.alpha < np.inf:
            raise ValueError(f"alpha must be a number ≥ 0, got {self.alpha!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}"
            )
        if self.n_threads is not None:
            try:
                check_threads(self.n_threads, "n_threads")  # the network's own check
            except TypeError as exc:  # reported as ValueError, like the other parameters
                raise ValueError(str(exc)) from None
        return [int(s) for s in sizes]

    def _batch(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(
                f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}"
            )
        return min(int(self.batch_size), n)

    def _optimizer(self, batch):
        l2 = self.alpha / batch
        lr = self.learning_rate_init
        if self.solver == "sgd":
            return _optimizers.SGD(
                lr,
                momentum=self.momentum,
                nesterov=self.nesterovs_momentum and self.momentum > 0,
                l2=l2,
            )
        if self.solver == "rmsprop":
            return _optimizers.RMSProp(lr, eps=self.epsilon, l2=l2)
        if self.solver == "adagrad":
            return _optimizers.AdaGrad(lr, eps=self.epsilon, l2=l2)
        cls = _optimizers.AdamW if self.solver == "adamw" else _optimizers.Adam
        return cls(lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon, l2=l2)

    def _new_network(self, n_in, n_out, output, loss, hidden):
        seed = (
            self.random_state
            if isinstance(self.random_state, (int, np.integer))
            else np.random.default_rng(self.random_state).integers(2**31)
            if self.random_state is None
            else self.random_state.randint(2**31)
        )
        sizes = [n_in] + hidden
        act = _ACTIVATIONS[self.activation]
        layers = [Dense(a, b, activation=act) for a, b in zip(sizes, sizes[1:])]
        layers.append(Dense(sizes[-1], n_out, activation=output))
        return Sequential(*layers, loss=loss, dtype=self.dtype, seed=int(seed))

    def _train(self, X, Y, n_out, output, loss):
        hidden = self._check_params()
        batch = self._batch(X.shape[0])
        if not (self.warm_start and hasattr(self, "net_")):
            self.net_ = self._new_network(X.shape[1], n_out, output, loss, hidden)
            self.loss_curve_, self.t_ = [], 0
        net = self.net_
        net.n_threads = self.n_threads
        callbacks = []
        if self.learning_rate == "invscaling" and self.solver == "sgd":
            callbacks.append(_callbacks.InverseScaling(self.power_t))
        elif self.learning_rate == "adaptive" and self.solver == "sgd":
            callbacks.append(_AdaptiveRate(self.tol))
        stopper = _callbacks.EarlyStopping(
            monitor="val_accuracy"
            if (self.early_stopping and loss != "mse")
            else "val_loss"
            if self.early_stopping
            else "loss",
            patience=self.n_iter_no_change,
            min_delta=self.tol,
            restore_best_weights=self.early_stopping,
        )
        callbacks.append(stopper)
        validation = self.validation_fraction if self.early_stopping else 0.0
        history = net.fit(
            X,
            Y,
            epochs=self.max_iter,
            batch_size=batch,
            optimizer=self._optimizer(batch),
            shuffle=self.shuffle,
            validation_split=validation,
            callbacks=callbacks,
            verbose=int(bool(self.verbose)),
        )
        losses = history.history["loss"]
        self.loss_curve_ = list(self.loss_curve_) + [float(v) for v in losses]
        self.n_iter_ = len(losses)
        self.t_ += self.n_iter_ * X.shape[0]
        self.best_loss_ = None if self.early_stopping else float(min(self.loss_curve_))
        if self.early_stopping:
            key = "val_accuracy" if loss != "mse" else "val_loss"
            self.validation_scores_ = [float(v) for v in history.history[key]]
            self.best_validation_score_ = (
                max(self.validation_scores_) if loss != "mse" else min(self.validation_scores_)
            )
        if stopper.stopped_epoch is None and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=1,
            )  # (the default, as scikit-learn's MLP)
        self.n_layers_ = len(net.layers) + 1
        self.n_outputs_ = n_out
        self.out_activation_ = "logistic" if output == "sigmoid" else output
        return self

    @property
    def coefs_(self):
        """The weight matrices, layer by layer: W of shape (n_in, n_out)."""
        check_is_fitted(self, "net_")
        with self.net_.exclusive():  # one snapshot, never mid-step of a fit
            return [layer.W.copy() for layer in self.net_.layers]

    @property
    def intercepts_(self):
        """The bias vectors, layer by layer."""
        check_is_fitted(self, "net_")
        with self.net_.exclusive():
            return [layer.b.copy() for layer in self.net_.layers]

    def _inputs(self, X):
        check_is_fitted(self, "net_")
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def _outputs(self, X):
        X = self._inputs(X)
        return self.net_.predict_proba(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier: softmax cross-entropy for
    several classes, one sigmoid unit with binary cross-entropy for two."""

    def fit(self, X, y):
        X, y = validate_data(
            self,
            X,
            y,
            dtype=(np.float64, np.float32),
            y_numeric=False,
            reset=not (self.warm_start and hasattr(self, "net_")),
        )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if self.warm_start and hasattr(self, "classes_"):
            if not set(np.unique(y)) <= set(self.classes_):
                raise ValueError("warm_start: y holds classes the first fit did not see")
        else:
            self._binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._binarizer.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes; got 1 "
                f"class: {self.classes_[0]!r}"
            )
        labels = np.searchsorted(self.classes_, y)
        if len(self.classes_) == 2:
            return self._train(X, labels.astype(np.float64), 1, "sigmoid", "binary_cross_entropy")
        return self._train(X, labels, len(self.classes_), "softmax", "cross_entropy")

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes)."""
        check_is_fitted(self, "net_")
        out = self._outputs(X)
        if len(self.classes_) == 2:
            return np.column_stack([1 - out[:, 0], out[:, 0]])
        return out

    def predict_log_proba(self, X):
        return np.log(np.clip(self.predict_proba(X), np.finfo(np.float64).tiny, None))

    def predict(self, X):
        """Class labels, from `classes_`: the network's own label rule (the
        argmax of the softmax; for two classes, the second when p ≥ ½)."""
        X = self._inputs(X)
        return self.classes_[self.net_.predict(X)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: identity output, squared error;
    y may hold several targets (n_samples, n_targets)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(
            self,
            X,
            y,
            dtype=(np.float64, np.float32),
            y_numeric=True,
            multi_output=True,
            reset=not (self.warm_start and hasattr(self, "net_")),
        )
        self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._train(X, Y.astype(np.float64), Y.shape[1], "identity", "mse")

    def predict(self, X):
        """Predicted values, (n_samples,) for one target."""
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out
