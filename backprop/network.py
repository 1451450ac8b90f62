"""Sequential networks: a stack of Dense layers with a loss, trained by
backpropagation and mini-batch gradient descent.

All parameters of a network live in one flat buffer `params` (each layer's W
and b are views into it, layer after layer), and all gradients in `grads`,
laid out the same way.  `fit` hands whole epochs to the compiled engine:
shuffled rows are gathered, and forward, loss, backward and the update
w ← w − η·∂L/∂w run for every batch without returning to Python.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
from typing import Iterable

import numpy as np
from numpy.typing import ArrayLike

from . import _ops, _sources
from . import _threads
from . import activations as _activations
from . import losses as _losses
from . import optimizers as _optimizers
from ._codes import PredictMode
from ._engine import Engine, Guard, set_blas_thread_functions
from ._validation import (as_batch, as_float_array, check_dtype, check_int,
                          check_positive_float)
from .layers import Dense

__all__ = ["Sequential", "History"]

set_blas_thread_functions(*_threads.set_function_addresses())

# fit hands each epoch to the core in stretches of about this many
# floating-point operations (tens of milliseconds): Python sees Ctrl-C between
# two stretches, after a whole batch, at a cost of a few µs per stretch.
STRETCH_FLOPS = 2e9


def _exclusive(method):
    """Run `method` holding the network's guard (see Sequential.exclusive)."""
    @functools.wraps(method)
    def held(self, *args, **kwargs):
        with self._guard:
            return method(self, *args, **kwargs)
    return held


def _check_stack(layers, loss) -> None:
    """Raise unless `layers` are Dense layers that connect, and the output
    layer suits `loss`."""
    if not layers:
        raise ValueError("layers: a Sequential needs at least one Dense layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Dense):
            raise TypeError(f"layers[{i}] must be a Dense layer, got {type(layer).__name__}")
    if len({id(layer) for layer in layers}) != len(layers):
        raise ValueError("layers: the same Dense object appears twice")
    for i in range(1, len(layers)):
        if layers[i].n_in != layers[i - 1].n_out:
            raise ValueError(f"layers[{i}] takes {layers[i].n_in} inputs but "
                             f"layers[{i - 1}] gives {layers[i - 1].n_out} outputs")
    for i, layer in enumerate(layers[:-1]):
        if layer.activation.code == _activations.SOFTMAX:
            raise ValueError(f"layers[{i}]: softmax is for the output layer only")
    out = layers[-1]
    if loss.output is not None and out.activation.name != loss.output:
        raise ValueError(f"loss={loss.name!r} needs a {loss.output} output layer, "
                         f"got {out.activation.name!r}")
    if loss.code == _losses.CROSS_ENTROPY and out.n_out < 2:
        raise ValueError("loss='cross_entropy' needs at least 2 output units; for two "
                         "classes with one unit use sigmoid with binary_cross_entropy")


class History:
    """What `fit` returns: `history` maps each figure ('loss', 'accuracy',
    'val_loss', 'val_accuracy', 'lr') to its value in every epoch; `epoch`
    lists the epoch numbers."""

    def __init__(self):
        self.history: dict[str, list[float]] = {"loss": []}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = self.history["loss"][-1] if self.epoch else None
        return f"History(epochs={len(self.epoch)}, loss={last})"


class Sequential:
    """Layers applied one after another, with a loss.

    Parameters
    ----------
    *layers : Dense
        n_out of each layer must equal n_in of the next.
    loss : 'mse', 'binary_cross_entropy' or 'cross_entropy'
        cross_entropy needs a softmax output layer and binary_cross_entropy a
        sigmoid one (each pair is computed fused and stable).
    dtype : 'float32' or 'float64', optional
        The network's float type; by default the layers' own.
    seed : int, optional
        Seeds every layer that has no seed of its own, and the shuffling in
        `fit`: the same seed and data give bit-identical training.
    n_threads : int, optional
        BLAS threads for this network's matrix products (1 to 32768), at
        most the pool's size.  By default each layer's products choose: one thread below
        4 MFLOP, where a second costs about what it saves, else the pool as
        set by `backprop.set_num_threads` (or OMP_NUM_THREADS,
        OPENBLAS_NUM_THREADS, threadpoolctl).  Networks trained in several
        Python threads at once run on one BLAS thread each.
    """

    def __init__(self, *layers: Dense, loss: str | _losses.Loss = "mse",
                 dtype: str | np.dtype | None = None, seed: int | None = None,
                 n_threads: int | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self._loss = _losses.get(loss)
        _check_stack(layers, self._loss)
        self._dtype = check_dtype(layers[0].dtype if dtype is None else dtype)
        self._layers = tuple(layer if layer.dtype == self._dtype else layer.copy(self._dtype)
                             for layer in layers)
        self._guard = Guard()
        self._forward_outputs: tuple = ()     # each layer's output in the last forward
        self._seed = None if seed is None else check_int(seed, "seed", minimum=0)
        self._rng = np.random.default_rng(seed)
        if seed is not None:
            for layer in self.layers:
                if layer.seed is None:
                    layer.reset_parameters(self._rng)
        self._bind_flat_buffers()
        self._macs = sum(layer.n_in * layer.n_out for layer in self.layers)
        self._trainable = all(layer.activation.differentiable for layer in self.layers)
        self._row_mode = self._one_row_mode()
        self._engine = Engine(
            [self.layers[0].n_in] + [layer.n_out for layer in self.layers],
            [layer.activation.code for layer in self.layers],
            [layer.activation.negative_slope for layer in self.layers],
            self.loss.code, self._params, self._grads, capacity=32, guard=self._guard)
        self.n_threads = n_threads
        self.optimizer = _optimizers.SGD(0.01)
        self._classes: list[str] | None = None

    # -- the optimizer ------------------------------------------------------------
    @property
    def optimizer(self) -> _optimizers.Optimizer:
        """The update rule of fit and train_step (plain SGD, lr 0.01, until
        told otherwise).  Assigning another optimizer starts its state (the
        momentum, Adam's moments) afresh; changes to its settings take
        effect from the next update."""
        return self._optimizer

    @optimizer.setter
    @_exclusive
    def optimizer(self, value: _optimizers.Optimizer | str) -> None:
        value = _optimizers.get(value)
        if value is not getattr(self, "_optimizer", None):
            self._optimizer = value
            self._opt_state = [np.zeros_like(self.params) for _ in range(value.n_state)]
            self._opt_fresh = True
        self._apply_optimizer()

    @_exclusive
    def _apply_optimizer(self, steps: int | None = None) -> None:
        """Hand the optimizer's current settings and state to the engine
        (with `steps` taken, if given)."""
        opt = self._optimizer
        if len(self._opt_state) < opt.n_state:      # e.g. momentum set after the fact
            self._opt_state += [np.zeros_like(self.params)
                                for _ in range(opt.n_state - len(self._opt_state))]
        if steps is None:
            steps = 0 if self._opt_fresh else self._engine.optimizer_steps
        self._engine.set_optimizer(**opt.settings(), state=self._opt_state[:opt.n_state],
                                   steps=steps)
        self._opt_fresh = False
        _optimizers.attach(opt, self)        # (its later changes come here too)

    @property
    def optimizer_steps(self) -> int:
        """Updates the current optimizer has made."""
        return self._engine.optimizer_steps

    def _bind_flat_buffers(self) -> None:
        """One flat buffer for all parameters, one for all gradients; each
        layer's W, b, dW and db become views into them, layer after layer."""
        for i, layer in enumerate(self.layers):
            if not layer._joinable(self):
                raise ValueError(f"layers[{i}] already belongs to another Sequential: its "
                                 "weights live in that network's buffer; give this one "
                                 "a copy (layer.copy())")
        n = sum(layer.n_params for layer in self.layers)
        self._params = np.zeros(n, self.dtype)
        self._grads = np.zeros(n, self.dtype)
        off = 0
        for layer in self.layers:
            w_end = off + layer.n_in * layer.n_out
            b_end = w_end + layer.n_out
            shape = (layer.n_in, layer.n_out)
            layer._bind(self, self._guard,
                        self._params[off:w_end].reshape(shape), self._params[w_end:b_end],
                        self._grads[off:w_end].reshape(shape), self._grads[w_end:b_end])
            off = b_end

    # -- what the network is made of: fixed at construction ---------------------
    @property
    def layers(self) -> tuple[Dense, ...]:
        """The Dense layers, input first."""
        return self._layers

    @property
    def loss(self) -> _losses.Loss:
        return self._loss

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def params(self) -> np.ndarray:
        """All parameters in one flat buffer; each layer's W and b are views
        into it, layer after layer.  Assigning copies the values in."""
        return self._params

    @params.setter
    def params(self, value: ArrayLike) -> None:
        self._params_in(self._params, value, "params")

    @property
    def grads(self) -> np.ndarray:
        """Their gradients, laid out the same way: filled by loss_and_grad,
        backward and train_step (fit, with plain SGD, steps inside the
        backward pass instead).  Assigning copies the values in (before
        apply_gradients, say)."""
        return self._grads

    @grads.setter
    def grads(self, value: ArrayLike) -> None:
        self._params_in(self._grads, value, "grads")

    @_exclusive
    def _params_in(self, buffer, value, name) -> None:
        arr = as_float_array(value, name, self.dtype, ndims=(1,))
        if arr.shape != buffer.shape:
            raise ValueError(f"{name} must have shape {buffer.shape}, got {arr.shape}")
        buffer[...] = arr

    def exclusive(self) -> Guard:
        """The network's guard: `with net.exclusive():` keeps the network to
        this thread for the block.  Every call that reads or writes its
        parameters, optimizer or workspace (fit, predict, save, copy,
        pickling, forward, backward …) holds it while it runs; a call from
        another thread meanwhile raises RuntimeError at once, without
        waiting and without touching the network."""
        return self._guard

    def _one_row_mode(self) -> PredictMode | None:
        """What `predict` returns for one row, as the engine's predict_row
        mode; None where the engine has no shortcut (several sigmoid
        outputs)."""
        if self.loss.code == _losses.CROSS_ENTROPY:
            return PredictMode.ARGMAX
        if self.n_outputs > 1:
            return PredictMode.OUTPUTS if self.loss.code == _losses.MSE else None
        return (PredictMode.THRESHOLD if self.loss.code == _losses.BINARY_CROSS_ENTROPY
                else PredictMode.VALUE)

    # -- threads ----------------------------------------------------------------
    @property
    def n_threads(self) -> int | None:
        """BLAS threads for this network (None: automatic)."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value: int | None) -> None:
        self._n_threads = None if value is None else _threads.check_threads(value, "n_threads")
        if hasattr(self, "_engine"):
            self._engine.n_threads = self._n_threads or 0

    def _engine_for(self, rows: int, train: bool) -> Engine:
        """The engine, its workspace grown for training calls of `rows` rows."""
        if train:
            self._engine.reserve(rows)
        return self._engine

    # -- description ----------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    @property
    def is_classifier(self) -> bool:
        return self.loss.is_classification

    @property
    def seed(self) -> int | None:
        """The seed the network was built with (None: unseeded)."""
        return self._seed

    @property
    def classes(self) -> list[str] | None:
        """Names of the classes, kept in model files: one per output unit
        (the class of each unit of a softmax, or of mse outputs trained on
        one-hot targets; the label of each of several sigmoid outputs), two
        (label 0, then 1) for one sigmoid output.  None: the labels are
        0, 1, …"""
        return self._classes

    @classes.setter
    def classes(self, value) -> None:
        if value is None:
            self._classes = None
            return
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise TypeError(f"classes must be a list of names, got {type(value).__name__}")
        names = list(value)
        for i, name in enumerate(names):
            if not isinstance(name, (str, numbers.Real)) or isinstance(name, bool):
                raise TypeError(f"classes[{i}] must be a string or a number, "
                                f"got {type(name).__name__}")
        names = [str(name) for name in names]
        want = (2 if self.n_outputs == 1 and self.loss.code == _losses.BINARY_CROSS_ENTROPY
                else self.n_outputs)
        if len(names) != want:
            raise ValueError(f"classes must name {want} class{'es' if want > 1 else ''} "
                             f"for {self.n_outputs} {self.loss.name} "
                             f"output{'s' if self.n_outputs > 1 else ''}, got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError("classes must be distinct")
        self._classes = names

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return (f"Sequential(\n    {inner},\n    loss={self.loss.name!r}, "
                f"dtype={self.dtype.name!r})")

    def summary(self) -> str:
        """A table of the layers and their parameter counts."""
        rows = [f"{'layer':<8}{'shape':<14}{'activation':<12}{'params':>10}"]
        for i, layer in enumerate(self.layers):
            rows.append(f"{i:<8}{f'{layer.n_in} → {layer.n_out}':<14}"
                        f"{layer.activation.name:<12}{layer.n_params:>10,}")
        rows.append(f"loss {self.loss.name}, {self.params.size:,} parameters, "
                    f"{self.dtype.name}")
        return "\n".join(rows)

    # -- input checks -----------------------------------------------------------
    def _inputs(self, X, name="X"):
        return as_batch(X, name, self.dtype, self.n_inputs)

    def _data(self, X, y):
        X2, single = self._inputs(X)
        return X2, self._targets(y, X2.shape[0], single)

    def _targets(self, y, n_rows, single, name="y"):
        if single:  # the target of one sample: a label, a value or a vector
            y = np.asarray(y)
            y = y.reshape(1) if y.ndim == 0 else y.reshape(1, -1) if y.ndim == 1 else y
        return _losses.targets(self.loss, y, n_rows, self.n_outputs, self.dtype, name)

    # -- the per-layer path, for learners and custom loops --------------------
    @_exclusive
    def forward(self, X: ArrayLike) -> np.ndarray:
        """The outputs for one sample (n_in,) or a batch (rows, n_in), layer
        by layer through Dense.forward (which keeps what backward needs)."""
        a = self.layers[0].forward(X)
        for layer in self.layers[1:]:
            a = layer.forward(a)
        self._forward_outputs = tuple([layer._a for layer in self.layers])
        return a

    @_exclusive
    def backward(self, y: ArrayLike) -> np.ndarray:
        """Backpropagate the loss of the last `forward` against targets y,
        layer by layer from the output.  Fills `grads` (and each layer's dW,
        db) and returns it."""
        if not self._forward_outputs:
            raise RuntimeError("call forward(X) before backward(y)")
        if any(layer._a is not a for layer, a in zip(self.layers, self._forward_outputs)):
            raise RuntimeError("a layer ran forward on its own since the network's last "
                               "forward: call net.forward(X) again before backward(y)")
        self._require_trainable()
        out = self.layers[-1]
        a = out._a
        y2 = self._targets(y, a.shape[0], out._single)
        delta = np.empty_like(a)
        _ops.output_delta(self.loss.code, out.activation.code,
                          out.activation.negative_slope, delta, a, y2)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            dx = layer.backward_delta(delta, need_dx=i > 0)
            if i > 0:
                below = self.layers[i - 1]
                delta = np.empty_like(dx)
                _ops.act_backward(delta, dx, below._a, below.activation.code,
                                  below.activation.negative_slope)
        return self.grads

    @_exclusive
    def explain(self, x: ArrayLike, y: ArrayLike):
        """The chain rule for one sample, layer by layer from the output:
        z, a, f′(z), δ and ∂C/∂W = a_prev ⊗ δ, each checked against finite
        differences (see backprop.explain).  print() it."""
        from .explain import explain
        return explain(self, x, y)

    def step(self, lr: float) -> None:
        """One gradient-descent update: params ← params − lr · grads."""
        lr = check_positive_float(lr, "lr")
        with self._guard:
            _ops.sgd_update(self.params, self.grads, lr)

    # -- the compiled path ------------------------------------------------------
    def _cast(self, X, y):
        """Arrays of another float or integer width, cast to what the core
        takes (the network's float dtype, int64 labels), so that they too
        can skip the checked path; anything else is passed on as it is."""
        if type(X) is np.ndarray and X.dtype != self.dtype and X.dtype.kind == "f":
            X = X.astype(self.dtype)
        if type(y) is np.ndarray and y.dtype.kind in "iu" and y.dtype != np.int64:
            y = y.astype(np.int64)
        elif type(y) is np.ndarray and y.dtype.kind == "f" and y.dtype != self.dtype:
            y = y.astype(self.dtype)
        return X, y

    def _require_trainable(self):
        if self._trainable:
            return
        for i, layer in enumerate(self.layers):
            layer.activation.require_gradient(f" (layers[{i}])")

    def loss_and_grad(self, X: ArrayLike, y: ArrayLike) -> float:
        """The mean loss on (X, y); fills `grads` with its gradient."""
        value = self._engine.step_ready(*self._cast(X, y), 0.0, False) if self._trainable else None
        if value is not None:
            return value
        self._require_trainable()
        X2, Y = self._data(X, y)
        return self._engine_for(X2.shape[0], True).loss_and_grad(X2, Y)

    def train_step(self, X: ArrayLike, y: ArrayLike, lr: float | None = None) -> float:
        """One compiled training step on the batch (X, y): forward, loss,
        backward, and the optimizer's update (at `lr` if given, else the
        optimizer's own).  Returns the batch's mean loss."""
        if lr is None:
            lr = self._optimizer.lr
        value = self._engine.step_ready(*self._cast(X, y), lr, True) if self._trainable else None
        if value is not None:       # X and y were ready-made: no conversion
            return value
        self._require_trainable()
        lr = check_positive_float(lr, "lr")
        X2, Y = self._data(X, y)
        return self._engine_for(X2.shape[0], True).train_step(X2, Y, lr)

    def apply_gradients(self, lr: float | None = None) -> None:
        """One update by the network's optimizer from the current `grads`
        (at `lr` if given): the second half of train_step, for gradients
        from loss_and_grad that were then changed — averaged across
        processes by backprop.distributed, for instance."""
        self._engine.apply_update(check_positive_float(
            self._optimizer.lr if lr is None else lr, "lr"))

    @_exclusive
    def fit(self, X: ArrayLike | Iterable, y: ArrayLike | None = None, epochs: int = 1,
            batch_size: int = 32,
            lr: float | None = None, optimizer: _optimizers.Optimizer | str | None = None,
            shuffle: bool = True, validation_data: tuple | None = None,
            validation_split: float = 0.0, callbacks: list | None = None,
            early_stopping: bool = False, patience: int = 5, min_delta: float = 0.0,
            sample_weight: ArrayLike | None = None, class_weight: dict | str | None = None,
            chunk_size: int | None = None, verbose: int = 0) -> History:
        """Train by mini-batch gradient descent.

        X (n, n_in); y: class labels (n,) or one-hot (n, k) for
        cross_entropy, values for the other losses.  Each epoch visits every
        row once, in a new seeded random order when `shuffle`, as one call
        into the compiled core.

        Data larger than memory: a memory-mapped X (numpy.load(path,
        mmap_mode="r")) is read `chunk_size` rows at a time (by default about
        64 MiB, rounded down to whole batches); each epoch visits the chunks
        in a seeded random order and shuffles the rows within each.
        chunk_size does the same for arrays in memory.  Or X is an iterable
        of (X, y) or (X, y, sample_weight) batches and y is left out: each
        epoch reads it anew (a generator feeds one epoch) and shuffles the
        rows within each batch it gives.  Mini-batches do not cross chunks.

        optimizer: an Optimizer or a name ('sgd', 'adam', 'adamw',
            'rmsprop', 'adagrad'); it becomes the network's.  A plain `lr`
            means SGD at that rate (the current SGD's, keeping its momentum).
        validation_data: (X_val, y_val), scored after every epoch; or
            validation_split: the fraction of the rows (chosen by the
            network's seed) held out for it.
        callbacks: Callback objects (see backprop.callbacks): schedules,
            early stopping, your own.
        early_stopping: stop once the validation loss (the training loss
            without validation) has not improved by more than `min_delta` for
            `patience` epochs, and restore the best weights.
        sample_weight: (n,) weights ≥ 0; each row's loss counts w times
            (the loss is 1/n Σ w_i ℓ_i).  class_weight: {label: weight}, or
            'balanced' (n / (classes · rows of the class)); multiplies the
            sample weights.
        chunk_size: rows per chunk, see above.
        verbose: 1 shows a progress bar (one line per few epochs when the
            output is not a terminal).

        Returns a History: history['loss'] (and 'accuracy' for classifiers,
        'val_loss' and 'val_accuracy' with validation, 'lr') per epoch.

        The network is this thread's while fit runs (see `exclusive`): calls
        on it from other threads raise RuntimeError; callbacks, which run in
        fit's thread, may use it.
        """
        self._require_trainable()
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size")
        self._set_optimizer_for_fit(optimizer, lr)
        source, score = self._source(X, y, epochs, batch_size, chunk_size, sample_weight,
                                     class_weight, validation_data, validation_split)
        n = source.rows
        batch_size = min(batch_size, n or batch_size)
        engine = self._engine_for(batch_size if n else 1, True)   # (a stream: per batch)
        callbacks = self._callbacks(callbacks, early_stopping, patience, min_delta,
                                    verbose, score is not None)
        # The core shuffles the rows of each chunk, seeded from the network's
        # generator: one draw per fit, one seed per epoch.
        base = int(self._rng.integers(2**62)) if shuffle else -1
        # An epoch goes to the core in stretches of whole batches, each about
        # STRETCH_FLOPS of work, so that Ctrl-C lands between two of them.
        step_flops = self._engine_flops_per_row() * batch_size
        stretch = batch_size * max(1, int(STRETCH_FLOPS // max(step_flops, 1.0)))

        def run_epoch(epoch, lr):
            return self._epoch(engine, source.chunks(base + epoch if shuffle else -1),
                               batch_size, lr, stretch)
        return self._run_epochs(epochs, n, callbacks, run_epoch, score)

    def _run_epochs(self, epochs, rows, callbacks, run_epoch, score) -> History:
        """The loop over the epochs of a fit around run_epoch(epoch, lr) →
        (mean loss, accuracy): callbacks, history, validation figures from
        score(), and the return to the last finite state when an epoch
        diverges or meets bad data."""
        history = History()
        self.stop_training = False
        logs = {"epochs": epochs, "rows": rows}
        for callback in callbacks:
            callback.on_train_begin(self, logs)
        try:
            for epoch in range(1, epochs + 1):
                for callback in callbacks:
                    callback.on_epoch_begin(self, epoch, logs)
                lr = self._optimizer.lr
                # (a callback may have changed the optimizer, or how much state it keeps)
                kept = [self.params] + self._opt_state[:self._optimizer.n_state]
                backup = [a.copy() for a in kept]
                steps = self.optimizer_steps
                try:
                    loss, right = run_epoch(epoch, lr)
                except Exception:        # bad data, a batch that failed to load: undone
                    self._restore(backup, kept, steps)   # (Ctrl-C keeps the steps taken)
                    raise
                logs = {"loss": loss}
                if self.is_classifier:
                    logs["accuracy"] = right
                if not (math.isfinite(loss) and _ops.all_finite(self.params)):
                    problem = (f"the loss became {loss} (the weights overflowed). The "
                               f"learning rate (lr={lr}) is probably too large: try a "
                               "smaller one.")
                elif not all(_ops.all_finite(state) for state in kept[1:]):
                    dtype = self.dtype.name
                    problem = (f"the optimizer's state ({type(self._optimizer).__name__}'s "
                               "running sums of the gradients or of their squares) overflowed "
                               f"{dtype}, and the weights stopped moving. The gradients are "
                               f"too large for {dtype}: scale the inputs (and targets) down, "
                               "clip the gradients (clip_norm=…)"
                               + (" or train in float64." if dtype == "float32" else "."))
                else:
                    problem = None
                if problem:
                    self._restore(backup, kept, steps)
                    history.append(epoch, dict(logs, lr=lr))
                    warnings.warn(f"training stopped at epoch {epoch}: {problem} The network "
                                  "keeps its weights from before that epoch.",
                                  RuntimeWarning, stacklevel=3)
                    break
                if score is not None:
                    logs.update(score())
                logs["lr"] = lr
                history.append(epoch, logs)
                for callback in callbacks:
                    callback.on_epoch_end(self, epoch, logs)
                if self.stop_training:
                    break
        finally:                         # also when an error or Ctrl-C ends training
            for callback in callbacks:
                callback.on_train_end(self, logs)
        return history

    def _restore(self, backup, kept, steps) -> None:
        for saved, current in zip(backup, kept):
            current[...] = saved
        self._apply_optimizer(steps)

    def partial_fit(self, X: ArrayLike | Iterable, y: ArrayLike | None = None,
                    batch_size: int = 32, shuffle: bool = True,
                    callbacks: list | None = None, chunk_size: int | None = None) -> float:
        """One more epoch over (X, y) — a chunk of a stream, new data for a
        trained network, a memory-mapped array or an iterable of batches (see
        fit) — with the current weights, optimizer and its state.  Returns
        the epoch's mean training loss."""
        history = self.fit(X, y, epochs=1, batch_size=batch_size, shuffle=shuffle,
                           callbacks=callbacks, chunk_size=chunk_size)
        return history.history["loss"][0]

    @staticmethod
    def _epoch(engine, chunks, batch_size, lr, stretch):
        """One epoch over the chunks, each in stretches of `stretch` rows:
        (mean loss, accuracy)."""
        rows = 0
        loss = right = 0.0
        for X2, Y, weights, seed, order in chunks:
            n = X2.shape[0]
            engine.reserve(min(batch_size, n))     # (a stream's batches may be small)
            if order is None and seed >= 0:
                order = np.arange(n)
            for first in range(0, n, stretch):
                count = min(stretch, n - first)
                loss += count * engine.train_epoch(X2, Y, order, min(batch_size, n), lr,
                                                   seed if first == 0 else -1, weights,
                                                   first, count)
                right += count * engine.epoch_accuracy
            rows += n
        if rows == 0:
            raise ValueError("X: the iterable of batches gave no rows")
        return loss / rows, right / rows

    def _engine_flops_per_row(self) -> float:
        return 2.0 * (3 * self._macs - self.layers[0].n_in * self.layers[0].n_out)

    def _set_optimizer_for_fit(self, optimizer, lr) -> None:
        """fit's optimizer= and lr= (see fit), applied to the engine."""
        if lr is not None:
            lr = check_positive_float(lr, "lr")
        if optimizer is not None:
            if lr is not None and isinstance(optimizer, _optimizers.Optimizer):
                raise ValueError("lr: give the learning rate to the optimizer "
                                 f"({type(optimizer).__name__}(lr=…)), not beside it")
            self.optimizer = _optimizers.get(optimizer, lr)
        elif lr is not None and type(self._optimizer) is _optimizers.SGD:
            self._optimizer.lr = lr
        elif lr is not None:
            self.optimizer = _optimizers.SGD(lr)
        self._apply_optimizer()

    def _source(self, X, y, epochs, batch_size, chunk_size, sample_weight, class_weight,
                validation_data, validation_split):
        """fit's data as a source of chunks (see backprop._sources), and a
        function giving the validation figures after each epoch (or None)."""
        if y is None and isinstance(X, np.ndarray):
            raise TypeError("y is missing: fit(X, y) takes arrays, fit(batches) an "
                            "iterable of (X, y) batches")
        if y is not None and chunk_size is None and not isinstance(X, np.memmap):
            return self._in_memory(X, y, sample_weight, class_weight, validation_data,
                                   validation_split)
        if validation_split:
            raise ValueError("validation_split holds out rows of data in memory; with "
                             "chunked or streamed data give validation_data")
        score = self._scorer(validation_data, checked=False)
        if y is None:
            if sample_weight is not None:
                raise ValueError("sample_weight: with an iterable of batches, give each "
                                 "batch's weights as a triple (X, y, sample_weight)")
            table = self._class_table(class_weight, None)
            return _sources.Batches(self, X, table, epochs), score
        return self._chunked(X, y, batch_size, chunk_size, sample_weight, class_weight), score

    def _in_memory(self, X, y, sample_weight, class_weight, validation_data,
                   validation_split):
        """The source and scorer of fit for data converted in memory at once."""
        X2, Y = self._data(X, y)
        weights = None if sample_weight is None else self._check_sample_weight(
            sample_weight, Y.shape[0])
        table = self._class_table(class_weight, lambda: self._label_counts(Y))
        weights = self._row_weights(weights, table, Y)
        if self._scored_in_chunks(validation_data):
            if validation_split:
                raise ValueError("validation_data and validation_split: give one, not both")
            return _sources.InMemory(X2, Y, weights), self._scorer(validation_data, False)
        X2, Y, weights, validation = self._validation(X2, Y, weights, validation_data,
                                                      validation_split)
        return _sources.InMemory(X2, Y, weights), self._scorer(validation)

    def _rows_to_read(self, X, y):
        """X and y to be read some rows at a time (a chunk, a rank's share),
        their shapes checked without reading a row; lists become arrays."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        if len(X.shape) != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must be a 2-D array with {self.n_inputs} columns, "
                             f"got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"X is empty (shape {X.shape})")
        if not hasattr(y, "shape"):
            y = np.asarray(y)
        if len(y.shape) not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have one row per sample ({X.shape[0]}), "
                             f"got shape {y.shape}")
        return X, y

    def _chunked(self, X, y, batch_size, chunk_size, sample_weight, class_weight):
        """The source of fit for arrays read a chunk at a time (memory maps)."""
        X, y = self._rows_to_read(X, y)
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        rows = _sources.chunk_rows(chunk_size, batch_size, self.n_inputs, self.dtype.itemsize)
        table = self._class_table(class_weight, lambda: sum(
            self._label_counts(self._targets(y[i:i + rows], len(y[i:i + rows]), False))
            for i in range(0, len(y), rows)))
        return _sources.ChunkedArrays(self, X, y, sample_weight, table, rows)

    def _check_sample_weight(self, sample_weight, n, name="sample_weight"):
        weights = as_float_array(sample_weight, name, self.dtype, ndims=(1,))
        if weights.shape[0] != n:
            raise ValueError(f"{name} must have one entry per row ({n}), "
                             f"got {weights.shape[0]}")
        if (weights < 0).any():
            raise ValueError(f"{name} must not be negative")
        return weights

    def _labels(self, Y):
        """The class of each row of classification targets Y."""
        return Y.argmax(1) if self.n_outputs > 1 else (Y[:, 0] >= 0.5).astype(np.int64)

    def _label_counts(self, Y):
        return np.bincount(self._labels(Y), minlength=max(self.n_outputs, 2))

    def _class_table(self, class_weight, label_counts):
        """class_weight as one weight per class (None without it);
        label_counts() gives the rows per class, which 'balanced' needs (None:
        not available)."""
        if class_weight is None:
            return None
        if not self.is_classifier or (self.loss.code == _losses.BINARY_CROSS_ENTROPY
                                      and self.n_outputs > 1):
            raise ValueError("class_weight applies to cross_entropy and to one sigmoid output")
        n_classes = max(self.n_outputs, 2)
        if isinstance(class_weight, str) and class_weight == "balanced":
            if label_counts is None:
                raise ValueError("class_weight='balanced' needs every label before training; "
                                 "with an iterable of batches give a dict {label: weight}")
            counts = label_counts()
            return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
        if not isinstance(class_weight, dict):
            raise TypeError("class_weight must be a dict {label: weight} or 'balanced'")
        table = np.ones(n_classes)
        for label, w in class_weight.items():
            if not (isinstance(label, (int, np.integer)) and 0 <= label < n_classes):
                raise ValueError(f"class_weight: no class {label!r} "
                                 f"(labels are 0 … {n_classes - 1})")
            table[label] = check_positive_float(w, f"class_weight[{label}]", allow_zero=True)
        return table

    def _row_weights(self, weights, table, Y):
        """The sample weights times the class weights of the rows of Y."""
        if table is None:
            return weights
        per_row = table[self._labels(Y)].astype(self.dtype)
        return per_row if weights is None else weights * per_row

    def _validation(self, X2, Y, weights, validation_data, validation_split):
        """(X_train, Y_train, weights, (X_val, Y_val) or None) from fit's
        arguments."""
        if validation_data is not None and validation_split:
            raise ValueError("validation_data and validation_split: give one, not both")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            Xv, single = self._inputs(validation_data[0], "validation_data[0]")
            return X2, Y, weights, (Xv, self._targets(validation_data[1], Xv.shape[0], single))
        if not validation_split:
            return X2, Y, weights, None
        fraction = check_positive_float(validation_split, "validation_split")
        n_val = int(round(fraction * X2.shape[0]))
        if not fraction < 1 or n_val < 1 or n_val >= X2.shape[0]:
            raise ValueError(f"validation_split must leave rows on both sides, got "
                             f"{validation_split} of {X2.shape[0]} rows")
        rows = self._rng.permutation(X2.shape[0])
        val, train = np.sort(rows[:n_val]), np.sort(rows[n_val:])
        return (X2[train], Y[train], None if weights is None else weights[train],
                (X2[val], Y[val]))

    def _scorer(self, validation, checked: bool = True):
        """The function that gives fit its validation figures, from a checked
        (X_val, Y_val) (or, unless `checked`, fit's validation_data); None
        without validation.  A memory-mapped X_val is scored a chunk at a
        time (see evaluate)."""
        if validation is None:
            return None
        if not checked and self._scored_in_chunks(validation):
            Xv, yv = validation[0], np.asarray(validation[1])
            if Xv.shape[1] != self.n_inputs or yv.ndim == 0 or len(yv) != len(Xv):
                raise ValueError(f"validation_data must be (X_val, y_val) with {self.n_inputs} "
                                 f"columns and one label per row, got shapes {Xv.shape} "
                                 f"and {yv.shape}")
            for rows in self._chunks_of(Xv):      # checked before training, as in memory
                where = f"rows {rows.start}:{min(rows.stop, len(Xv))}"
                X2, single = self._inputs(np.asarray(Xv[rows]), f"validation_data[0] {where}")
                self._targets(yv[rows], X2.shape[0], single, f"validation_data[1] {where}")
            return lambda: {f"val_{k}": v for k, v in self.evaluate(Xv, yv).items()}
        if not checked:
            validation = self._validation(None, None, None, validation, 0.0)[3]
        return lambda: {f"val_{k}": v for k, v in self._evaluate(*validation).items()}

    def _scored_in_chunks(self, validation_data) -> bool:
        return (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2
                and self._memory_mapped(validation_data[0]))

    @staticmethod
    def _memory_mapped(X) -> bool:
        """A non-empty 2-D memory map: read in chunks by predict, evaluate and fit."""
        return isinstance(X, np.memmap) and X.ndim == 2 and X.shape[0] > 0

    @staticmethod
    def _callbacks(callbacks, early_stopping, patience, min_delta, verbose, validation):
        from . import callbacks as _callbacks
        callbacks = list(callbacks or [])
        for i, callback in enumerate(callbacks):
            if not isinstance(callback, _callbacks.Callback):
                raise TypeError(f"callbacks[{i}] must be a backprop.callbacks.Callback, "
                                f"got {type(callback).__name__}")
        if early_stopping:
            callbacks.append(_callbacks.EarlyStopping(
                "val_loss" if validation else "loss", patience, min_delta))
        if verbose:
            callbacks.append(_callbacks.ProgressBar())
        return callbacks

    # -- inference -------------------------------------------------------------
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """The output layer's activations: class probabilities for
        classifiers, values for regressors.  (rows, n_outputs), or (n_outputs,)
        for one sample."""
        out = self._engine.predict_row(X, PredictMode.OUTPUTS)  # one ready-made row
        if out is not None:
            return out
        if type(X) is np.ndarray and X.ndim == 2 and X.shape[0] == 1:
            out = self._engine.predict_row(X[0], PredictMode.OUTPUTS)
            if out is not None:
                return out[None]
        with self._guard:
            if self._memory_mapped(X):                # read a chunk at a time
                out = np.empty((X.shape[0], self.n_outputs), self.dtype)
                for rows in self._chunks_of(X):
                    out[rows] = self.predict_proba(np.asarray(X[rows]))
                return out
            X2, single = self._inputs(X)
            out = np.empty((X2.shape[0], self.n_outputs), self.dtype)
            if self._one_stretch(X2):
                self._engine.forward(X2, out)
            else:
                for rows in self._stretches(X2.shape[0]):
                    self._engine.forward(X2[rows], out[rows])
            self._check_overflow(out, X2)
        return out[0] if single else out

    def _one_stretch(self, X2) -> bool:
        """Whether inference on X2 is at most one stretch of work."""
        return 2.0 * self._macs * X2.shape[0] <= STRETCH_FLOPS

    def _stretches(self, n: int) -> list[slice]:
        """Slices of n rows for inference, each about STRETCH_FLOPS of work
        in whole chunks of the engine's: Python sees Ctrl-C between two."""
        chunk = self._engine.inference_rows(n)
        step = chunk * max(1, int(STRETCH_FLOPS // (2.0 * self._macs * chunk)))
        return [slice(i, i + step) for i in range(0, n, step)]

    def _chunks_of(self, X):
        """Slices of the rows of X, each about CHUNK_BYTES in our dtype."""
        step = _sources.chunk_rows(None, 1, self.n_inputs, self.dtype.itemsize)
        return [slice(i, i + step) for i in range(0, X.shape[0], step)]

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Class labels for classifiers (argmax of softmax; sigmoid ≥ 0.5),
        values for regressors (shape (rows,) when there is one output)."""
        if self._row_mode is not None:               # one ready-made row
            label = self._engine.predict_row(X, self._row_mode)
            if label is not None:
                return label
            if type(X) is np.ndarray and X.shape[:1] == (1,) and X.ndim == 2:
                label = self._engine.predict_row(X[0], self._row_mode)
                if label is not None:                # a batch of one: shape (1, …)
                    return np.asarray(label)[None]
        out = self.predict_proba(X)
        if self.loss.code == _losses.CROSS_ENTROPY:
            return np.argmax(out, axis=-1)
        if self.loss.code == _losses.BINARY_CROSS_ENTROPY:
            labels = (out >= 0.5).astype(np.int64)
            return labels[..., 0] if self.n_outputs == 1 else labels
        return out[..., 0] if self.n_outputs == 1 else out

    @_exclusive
    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """{'loss': mean loss} on (X, y), and 'accuracy' for classifiers.
        A memory-mapped X is read a chunk at a time."""
        if not self._memory_mapped(X):
            return self._evaluate(*self._data(X, y))
        if np.ndim(y) == 0 or len(y) != len(X):
            raise ValueError(f"y must have one row per sample ({len(X)}), got shape "
                             f"{np.shape(y)}")
        totals: dict[str, float] = {}
        for rows in self._chunks_of(X):
            count = len(X[rows])
            for key, value in self._evaluate(*self._data(np.asarray(X[rows]), y[rows])).items():
                totals[key] = totals.get(key, 0.0) + value * count
        return {key: value / len(X) for key, value in totals.items()}

    def _check_overflow(self, out, X2) -> None:
        """Finite inputs can still overflow the network's float type."""
        if not _ops.all_finite(out.reshape(-1)):
            raise ValueError(f"X: the network's outputs overflow {self.dtype.name} for these "
                             f"inputs (up to {np.abs(X2).max():.3g} in size); scale the "
                             "inputs down, or use dtype='float64'")

    def _evaluate(self, X2, Y) -> dict:
        out = np.empty_like(Y)
        if self._one_stretch(X2):
            loss = self._engine.evaluate(X2, Y, out)
        else:
            loss = 0.0
            for rows in self._stretches(X2.shape[0]):
                part = out[rows]
                loss += self._engine.evaluate(X2[rows], Y[rows], part) * part.shape[0]
            loss /= X2.shape[0]
        result = {"loss": loss}
        self._check_overflow(out, X2)
        if self.loss.code == _losses.CROSS_ENTROPY:
            result["accuracy"] = float(np.mean(out.argmax(1) == Y.argmax(1)))
        elif self.loss.code == _losses.BINARY_CROSS_ENTROPY:
            result["accuracy"] = float(np.mean((out >= 0.5) == (Y >= 0.5)))
        return result

    # -- copies and files --------------------------------------------------------
    @_exclusive
    def __reduce__(self):
        # Pickling (joblib, multiprocessing, copy.deepcopy) goes through the
        # same arrays and JSON description as model files.
        from .io import from_state, state_of
        return from_state, (state_of(self),)

    @_exclusive
    def copy(self, dtype: str | np.dtype | None = None) -> "Sequential":
        """An independent copy (weights included), optionally in another dtype."""
        net = Sequential(*[layer.copy(dtype) for layer in self.layers],
                         loss=self.loss, dtype=dtype or self.dtype,
                         n_threads=self.n_threads)
        net._seed = self._seed
        return net

    @_exclusive
    def save(self, path: str | os.PathLike) -> str:
        """Write the network to an .npz file (".npz" is added when missing):
        the architecture, the weights, the optimizer and its state, and the
        position of the random generator, so that `backprop.load` gives a
        network that predicts the same and resumes training exactly."""
        from .io import save
        return save(self, path)


def load(path: str | os.PathLike) -> Sequential:
    """Read a network written by `Sequential.save` (see backprop.io)."""
    from .io import load as _load
    return _load(path)
