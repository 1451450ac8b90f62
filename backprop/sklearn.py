"""scikit-learn estimators on backprop's compiled core.

    from backprop.sklearn import MLPClassifier, MLPRegressor

They are scikit-learn's MLPClassifier and MLPRegressor in parameters and in
behaviour, trained by the compiled core:

- the same parameters, fitted attributes (coefs_ and intercepts_, which
  may be assigned, loss_, loss_curve_, best_loss_, validation_scores_,
  best_validation_score_, classes_, n_iter_, t_, n_layers_, n_outputs_,
  out_activation_) and methods (fit, partial_fit, predict, predict_proba,
  predict_log_proba, score);
- the same model: Glorot-uniform initial weights and biases (drawn from
  random_state exactly as scikit-learn draws them), the penalty alpha/2·‖W‖²
  on the weights only, L-BFGS (solver="lbfgs", with max_fun), softmax for
  several classes, one logistic unit for two, a logistic unit per label for
  multi-label y (an indicator matrix), several outputs for a 2-D y in
  regression, loss="poisson" with an exp output;
- the same training: the stopping rule on tol and n_iter_no_change (also
  np.inf), early stopping on the validation score (accuracy, or R² for the
  regressor) over scikit-learn's split (stratified by class for two
  classes), the learning-rate schedules
  'invscaling' (over the samples seen, t_) and 'adaptive', warm_start and
  partial_fit (classes= on the first call), sample_weight, sparse X (CSR or
  CSC), parameters in the input's float type (float32 in, float32 out),
  the "Iteration N, loss = …" lines of verbose, and scikit-learn's errors.

Beyond scikit-learn's MLP: the activations 'leaky_relu', 'sigmoid' (=
'logistic'), 'gelu' (exact), 'gelu_tanh', 'silu' (= 'swish'), 'softplus',
'elu' (α = 1) and 'selu' (see backprop.activations),
the solvers 'rmsprop', 'adagrad' and 'adamw', dtype
('float32' or 'float64' whatever the input; None, the default, follows the
input), and n_threads: the BLAS threads for this model's training and
prediction, None (the default) for automatic, which inside joblib's worker
processes follows the limits joblib sets for them; set n_threads=1 when a
sweep runs one model per core (GridSearchCV(n_jobs=...), joblib's Dask
backend), so that the models do not compete for the cores.  And dropout, an
extension parameter scikit-learn's MLP does not have: the fraction in
[0, 1) of every hidden layer's units dropped in training (inverted dropout,
see backprop.Dropout; 0, the default, for none), with the stochastic
solvers only.

Where results differ from scikit-learn's (beyond the random draws of
shuffling): sample weights are scaled to mean 1 once for the whole data
(scikit-learn divides each batch's gradient by that batch's weight sum);
the penalty's gradient is alpha·W over the batch size for every batch,
the last one of an epoch included when it is smaller (scikit-learn: over
its own rows); loss_curve_ adds the penalty at the weights each epoch
began with; Adam adds ε to the bias-corrected root of the second moment
(scikit-learn: to the root before its correction).

fit and partial_fit run in one thread at a time for an estimator (another
thread's call meanwhile raises RuntimeError), and one refused before it
trains leaves the estimator as it was.

`to_sklearn(net)` turns a Sequential into a fitted scikit-learn
MLPClassifier or MLPRegressor (sklearn.neural_network) that predicts as it
does, where scikit-learn's MLP can hold the network (one hidden activation
among identity, logistic, tanh and relu; a softmax, logistic, identity or
exp output); `from_sklearn(estimator)` turns a fitted MLP, scikit-learn's
or one of these, into a Sequential.  Requires scikit-learn
(pip install "backprop[sklearn]").
"""

from __future__ import annotations

import contextlib
import numbers
import threading
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse

try:
    from sklearn import neural_network as sk_neural_network
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - only without the optional extra
    raise ImportError(
        "backprop.sklearn needs scikit-learn: pip install 'backprop[sklearn]' (or scikit-learn)"
    ) from exc

from . import callbacks as _callbacks
from . import losses as _losses
from . import optimizers as _optimizers
from ._threads import check_threads, get_num_threads, num_threads, set_num_threads
from .layers import Dense, Dropout
from .network import Sequential

__all__ = ["MLPClassifier", "MLPRegressor", "to_sklearn", "from_sklearn"]

_ACTIVATIONS = {
    "identity": "identity",
    "logistic": "sigmoid",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
    "softplus": "softplus",
    "elu": "elu",
    "selu": "selu",
}
_SPARSE = ["csr", "csc"]  # the sparse formats the estimators take as they are
_STOCHASTIC = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_SOLVERS = ("lbfgs", *_STOCHASTIC)
_NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain "
    "large values and need to be preprocessed."
)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_number(name, value, low, high=np.inf, low_open=False, high_open=False, integer=False):
    """value a finite number (an integer if `integer`) from low to high, the
    ends included unless open; a ValueError naming `name` otherwise."""
    ok = (_is_int(value) if integer else isinstance(value, numbers.Real)) and not isinstance(
        value, bool
    )
    if ok:
        ok = (
            bool(np.isfinite(value))
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bound = f"{'>' if low_open else '≥'} {low}"
        if high < np.inf:
            bound += f" and {'<' if high_open else '≤'} {high}"
        raise ValueError(f"{name} must be {kind} {bound}, got {value!r}")


_SERIAL_LOCK = threading.Lock()
_serial = {"depth": 0, "pool": 1}  # fits in _one_blas_thread, and the pool they found


@contextlib.contextmanager
def _one_blas_thread():
    """A block with a BLAS pool of one thread; yields the pool's size as it
    was.  Counted, so that fits in several Python threads leave the pool as
    the first found it when the last one ends."""
    with _SERIAL_LOCK:
        if _serial["depth"] == 0:
            _serial["pool"] = get_num_threads()
            set_num_threads(1)
        _serial["depth"] += 1
        pool = _serial["pool"]
    try:
        yield pool
    finally:
        with _SERIAL_LOCK:
            _serial["depth"] -= 1
            if _serial["depth"] == 0:
                set_num_threads(_serial["pool"])


_FITTING: set[int] = set()  # the estimators (by id) that some thread is fitting
_FITTING_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_fit_at_a_time(est):
    """Keep est's fit and partial_fit to one thread at a time: another
    thread's meanwhile raises RuntimeError at once, touching nothing."""
    with _FITTING_LOCK:
        if id(est) in _FITTING:
            raise RuntimeError(
                f"this {type(est).__name__} is being fitted by another thread: fit and "
                "partial_fit one call at a time (sklearn.base.clone gives another estimator)"
            )
        _FITTING.add(id(est))
    try:
        yield
    finally:
        with _FITTING_LOCK:
            _FITTING.discard(id(est))


def _penalty(net) -> float:
    """Σ ‖W‖² over the layers of net (the biases are not penalised)."""
    return float(sum(np.dot(w.ravel(), w.ravel()) for w in (layer.W for layer in net.layers)))


def _set_rate(net, lr):
    """Change the learning rate of the schedules as scikit-learn does.  Its
    velocity holds the past steps, each at the rate it was taken with
    (v ← μ·v − η·g), where SGD's holds the gradients (v ← μ·v + g, a step of
    η·v): that velocity is rescaled by the old rate over the new."""
    old = net.optimizer.lr
    net.optimizer.lr = lr
    if isinstance(net.optimizer, _optimizers.SGD):
        for velocity in net.optimizer_state:
            velocity *= old / lr


class _Epochs(_callbacks.Callback):
    """scikit-learn's bookkeeping at the end of every epoch: loss_, loss_curve_,
    n_iter_ and t_; the count of epochs without improvement (of the training
    loss, or of the validation score with early stopping) and the stop it
    triggers; the 'invscaling' and 'adaptive' learning rates; verbose's lines."""

    def __init__(self, est, rows, batches, validation):
        self.est, self.rows, self.batches, self.validation = est, rows, batches, validation

    def on_epoch_begin(self, net, epoch, logs):
        self.penalty = _penalty(net)

    def on_epoch_end(self, net, epoch, logs):
        est = self.est
        est.loss_ = est._reported_loss(logs["loss"], self.penalty, self.batches)
        est.loss_curve_.append(est.loss_)
        est.n_iter_ += 1
        est.t_ += self.rows
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        if self.validation is not None:
            score = est._network_score(net, *self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:  # (nan is no worse)
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_params = net.params.copy()
        else:
            if est.loss_ > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, est.loss_)
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            _set_rate(net, est.learning_rate_init / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            msg = (
                f"{what} did not improve more than tol={est.tol:f} for "
                f"{est.n_iter_no_change} consecutive epochs."
            )
            if sgd and est.learning_rate == "adaptive" and net.optimizer.lr > 1e-6:
                _set_rate(net, net.optimizer.lr / 5)
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"{msg} Setting learning rate to {net.optimizer.lr:f}")
                return
            if est.verbose:
                tail = (
                    " Learning rate too small." if sgd and est.learning_rate == "adaptive" else ""
                )
                print(f"{msg}{tail} Stopping.")
            est._stopped = True
            net.stop_training = True


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
        max_fun=15000,
        dtype=None,
        n_threads=None,
        dropout=0.0,
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
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- parameters --------------------------------------------------------------
    def _check_params(self):
        """The hidden layer sizes, once every parameter has passed its check."""
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not _is_int(s) or s < 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(_SOLVERS)}, got {self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError(
                f"learning_rate must be 'constant', 'invscaling' or "
                f"'adaptive', got {self.learning_rate!r}"
            )
        if not (self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1)):
            raise ValueError(
                f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}"
            )
        _check_number("max_iter", self.max_iter, 1, integer=True)
        _check_number("max_fun", self.max_fun, 1, integer=True)
        _check_number("alpha", self.alpha, 0)
        _check_number("tol", self.tol, 0)
        _check_number("learning_rate_init", self.learning_rate_init, 0, low_open=True)
        _check_number("power_t", self.power_t, 0)
        _check_number("momentum", self.momentum, 0, 1)
        _check_number("beta_1", self.beta_1, 0, 1, high_open=True)
        _check_number("beta_2", self.beta_2, 0, 1, high_open=True)
        _check_number("epsilon", self.epsilon, 0, low_open=True)
        _check_number("validation_fraction", self.validation_fraction, 0, 1, high_open=True)
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError(
                "validation_fraction must be > 0 with early_stopping=True (the share "
                "of the rows held out to score each epoch), got 0"
            )
        if self.n_iter_no_change != np.inf:
            _check_number("n_iter_no_change", self.n_iter_no_change, 1, integer=True)
        if self.dtype is not None:
            try:
                known = np.dtype(self.dtype) in (np.float32, np.float64)
            except TypeError:
                known = False
            if not known:
                raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        if self.n_threads is not None:
            try:
                check_threads(self.n_threads, "n_threads")  # the network's own check
            except TypeError as exc:  # reported as ValueError, like the other parameters
                raise ValueError(str(exc)) from None
        _check_number("dropout", self.dropout, 0, 1, high_open=True)
        if self.dropout > 0 and self.solver == "lbfgs":
            raise ValueError(
                "dropout: solver='lbfgs' minimises one fixed loss, and dropout draws "
                "new masks every pass; use a stochastic solver (adam, sgd …)"
            )
        return [int(s) for s in sizes]

    def _optimizer(self, batch, mean_weight):
        """The network's optimizer for a solver; l2 = alpha / batch is
        scikit-learn's penalty gradient alpha·W / batch, on the weights alone."""
        l2 = self.alpha / (batch * mean_weight)
        lr = self.learning_rate_init
        common = dict(l2=l2, decay_biases=False)
        if self.solver == "sgd":
            nesterov = self.nesterovs_momentum and self.momentum > 0
            return _optimizers.SGD(lr, momentum=self.momentum, nesterov=nesterov, **common)
        if self.solver == "rmsprop":
            return _optimizers.RMSProp(lr, eps=self.epsilon, **common)
        if self.solver == "adagrad":
            return _optimizers.AdaGrad(lr, eps=self.epsilon, **common)
        cls = _optimizers.AdamW if self.solver == "adamw" else _optimizers.Adam
        return cls(lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon, **common)

    # -- the network -------------------------------------------------------------
    def _new_network(self, sizes, output, loss, dtype, rng):
        """The network with scikit-learn's initial parameters: for each layer
        W and then b from U(−r, r), r = √(f / (fan_in + fan_out)), f = 2 for
        the logistic activation and 6 for the others, drawn from rng in the
        order scikit-learn draws them."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        initial = []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = rng.uniform(-bound, bound, (fan_in, fan_out))
            initial.append((W, rng.uniform(-bound, bound, fan_out)))
        act = _ACTIVATIONS[self.activation]
        layers: list[Dense | Dropout] = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers.append(Dense(a, b, activation=act))
            if self.dropout > 0:  # (an extension: after every hidden layer)
                layers.append(Dropout(self.dropout))
        layers.append(Dense(sizes[-2], sizes[-1], activation=output))
        net = Sequential(*layers, loss=loss, dtype=dtype, seed=0)
        for layer, (W, b) in zip(net.layers, initial):
            layer.W, layer.b = W, b
        return net

    def _reported_loss(self, loss, penalty, batches):
        """The epoch's loss as scikit-learn reports it: the data term (squared
        error averaged over the outputs too) plus, for each of the epoch's
        batches, the penalty alpha/2·‖W‖² over the batch's weight (its rows
        without sample weights) times its share of the rows, here with the
        weights W as the epoch began."""
        if self.out_activation_ == "identity":
            loss = loss / self.n_outputs_
        return float(loss + 0.5 * self.alpha * penalty * batches / self._weight_sum)

    def _network_score(self, net, X, y, sample_weight):
        """The validation score of net: accuracy or R², nan for outputs that
        are not finite."""
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                out = net.predict_proba(X)
            except ValueError:  # (outputs that overflow the float type)
                return np.nan
        if not np.isfinite(out).all():
            return np.nan
        return float(self._score_outputs(out, y, sample_weight))

    # -- training ----------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False, classes=None):
        """fit (or, incremental, partial_fit).  A fit refused before it trains
        (bad data, weights or parameters; a network another thread is using)
        leaves the estimator as it was; one fit of an estimator at a time."""
        with _one_fit_at_a_time(self):
            hidden = self._check_params()
            rng = self._random_state()
            first = not hasattr(self, "net_") or (not self.warm_start and not incremental)
            with contextlib.nullcontext() if first else self.net_.exclusive():
                saved = dict(self.__dict__)
                try:
                    if incremental:
                        self._partial_fit_classes(y, classes)
                    net, train = self._prepare(X, y, sample_weight, incremental, hidden, rng, first)
                except BaseException:
                    self.__dict__.clear()
                    self.__dict__.update(saved)
                    raise
                train()
        if not np.isfinite(net.params).all():
            raise ValueError(_NON_FINITE)
        return self

    def _random_state(self):
        """random_state as scikit-learn's check_random_state makes it."""
        try:
            return check_random_state(self.random_state)
        except ValueError as exc:
            raise ValueError(f"random_state: {exc}") from None

    def _partial_fit_classes(self, y, classes):
        """partial_fit's classes= (the classifier's)."""

    def _prepare(self, X, y, sample_weight, incremental, hidden, rng, first):
        """Everything a fit checks and sets up before training: (the network,
        a function that trains it)."""
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y, targets, (output, loss) = self._validate_input(X, y, incremental, reset=first)
        if scipy.sparse.issparse(X):
            X = X.tocsr()  # (rows are what training reads)
        n = X.shape[0]
        if sample_weight is not None:
            sample_weight = self._checked_weights(sample_weight, n)
        sizes = [X.shape[1], *hidden, targets.shape[1] if targets.ndim == 2 else 1]
        if loss == "cross_entropy":
            sizes[-1] = len(self.classes_)
        model = (tuple(sizes), self.activation, output, float(self.dropout))
        if not first and model != self._model:
            raise ValueError(
                f"warm_start / partial_fit go on training the network fitted before: "
                f"layer sizes {self._model[0]}, activation {self._model[1]!r}, output "
                f"{self._model[2]!r} and dropout {self._model[3]}; this fit asks for "
                f"{model[0]}, {model[1]!r}, {model[2]!r} and {model[3]}. Set "
                "warm_start=False (or fit anew) to start over."
            )
        if first:
            dtype = self.dtype if self.dtype is not None else X.dtype
            self._model = model
            self.net_ = self._new_network(sizes, output, loss, dtype, rng)
            self.n_iter_, self.t_ = 0, 0
            self.n_layers_ = len(sizes)
            self.n_outputs_ = sizes[-1]
            self.out_activation_ = {"sigmoid": "logistic"}.get(output, output)
            self._best_params = self.net_.params.copy()
            self._no_improvement_count = 0
            self._optimizer_ready = False
            for name in (
                "loss_curve_",
                "best_loss_",
                "validation_scores_",
                "best_validation_score_",
            ):
                self.__dict__.pop(name, None)
        net = self.net_
        net.n_threads = self.n_threads
        if self.solver == "lbfgs":
            return net, lambda: self._fit_lbfgs(net, X, targets, sample_weight)
        return net, self._fit_stochastic(net, X, y, targets, sample_weight, rng, incremental)

    def _checked_weights(self, sample_weight, n):
        w = np.asarray(sample_weight)
        if w.dtype.kind == "c":  # (converting would drop the imaginary parts)
            raise ValueError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
        w = w.astype(np.float64)
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,):
            raise ValueError(
                f"sample_weight.shape == {w.shape}, expected ({n},): one weight per sample"
            )
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must hold finite weights ≥ 0")
        total = w.sum()
        if not total > 0:
            raise ValueError("sample_weight: every weight is zero; give some sample a weight > 0")
        if not np.isfinite(total):
            raise ValueError(
                "sample_weight: the weights add up to more than the float range holds; "
                "scale them down"
            )
        if not np.isfinite(max(self.alpha, 1.0) * n / total):  # (the penalty's alpha / Σw)
            raise ValueError(
                f"sample_weight: the weights are too small: they add up to {total:g}, "
                "and alpha or n_samples over that overflows; scale them up"
            )
        return w

    def _fit_stochastic(self, net, X, y, targets, sample_weight, rng, incremental):
        """The set-up of a stochastic solver's fit (the validation split, the
        optimizer), and the function that then trains."""
        if not hasattr(self, "loss_curve_"):  # (a first fit, or one after lbfgs)
            self.loss_curve_ = []
            self.best_loss_ = np.inf
            self.validation_scores_ = self.best_validation_score_ = None
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        if not self.early_stopping and self.best_loss_ is None:  # (it was on before)
            self.best_loss_ = np.inf
        validation = None
        if self.early_stopping:
            stratify = y if self._stratified else None
            parts = train_test_split(
                X,
                targets,
                y,
                *([] if sample_weight is None else [sample_weight]),
                random_state=rng,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            X, X_val, targets, _, _, y_val = parts[:6]
            if sample_weight is not None:
                sample_weight, weight_val = parts[6:]
            else:
                weight_val = None
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            validation = (X_val, y_val, weight_val)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else self.batch_size
        if batch > n and self.batch_size != "auto":
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. "
                "It is going to be clipped",
                stacklevel=5,
            )
        batch = min(batch, n)
        mean_weight = 1.0
        if sample_weight is not None:  # scaled to mean 1 (see the module's notes)
            mean_weight = float(sample_weight.mean())
            sample_weight = sample_weight / mean_weight
        self._weight_sum = n * mean_weight  # (Σw of the rows trained on)
        if not incremental or not getattr(self, "_optimizer_ready", False):
            net.optimizer = self._optimizer(batch, mean_weight)
            self._optimizer_ready = True
        else:  # partial_fit goes on with the optimizer; the penalty is this call's
            net.optimizer.l2 = self._optimizer(batch, mean_weight).l2
        # the batch order, drawn from random_state (as scikit-learn's shuffling is)
        net.training_state.seed = int(rng.randint(np.iinfo(np.int32).max))

        def train():
            epochs = _Epochs(self, n, -(-n // batch), validation)
            self._stopped = False
            self.n_iter_ = 0  # (as scikit-learn: the epochs of this call)
            history = net.fit(
                X,
                targets,
                epochs=1 if incremental else self.max_iter,
                batch_size=batch,
                shuffle=self.shuffle,
                sample_weight=sample_weight,
                callbacks=[epochs],
            )
            if len(history.history["loss"]) > self.n_iter_:  # an epoch that diverged
                raise ValueError(_NON_FINITE)
            if self.early_stopping:
                net.params = self._best_params
            if not incremental and not self._stopped and self.n_iter_ == self.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=4,
                )

        return train

    def _fit_lbfgs(self, net, X, targets, sample_weight):
        """scipy's L-BFGS-B over the flat parameters, whose objective is the
        compiled whole-batch loss and gradient plus the penalty
        alpha/2·‖W‖² / Σw (n without weights)."""
        n = X.shape[0]
        total = float(n if sample_weight is None else sample_weight.sum())
        if sample_weight is not None:  # mean 1: the core's 1/n Σ w_i ℓ_i is Σ w_i ℓ_i / Σ w
            sample_weight = sample_weight * (n / total)
        scale = 1.0 / self.n_outputs_ if self.out_activation_ == "identity" else 1.0
        weights = np.zeros(net.params.shape, bool)  # the entries the penalty reaches
        for W, _ in net.layout.views(weights):
            W[...] = True
        width = sum(net.layout.sizes)
        step = max(256, (16 << 20) // (8 * width))
        chunks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
        alpha = self.alpha / total

        limit = np.finfo(net.dtype).max

        def objective(x):
            if not (np.abs(x) <= limit).all():  # a line-search step past the float range:
                return np.nan, np.full(x.shape, np.nan)  # (so that scipy stops there)
            net.params = x
            value, grad = 0.0, np.zeros(net.params.shape, np.float64)
            with num_threads(pool):  # the products: the pool as it was
                for rows in chunks:
                    part = None if sample_weight is None else sample_weight[rows]
                    value += net.loss_and_grad(X[rows], targets[rows], part) * (
                        (rows.stop - rows.start) / n
                    )
                    grad += net.grads * ((rows.stop - rows.start) / n)
            # scikit-learn's objective: the squared error averaged over the
            # outputs too, with the gradient of its sum over them
            w = net.params[weights].astype(np.float64)
            grad[weights] += alpha * w
            return value * scale + 0.5 * alpha * float(w @ w), grad

        iterations = []

        def report(intermediate_result):  # verbose: a line per iteration
            iterations.append(intermediate_result.fun)
            print(f"Iteration {len(iterations)}, loss = {intermediate_result.fun:.8f}")

        # L-BFGS-B's own work is vector updates over the parameters, which
        # BLAS threads slow down (a second thread costs more than it saves,
        # and on a busy machine far more): it runs on one.
        with _one_blas_thread() as pool:
            result = scipy.optimize.minimize(
                objective,
                net.params.astype(np.float64),
                method="L-BFGS-B",
                jac=True,
                callback=report if self.verbose else None,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
            )
        if not (np.abs(result.x) <= limit).all():
            raise ValueError(_NON_FINITE)
        net.params = result.x
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if result.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                f"(status={result.status}): {result.message}\n\nIncrease the number "
                "of iterations (max_iter) or scale the data (sklearn.preprocessing).",
                ConvergenceWarning,
                stacklevel=5,
            )

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y), optionally weighting the samples (sample_weight
        (n_samples,)).  With warm_start, go on from the last fit."""
        return self._fit(X, y, sample_weight)

    def _partial_fit_available(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. "
                f"{self.solver} is not stochastic."
            )
        return True

    # -- fitted attributes ------------------------------------------------------------
    @property
    def coefs_(self):
        """The weight matrices, layer by layer: W of shape (n_in, n_out), the
        network's own arrays (as in scikit-learn, writing into them changes
        the model).  Assigning a list of them writes them into the network."""
        check_is_fitted(self, "net_")
        with self.net_.exclusive():  # (refused while another thread fits)
            return [layer.W for layer in self.net_.layers]

    @coefs_.setter
    def coefs_(self, value):
        self._assign(value, "coefs_", "W")

    @property
    def intercepts_(self):
        """The bias vectors, layer by layer, the network's own arrays.
        Assigning a list of them writes them into the network."""
        check_is_fitted(self, "net_")
        with self.net_.exclusive():
            return [layer.b for layer in self.net_.layers]

    @intercepts_.setter
    def intercepts_(self, value):
        self._assign(value, "intercepts_", "b")

    def _assign(self, value, name, field):
        check_is_fitted(self, "net_")
        layers = self.net_.layers
        value = list(value)
        if len(value) != len(layers):
            raise ValueError(f"{name} must hold {len(layers)} arrays, one per layer")
        with self.net_.exclusive():  # all layers, or none
            old = [getattr(layer, field).copy() for layer in layers]
            try:
                for i, (layer, array) in enumerate(zip(layers, value)):
                    try:
                        setattr(layer, field, array)
                    except (TypeError, ValueError) as exc:
                        raise type(exc)(f"{name}[{i}]: {exc}") from None
            except BaseException:
                for layer, array in zip(layers, old):
                    setattr(layer, field, array)
                raise

    # -- prediction ----------------------------------------------------------------
    def _inputs(self, X):
        check_is_fitted(self, "net_")
        return validate_data(
            self, X, reset=False, accept_sparse=_SPARSE, dtype=(np.float64, np.float32)
        )

    def _outputs(self, X):
        X = self._inputs(X)
        return self.net_.predict_proba(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier: softmax cross-entropy for
    several classes, one logistic unit with binary cross-entropy for two,
    a logistic unit per label for multi-label y (an indicator matrix)."""

    _stratified = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE,
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes; got 1 "
                f"class: {self.classes_[0]!r}"
            )
        kind = self._binarizer.y_type_
        self._stratified = kind == "binary"  # (scikit-learn's: one output only)
        if kind == "multiclass":  # class numbers for the softmax
            return X, y, np.searchsorted(self.classes_, y), ("softmax", "cross_entropy")
        Y = self._binarizer.transform(y).astype(np.float64)
        return X, y, Y, ("sigmoid", "binary_cross_entropy")

    @available_if(_BaseMLP._partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y).  The first call needs `classes`, every
        class the model will see (or y as a multi-label indicator matrix)."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _partial_fit_classes(self, y, classes):
        known = getattr(self, "classes_", None)
        if known is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None and known is not None:
            if not np.array_equal(known, unique_labels(classes)):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to "
                    f"partial_fit, was: {known!r}"
                )
        elif classes is not None:
            target = np.asarray(y)
            self._binarizer = LabelBinarizer()
            if target.ndim == 2 and target.shape[1] > 1:
                self._binarizer.fit(target)  # a multi-label indicator matrix
            else:
                self._binarizer.fit(classes)
            self.classes_ = self._binarizer.classes_

    def _labels(self, out):
        """Labels of classes_ from the network's outputs: scikit-learn's
        rule (the first largest probability; for one logistic unit or a
        label, p > ½)."""
        return self._binarizer.inverse_transform(out[:, 0] if out.shape[1] == 1 else out)

    def _score_outputs(self, out, y, sample_weight):
        return accuracy_score(y, self._labels(out), sample_weight=sample_weight)

    def predict(self, X):
        """Class labels from classes_ (an indicator matrix for multi-label y)."""
        return self._labels(self._outputs(X))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes); for multi-label
        y, each label's probability."""
        out = self._outputs(X)
        if out.shape[1] == 1:
            return np.column_stack([1 - out[:, 0], out[:, 0]])
        return out

    def predict_log_proba(self, X):
        """The logarithm of predict_proba."""
        proba = self.predict_proba(X)
        return np.log(np.clip(proba, np.finfo(proba.dtype).tiny, None))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: identity output with squared
    error, or (loss="poisson") exp output with the half Poisson deviance;
    y may hold several targets (n_samples, n_targets)."""

    _stratified = False

    def __init__(
        self,
        loss="squared_error",
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
        max_fun=15000,
        dtype=None,
        n_threads=None,
        dropout=0.0,
    ):
        self.loss = loss
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dtype=dtype,
            n_threads=n_threads,
            dropout=dropout,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_input(self, X, y, incremental, reset):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss must be 'squared_error' or 'poisson', got {self.loss!r}")
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(np.float64)
        return X, y, Y, ("exp", "poisson") if self.loss == "poisson" else ("identity", "mse")

    @available_if(_BaseMLP._partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _score_outputs(self, out, y, sample_weight):
        return r2_score(y, out[:, 0] if out.shape[1] == 1 else out, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted values, (n_samples,) for one target."""
        out = self._outputs(X)
        return out[:, 0] if out.shape[1] == 1 else out


# -- conversion to and from scikit-learn's own MLP -------------------------------------
_SKLEARN_HIDDEN = {"identity": "identity", "sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}
_SKLEARN_OUTPUTS = {  # scikit-learn's out_activation_: (backprop's output, loss)
    "softmax": ("softmax", "cross_entropy"),
    "logistic": ("sigmoid", "binary_cross_entropy"),
    "identity": ("identity", "mse"),
    "exp": ("exp", "poisson"),
}


def _hidden_activation(net: Sequential) -> str:
    """scikit-learn's name for the one activation of net's hidden layers."""
    hidden = net.layers[:-1]
    for i, layer in enumerate(hidden):
        if layer.activation.name not in _SKLEARN_HIDDEN:
            raise ValueError(
                f"net: layers[{i}] has the {layer.activation.name} activation, which "
                "scikit-learn's MLP has not (its hidden activations: identity, logistic "
                "(sigmoid), tanh, relu)"
            )
    names = list(dict.fromkeys(layer.activation.name for layer in hidden))
    if len(names) > 1:
        raise ValueError(
            "net: scikit-learn's MLP has one activation for all hidden layers; this "
            f"network's hidden layers have {', '.join(names)}"
        )
    return _SKLEARN_HIDDEN[names[0]] if names else "relu"  # (none: never applied)


def _sorted_classes(net: Sequential, n: int):
    """(classes_, the output units in their order): scikit-learn keeps its
    classes sorted, and its probabilities in that order."""
    if net.classes is None:
        return np.arange(n), np.arange(n)
    names = np.asarray(net.classes)
    order = np.argsort(names, kind="stable")
    return names[order], order


def to_sklearn(net: Sequential):
    """A fitted scikit-learn MLPClassifier or MLPRegressor
    (sklearn.neural_network) that predicts as `net`: its predict_proba
    equals net.predict_proba to rounding, with the columns in the order of
    its classes_, which scikit-learn keeps sorted (net.classes, or 0, 1, …).

    scikit-learn's MLP holds a network whose hidden layers share one
    activation (identity, sigmoid = 'logistic', tanh or relu) and whose
    output and loss are softmax with cross_entropy (a classifier; two
    softmax units become the one logistic unit that scikit-learn uses for
    two classes), sigmoid with binary_cross_entropy (a classifier: two
    classes for one unit, multi-label for several, whose classes_ are the
    label numbers 0, 1, …), identity with mse or exp with poisson (a
    regressor; poisson needs scikit-learn 1.7 or later).  Any other network
    is refused with a ValueError that says why.  The estimator is left as
    its own first fit would leave it (n_iter_ 0), so warm_start=True trains
    on from these weights.  Labels may differ where a probability is
    exactly ½: scikit-learn's rule is p > ½, backprop's p ≥ ½.
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a backprop Sequential, got {type(net).__name__}")
    activation = _hidden_activation(net)
    with net.exclusive():  # one snapshot of the weights
        coefs = [layer.W.copy() for layer in net.layers]
        intercepts = [layer.b.copy() for layer in net.layers]
    hidden = tuple(layer.n_out for layer in net.layers[:-1])
    loss, output = net.loss.code, net.layers[-1].activation.name
    binarizer = None
    if loss == _losses.CROSS_ENTROPY:
        classes, order = _sorted_classes(net, net.n_outputs)
        coefs[-1], intercepts[-1] = coefs[-1][:, order], intercepts[-1][order]
        if net.n_outputs == 2:  # softmax(z₀, z₁)₁ = σ(z₁ − z₀)
            coefs[-1] = coefs[-1][:, 1:] - coefs[-1][:, :1]
            intercepts[-1] = intercepts[-1][1:] - intercepts[-1][:1]
        out_activation = "logistic" if net.n_outputs == 2 else "softmax"
        binarizer = LabelBinarizer().fit(classes)
    elif loss == _losses.BINARY_CROSS_ENTROPY:
        out_activation = "logistic"
        if net.n_outputs == 1:
            classes, order = _sorted_classes(net, 2)
            if order[0] == 1:  # the unit's class comes first: σ(−z) = 1 − σ(z)
                coefs[-1], intercepts[-1] = -coefs[-1], -intercepts[-1]
            binarizer = LabelBinarizer().fit(classes)
        else:  # multi-label: scikit-learn numbers the labels
            binarizer = LabelBinarizer().fit(np.eye(net.n_outputs, dtype=int))
    elif loss == _losses.MSE:
        if output != "identity":
            raise ValueError(
                "net: scikit-learn's MLPRegressor has an identity output; this mse "
                f"network's output layer is {output!r}"
            )
        out_activation = "identity"
    else:  # poisson, with an exp output
        if "loss" not in sk_neural_network.MLPRegressor().get_params():
            raise ValueError(
                "net: a poisson network needs scikit-learn 1.7 or later, whose "
                "MLPRegressor has loss='poisson'"
            )
        out_activation = "exp"
    shape = dict(hidden_layer_sizes=hidden, activation=activation)
    if binarizer is not None:
        est = sk_neural_network.MLPClassifier(**shape)
        est._label_binarizer = binarizer
        est.classes_ = binarizer.classes_
    elif out_activation == "exp":
        est = sk_neural_network.MLPRegressor(loss="poisson", **shape)
    else:
        est = sk_neural_network.MLPRegressor(**shape)
    # the fitted attributes, as scikit-learn's first stochastic fit sets them
    est.coefs_, est.intercepts_ = coefs, intercepts
    est.n_features_in_ = net.n_inputs
    est.n_layers_ = len(coefs) + 1
    est.n_outputs_ = coefs[-1].shape[1]
    est.out_activation_ = out_activation
    est.n_iter_ = est.t_ = 0
    est.loss_curve_ = []
    est.best_loss_ = np.inf
    est.validation_scores_ = est.best_validation_score_ = None
    est._no_improvement_count = 0
    est._best_coefs = [W.copy() for W in coefs]
    est._best_intercepts = [b.copy() for b in intercepts]
    return est


def _class_names(classes):
    """net.classes for scikit-learn's classes_: None for 0, 1, … (the
    default labels), else their names."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(len(classes))):
        return None
    return [str(c) for c in classes]


def from_sklearn(estimator) -> Sequential:
    """The Sequential of a fitted MLPClassifier or MLPRegressor, scikit-learn's
    (sklearn.neural_network) or backprop.sklearn's, predicting as it does:
    the same probabilities (net.predict_proba; one column, p of classes_[1],
    for two classes) and labels (net.classes holds the names of classes_,
    unless they are 0, 1, …; multi-label estimators number their labels).
    Its dtype is the estimator's weights'.  backprop.sklearn's estimators
    give a copy of their network, leaky_relu and all."""
    if isinstance(estimator, _BaseMLP):
        check_is_fitted(estimator, "net_")
        net = estimator.net_.copy()
        if (
            isinstance(estimator, MLPClassifier)
            and estimator._binarizer.y_type_ != "multilabel-indicator"
        ):
            net.classes = _class_names(estimator.classes_)
        return net
    if not isinstance(estimator, (sk_neural_network.MLPClassifier, sk_neural_network.MLPRegressor)):
        raise TypeError(
            "estimator must be a fitted MLPClassifier or MLPRegressor (scikit-learn's or "
            f"backprop.sklearn's), got {type(estimator).__name__}"
        )
    check_is_fitted(estimator)
    hidden = estimator.activation
    if hidden not in _SKLEARN_HIDDEN.values():
        raise ValueError(f"estimator: activation {hidden!r} has no backprop equivalent")
    out = estimator.out_activation_
    classifier = isinstance(estimator, sk_neural_network.MLPClassifier)
    if out not in _SKLEARN_OUTPUTS or (out in ("softmax", "logistic")) != classifier:
        raise ValueError(
            f"estimator: out_activation_ {out!r} has no backprop equivalent in "
            f"{type(estimator).__name__}"
        )
    output, loss = _SKLEARN_OUTPUTS[out]
    act = "sigmoid" if hidden == "logistic" else hidden
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    dtype = np.dtype(coefs[0].dtype if coefs[0].dtype == np.float32 else np.float64)
    sizes = [W.shape[0] for W in coefs] + [coefs[-1].shape[1]]
    layers = [Dense(a, b, act, dtype=dtype) for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(Dense(sizes[-2], sizes[-1], output, dtype=dtype))
    net = Sequential(*layers, loss=loss, dtype=dtype)
    for layer, W, b in zip(net.layers, coefs, intercepts):
        layer.W, layer.b = W, b
    if classifier and estimator._label_binarizer.y_type_ != "multilabel-indicator":
        net.classes = _class_names(estimator.classes_)
    return net
