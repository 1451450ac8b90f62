"""Sequential networks: a stack of Dense layers (with dropout between them,
if asked for) and a loss, trained by backpropagation and mini-batch gradient
descent.

All parameters of a network live in one flat buffer `params` (each layer's W
and b are views into it, layer after layer), and all gradients in `grads`,
laid out the same way.  `fit` hands whole epochs to the compiled engine:
shuffled rows are gathered, and forward, loss, backward and the update
w ← w − η·∂L/∂w run for every batch without returning to Python.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _format, _ops, _sources, _threads
from . import activations as _activations
from . import explain as _explain
from . import layers as _layers
from . import losses as _losses
from . import onnx as _onnx
from . import optimizers as _optimizers
from . import training as _training
from ._codes import PredictMode
from ._engine import Engine, Guard, set_blas_thread_functions
from ._validation import as_float_array, check_dtype, check_int, check_positive_float, is_sparse
from .layers import Dense, Dropout
from .layout import Layout
from .training import History, Trainer, TrainingState
from .training import holding as _exclusive

__all__ = ["Sequential", "History"]

set_blas_thread_functions(*_threads.set_function_addresses())


def _check_stack(stack, loss) -> tuple[tuple[Dense, ...], tuple[Dropout | None, ...]]:
    """Raise unless `stack` holds Dense layers that connect, with at most one
    Dropout between two of them, and the output layer suits `loss`.  Returns
    the Dense layers and, for each, the Dropout after it (or None)."""
    if not stack:
        raise ValueError("layers: a Sequential needs at least one Dense layer")
    for i, layer in enumerate(stack):
        if not isinstance(layer, (Dense, Dropout)):
            raise TypeError(
                f"layers[{i}] must be a Dense or a Dropout layer, got {type(layer).__name__}"
            )
    seen: set[int] = set()
    for layer in stack:
        if id(layer) in seen:
            raise ValueError(f"layers: the same {type(layer).__name__} object appears twice")
        seen.add(id(layer))
    for i, layer in enumerate(stack):
        if isinstance(layer, Dropout):
            why = (
                "dropout of the inputs is not supported"
                if i == 0
                else "two in a row: give one, of rate 1 − (1 − p)(1 − q)"
                if isinstance(stack[i - 1], Dropout)
                else "not after the output layer"
                if i == len(stack) - 1
                else None
            )
            if why:
                raise ValueError(
                    f"layers[{i}]: a Dropout goes between two Dense layers, where it "
                    f"drops units of the first one's output ({why})"
                )
    where = [i for i, layer in enumerate(stack) if isinstance(layer, Dense)]
    layers = [stack[i] for i in where]
    for k in range(1, len(layers)):
        if layers[k].n_in != layers[k - 1].n_out:
            raise ValueError(
                f"layers[{where[k]}] takes {layers[k].n_in} inputs but "
                f"layers[{where[k - 1]}] gives {layers[k - 1].n_out} outputs"
            )
    for k, layer in enumerate(layers[:-1]):
        if layer.activation.code == _activations.SOFTMAX:
            raise ValueError(f"layers[{where[k]}]: softmax is for the output layer only")
    out = layers[-1]
    if loss.output is not None and out.activation.name != loss.output:
        article = "an" if loss.output[0] in "aeiou" else "a"
        raise ValueError(
            f"loss={loss.name!r} needs {article} {loss.output} output layer, "
            f"got {out.activation.name!r}"
        )
    if loss.code == _losses.CROSS_ENTROPY and out.n_out < 2:
        raise ValueError(
            "loss='cross_entropy' needs at least 2 output units; for two "
            "classes with one unit use sigmoid with binary_cross_entropy"
        )
    drops = [stack[i + 1] if isinstance(stack[i + 1], Dropout) else None for i in where[:-1]]
    return tuple(layers), tuple(drops) + (None,)


class Sequential(Trainer):
    """Layers applied one after another, with a loss.

    Parameters
    ----------
    *layers : Dense, with Dropout between them
        n_out of each Dense layer must equal n_in of the next.  A
        Dropout(rate) between two Dense layers drops that fraction of the
        first one's outputs in training (fit, train_step, loss_and_grad, and
        forward(X, training=True)), with masks from the network's seeded
        stream; predict, evaluate, explain and forward(X) run without it.
    loss : 'mse', 'mae', 'huber', 'binary_cross_entropy', 'cross_entropy' or 'poisson'
        (or a Loss, such as ``losses.Huber(delta=0.5)``)
        cross_entropy needs a softmax output layer, binary_cross_entropy a
        sigmoid one and poisson an exp one (each pair is computed fused and
        stable); mse, mae and huber take any output layer.
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

    `layers` lists the Dense layers alone, so that ``net.layers[i].W`` is the
    i-th weight matrix whatever dropout there is (and the names of
    `layout`, such as 'layers[1].W[3, 0]', follow it); `stack` lists every
    layer as given, Dropout included, as Keras's `model.layers` and
    PyTorch's `nn.Sequential` do.  `dropout` gives the rate after each
    Dense layer.
    """

    def __init__(
        self,
        *layers: Dense | Dropout,
        loss: str | _losses.Loss = "mse",
        dtype: str | np.dtype | None = None,
        seed: int | None = None,
        n_threads: int | None = None,
    ):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self._loss = _losses.get(loss)
        dense, self._drops = _check_stack(layers, self._loss)
        self._dtype = check_dtype(dense[0].dtype if dtype is None else dtype)
        self._layers = tuple(
            layer if layer.dtype == self._dtype else layer.copy(self._dtype) for layer in dense
        )
        self._guard = Guard()
        self._forward_outputs: tuple = ()  # each layer's output in the last forward
        self._forward_drops: tuple = ()  # … and each Dropout's
        self._forward_single = False  # … which was of one sample
        self._seed = None if seed is None else check_int(seed, "seed", minimum=0)
        self._rng = np.random.default_rng(seed)
        self._training = TrainingState()  # where training stands (see training_state)
        if seed is not None:
            for layer in self.layers:
                if layer.seed is None:
                    layer.reset_parameters(self._rng)
        rates = self.dropout
        drop_seed = int(self._rng.integers(2**63)) if any(rates) else 0  # the masks' stream
        self._layout = Layout([self.layers[0].n_in] + [layer.n_out for layer in self.layers])
        self._bind_flat_buffers()
        self._about = _sources.describe(self)  # what its data must look like
        self._macs = sum(layer.n_in * layer.n_out for layer in self.layers)
        self._trainable = all(layer.activation.differentiable for layer in self.layers)
        self._row_mode = self._one_row_mode()
        self._engine = Engine(
            self._layout,
            [layer.activation.code for layer in self.layers],
            [layer.activation.parameter for layer in self.layers],
            self.loss.code,
            self._params,
            self._grads,
            capacity=32,
            guard=self._guard,
            huber_delta=self.loss.delta,
        )
        if any(drop is not None for drop in self._drops):
            self._engine.set_dropout(rates, drop_seed)
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
        if len(self._opt_state) < opt.n_state:  # e.g. momentum set after the fact
            self._opt_state += [
                np.zeros_like(self.params) for _ in range(opt.n_state - len(self._opt_state))
            ]
        if steps is None:
            steps = 0 if self._opt_fresh else self._engine.optimizer_steps
        self._engine.set_optimizer(
            **opt.settings(), state=self._opt_state[: opt.n_state], steps=steps
        )
        self._opt_fresh = False
        _optimizers.attach(opt, self._optimizer_changed)  # (its later changes come here too)

    def _optimizer_changed(self, opt: _optimizers.Optimizer) -> None:
        """A setting of `opt` changed (see optimizers.attach): hand it to the
        engine if opt is still this network's optimizer."""
        if opt is self._optimizer:
            self._apply_optimizer()

    @property
    def optimizer_steps(self) -> int:
        """Updates the current optimizer has made (Adam's bias correction
        counts them).  Assigning sets the count, as when resuming (at most
        2⁶², what a model file may hold)."""
        return self._engine.optimizer_steps

    @optimizer_steps.setter
    def optimizer_steps(self, value: int) -> None:
        self._apply_optimizer(
            steps=check_int(value, "optimizer_steps", minimum=0, maximum=_format.MAX_STEPS)
        )

    @property
    def training_state(self) -> TrainingState:
        """Where training stands: the epochs trained, the shuffle stream's
        seed and the callbacks' state (see backprop.training.TrainingState).
        The next fit goes on from it; fit(..., reset=True) starts over."""
        return self._training

    @property
    def optimizer_state(self) -> tuple[np.ndarray, ...]:
        """The arrays the optimizer keeps, laid out like params (none for
        plain SGD; SGD with momentum its velocity; Adam its two moments;
        RMSProp and AdaGrad their sums of squares).  They are the live
        state: writing into them (to restore or share it) changes the next
        update."""
        return tuple(self._opt_state[: self._optimizer.n_state])

    def _bind_flat_buffers(self) -> None:
        """One flat buffer for all parameters, one for all gradients, laid
        out by self.layout; each layer's W, b, dW and db become views into
        them (backprop.layers.join)."""
        self._params = np.zeros(self._layout.n_params, self.dtype)
        self._grads = np.zeros(self._layout.n_params, self.dtype)
        _layers.join(self.layers, self, self._guard, self._layout, self._params, self._grads)

    # -- what the network is made of: fixed at construction ---------------------
    @property
    def layers(self) -> tuple[Dense, ...]:
        """The Dense layers, input first (with the Dropout layers: `stack`)."""
        return self._layers

    @property
    def stack(self) -> tuple[Dense | Dropout, ...]:
        """Every layer, input first: the Dense layers with the Dropout
        layers between them (`layers` holds the Dense layers alone)."""
        return tuple(
            layer
            for dense, drop in zip(self._layers, self._drops)
            for layer in (dense, drop)
            if layer is not None
        )

    @property
    def dropout(self) -> tuple[float, ...]:
        """The rate of dropout after each Dense layer's activation (0: none;
        the output layer's is 0)."""
        return tuple(0.0 if drop is None else drop.rate for drop in self._drops)

    @property
    def dropout_steps(self) -> int:
        """Training passes that drew dropout masks (each batch of fit, each
        train_step, loss_and_grad and forward(X, training=True)): the next
        draws mask number dropout_steps of the network's stream, seeded
        from its generator.  Files keep it, so that a run resumed from one
        draws the masks of an uninterrupted one.  Assigning sets it:
        setting it back draws a pass's masks again (gradcheck holds them so).
        A network without dropout draws none, and stays at 0."""
        return int(self._engine.dropout_steps)

    @dropout_steps.setter
    def dropout_steps(self, value: int) -> None:
        value = check_int(value, "dropout_steps", minimum=0, maximum=_format.MAX_STEPS)
        self._engine.set_dropout_stream(self._engine.dropout_seed, value)

    @property
    def dropout_seed(self) -> int:
        """The seed of the dropout masks' stream, drawn from the network's
        generator when it is built (so from `seed`); 0 without dropout.
        Files keep it.  Assigning starts another stream."""
        return int(self._engine.dropout_seed)

    @dropout_seed.setter
    def dropout_seed(self, value: int) -> None:
        value = check_int(value, "dropout_seed", minimum=0, maximum=2**64 - 1)
        self._engine.set_dropout_stream(value, self._engine.dropout_steps)

    @property
    def layout(self) -> Layout:
        """Where each layer's W and b lie in `params` (and `grads`, and the
        optimizer's state): see backprop.layout."""
        return self._layout

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
        backward and train_step.  What fit leaves here is no gradient to
        read: it takes each layer's step as soon as that layer's gradient is
        found, and clears it (plain SGD, which steps inside the backward
        pass, leaves only the biases' gradients of the last batch; with
        clipping, its whole gradient stays).  Assigning copies the values in
        (before apply_gradients, say)."""
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
            return None if self.loss.is_classification else PredictMode.OUTPUTS
        return (
            PredictMode.THRESHOLD
            if self.loss.code == _losses.BINARY_CROSS_ENTROPY
            else PredictMode.VALUE
        )

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
                raise TypeError(
                    f"classes[{i}] must be a string or a number, got {type(name).__name__}"
                )
        names = [str(name) for name in names]
        want = (
            2
            if self.n_outputs == 1 and self.loss.code == _losses.BINARY_CROSS_ENTROPY
            else self.n_outputs
        )
        if len(names) != want:
            raise ValueError(
                f"classes must name {want} class{'es' if want > 1 else ''} "
                f"for {self.n_outputs} {self.loss.name} "
                f"output{'s' if self.n_outputs > 1 else ''}, got {len(names)}"
            )
        if len(set(names)) != len(names):
            raise ValueError("classes must be distinct")
        self._classes = names

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(layer) for layer in self.stack)
        return f"Sequential(\n    {inner},\n    loss={self.loss.name!r}, dtype={self.dtype.name!r})"

    def summary(self) -> str:
        """A table of the layers and their parameter counts."""
        rows = [f"{'layer':<8}{'shape':<14}{'activation':<12}{'params':>10}"]
        for i, (layer, drop) in enumerate(zip(self.layers, self._drops)):
            rows.append(
                f"{i:<8}{f'{layer.n_in} → {layer.n_out}':<14}"
                f"{layer.activation.name:<12}{layer.n_params:>10,}"
            )
            if drop is not None:
                rows.append(f"{'':<8}{f'dropout {drop.rate:g}':<26}{0:>10}")
        rows.append(f"loss {self.loss.name}, {self.params.size:,} parameters, {self.dtype.name}")
        return "\n".join(rows)

    # -- input checks -----------------------------------------------------------
    # -- the per-layer path, for learners and custom loops --------------------
    @_exclusive
    def forward(self, X: ArrayLike, training: bool = False) -> np.ndarray:
        """The outputs for one sample (n_in,) or a batch (rows, n_in), layer
        by layer through Dense.forward (which keeps what backward needs).
        With `training`, dropout too (Dropout.apply), by the masks the next
        training pass of the compiled core would draw: forward(X,
        training=True), backward(y) and apply_gradients() are a train_step
        on the batch, mask for mask."""
        if not isinstance(training, bool):
            raise TypeError(f"training must be True or False, got {training!r}")
        steps = self.dropout_steps
        a = self.layers[0].forward(X)
        for i, (layer, drop) in enumerate(zip(self.layers, self._drops)):
            if i:
                a = layer.forward(a)
            if drop is None:
                continue
            if training and drop.rate > 0:
                mask = np.empty((int(np.prod(a.shape[:-1])), a.shape[-1]), np.uint8)
                _ops.dropout_mask(mask, self._engine.dropout_seed, steps, i, drop.rate)
                a = drop.apply(a, mask.reshape(a.shape).view(bool))
            else:
                a = drop.forward(a)
        if training and any(self.dropout):
            self.dropout_steps = steps + 1
        self._forward_outputs = tuple([layer.output for layer in self.layers])
        self._forward_drops = tuple(None if d is None else d.output for d in self._drops)
        self._forward_single = np.ndim(a) == 1
        return a

    @_exclusive
    def backward(self, y: ArrayLike) -> np.ndarray:
        """Backpropagate the loss of the last `forward` against targets y,
        layer by layer from the output.  Fills `grads` (and each layer's dW,
        db) and returns it."""
        if not self._forward_outputs:
            raise RuntimeError("call forward(X) before backward(y)")
        if any(
            layer.output is not a for layer, a in zip(self.layers, self._forward_outputs)
        ) or any(
            drop is not None and drop.output is not d
            for drop, d in zip(self._drops, self._forward_drops)
        ):
            raise RuntimeError(
                "a layer ran forward on its own since the network's last "
                "forward: call net.forward(X) again before backward(y)"
            )
        self._require_trainable()
        out = self.layers[-1]
        a = self._forward_outputs[-1]
        y2 = self._about.targets(y, a.shape[0], self._forward_single)
        delta = np.empty_like(a)
        _ops.output_delta(
            self.loss.code,
            out.activation.code,
            out.activation.parameter,
            delta,
            a,
            y2,
            out.preactivation,
            self.loss.delta,
        )
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            dx = layer.backward_delta(delta, need_dx=i > 0)
            if i > 0:
                assert dx is not None
                drop = self._drops[i - 1]
                if drop is not None:  # ∂L/∂a from ∂L/∂d, by the forward's mask (if any)
                    dx = np.reshape(drop.backward(dx[0] if self._forward_single else dx), dx.shape)
                below = self.layers[i - 1]
                delta = np.empty_like(dx)
                _ops.act_backward(
                    delta,
                    dx,
                    self._forward_outputs[i - 1],
                    below.activation.code,
                    below.activation.parameter,
                    below.preactivation,
                )
        return self.grads

    @_exclusive
    def explain(self, x: ArrayLike, y: ArrayLike):
        """The chain rule for one sample, layer by layer from the output:
        z, a, f′(z), δ and ∂C/∂W = a_prev ⊗ δ, each checked against finite
        differences (see backprop.explain), as predict runs the network:
        without dropout.  print() it."""
        self._require_trainable()
        return _explain.explain(self, x, y)

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

    def loss_and_grad(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """The mean loss on (X, y), 1/n Σ w_i ℓ_i with sample weights w
        (n,) ≥ 0 if given; fills `grads` with its gradient.  X may be a
        scipy.sparse batch (densified)."""
        if sample_weight is None and self._trainable:
            value = self._engine.step_ready(*self._cast(X, y), 0.0, False)
            if value is not None:
                return value
        self._require_trainable()
        X2, Y = self._about.data(X, y)
        weights = (
            None
            if sample_weight is None
            else self._about.sample_weights(sample_weight, X2.shape[0])
        )
        return self._engine_for(X2.shape[0], True).loss_and_grad(X2, Y, weights)

    def train_step(self, X: ArrayLike, y: ArrayLike, lr: float | None = None) -> float:
        """One compiled training step on the batch (X, y): forward, loss,
        backward, and the optimizer's update (at `lr` if given, else the
        optimizer's own).  Returns the batch's mean loss.  X may be a
        scipy.sparse batch (densified)."""
        if lr is None:
            lr = self._optimizer.lr
        value = self._engine.step_ready(*self._cast(X, y), lr, True) if self._trainable else None
        if value is not None:  # X and y were ready-made: no conversion
            return value
        self._require_trainable()
        lr = check_positive_float(lr, "lr")
        X2, Y = self._about.data(X, y)
        return self._engine_for(X2.shape[0], True).train_step(X2, Y, lr)

    def apply_gradients(self, lr: float | None = None) -> None:
        """One update by the network's optimizer from the current `grads`
        (at `lr` if given): the second half of train_step, for gradients
        from loss_and_grad that were then changed — averaged across
        processes by backprop.distributed, for instance."""
        self._engine.apply_update(
            check_positive_float(self._optimizer.lr if lr is None else lr, "lr")
        )

    # -- inference -------------------------------------------------------------
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """The output layer's activations: class probabilities for
        classifiers, values for regressors.  (rows, n_outputs), or (n_outputs,)
        for one sample.  A memory-mapped X is read a chunk at a time, and a
        scipy.sparse X (checked whole, then densified a chunk at a time)."""
        out = self._engine.predict_row(X, PredictMode.OUTPUTS)  # one ready-made row
        if out is not None:
            return out
        if type(X) is np.ndarray and X.ndim == 2 and X.shape[0] == 1:
            out = self._engine.predict_row(X[0], PredictMode.OUTPUTS)
            if out is not None:
                return out[None]
        with self._guard:
            rows_of: Any = self._about.sparse(X) if is_sparse(X) else X
            if self._in_chunks(rows_of):  # read (or densified) a chunk at a time
                out = np.empty((rows_of.shape[0], self.n_outputs), self.dtype)
                for rows in self._chunks_of(rows_of):
                    out[rows] = self.predict_proba(_sources.read_rows(rows_of, rows))
                return out
            X2, single = self._about.inputs(X)
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
        return 2.0 * self._macs * X2.shape[0] <= _training.STRETCH_FLOPS

    def _stretches(self, n: int) -> list[slice]:
        """Slices of n rows for inference, each about STRETCH_FLOPS of work
        in whole chunks of the engine's: Python sees Ctrl-C between two."""
        chunk = self._engine.inference_rows(n)
        step = chunk * max(1, int(_training.STRETCH_FLOPS // (2.0 * self._macs * chunk)))
        return [slice(i, i + step) for i in range(0, n, step)]

    def _in_chunks(self, X) -> bool:
        """Whether inference reads X a chunk at a time: a memory map, read
        from its file, or SparseRows, densified."""
        return self._memory_mapped(X) or isinstance(X, _sources.SparseRows)

    def _chunks_of(self, X):
        """Slices of the rows of X, each about CHUNK_BYTES in our dtype."""
        step = _sources.chunk_rows(None, 1, self.n_inputs, self.dtype.itemsize)
        return [slice(i, i + step) for i in range(0, X.shape[0], step)]

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Class labels for classifiers (argmax of softmax; sigmoid ≥ 0.5),
        values for regressors (shape (rows,) when there is one output)."""
        if self._row_mode is not None:  # one ready-made row
            label = self._engine.predict_row(X, self._row_mode)
            if label is not None:
                return label
            if type(X) is np.ndarray and X.shape[:1] == (1,) and X.ndim == 2:
                label = self._engine.predict_row(X[0], self._row_mode)
                if label is not None:  # a batch of one: shape (1, …)
                    return np.asarray(label)[None]
        out = self.predict_proba(X)
        if self.is_classifier:
            return self._about.labels(out)
        return out[..., 0] if self.n_outputs == 1 else out

    @_exclusive
    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """{'loss': mean loss} on (X, y), and 'accuracy' for classifiers.
        A memory-mapped X is read a chunk at a time, and a scipy.sparse X
        densified a chunk at a time."""
        if not self._memory_mapped(X):
            return self._evaluate(*self._about.data(X, y, sparse=True))
        Xm, ym = self._about.rows_to_read(X, y)
        return self._evaluate_chunks(
            Xm, lambda rows: self._about.data(np.asarray(Xm[rows]), ym[rows])
        )

    def _evaluate_chunks(self, X, read) -> dict:
        """evaluate's figures over the rows of X a chunk at a time, where
        read(rows) gives a chunk's checked (X2, Y)."""
        totals: dict[str, float] = {}
        for rows in self._chunks_of(X):
            X2, Y = read(rows)
            for key, value in self._evaluate(X2, Y).items():
                totals[key] = totals.get(key, 0.0) + value * X2.shape[0]
        return {key: value / X.shape[0] for key, value in totals.items()}

    def _check_overflow(self, out, X2) -> None:
        """Finite inputs can still overflow the network's float type."""
        if not _ops.all_finite(out.reshape(-1)):
            raise ValueError(
                f"X: the network's outputs overflow {self.dtype.name} for these "
                f"inputs (up to {np.abs(X2).max():.3g} in size); scale the inputs down"
                + (", or use dtype='float64'" if self.dtype == np.float32 else "")
            )

    def _evaluate(self, X2, Y) -> dict:
        if isinstance(X2, _sources.SparseRows):  # densified a chunk at a time
            return self._evaluate_chunks(X2, lambda rows: (X2[rows].dense(), Y[rows]))
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
        if self.is_classifier:
            about = self._about
            result["accuracy"] = float(np.mean(about.labels(out) == about.labels(Y)))
        return result

    # -- copies and files --------------------------------------------------------
    @_exclusive
    def __reduce__(self):
        # Pickling (joblib, multiprocessing, copy.deepcopy) goes through the
        # same arrays and JSON description as model files.
        return from_state, (self._snapshot(),)

    def _snapshot(self, run: dict | None = None) -> dict:
        """The model file's arrays of this network (copies), for a caller
        that holds its guard; `run`: a checkpoint's (see training.fit)."""
        opt = self.optimizer
        model = _format.Model(
            sizes=[self.n_inputs] + [layer.n_out for layer in self.layers],
            activations=[layer.activation for layer in self.layers],
            loss=self.loss,
            dtype=self.dtype.name,
            seed=self.seed,
            n_threads=self.n_threads,
            classes=self.classes,
            optimizer=opt,
            steps=int(self.optimizer_steps),
            rng=self._rng.bit_generator.state,
            training=_format.Training(
                self._training.epoch, self._training.seed, self._training.callbacks, run
            ),
            dropout=None
            if all(drop is None for drop in self._drops)
            else _format.DropoutState(
                [None if drop is None else drop.rate for drop in self._drops],
                self.dropout_seed,
                self.dropout_steps,
            ),
        )
        return _format.arrays_of(model, self.params, self._opt_state[: opt.n_state])

    @classmethod
    def _from_record(cls, model: _format.Model, arrays: dict) -> Sequential:
        """The network `model` describes, with the weights and state of
        `arrays` (checked against it); a file's fault raises its ValueError."""
        sizes, dtype = model.sizes, model.dtype
        rates = [None] * len(model.activations) if model.dropout is None else model.dropout.rates
        stack: list[Dense | Dropout] = []
        for a, b, act, rate in zip(sizes, sizes[1:], model.activations, rates):
            stack.append(Dense(a, b, act, init="zeros", dtype=dtype))
            if rate is not None:
                stack.append(Dropout(rate))
        with _format.field("meta"):
            net = cls(*stack, loss=model.loss, dtype=dtype, seed=model.seed)
        if model.dropout is not None:
            net.dropout_seed, net.dropout_steps = model.dropout.seed, model.dropout.steps
        with _format.field("meta.n_threads"):
            net.n_threads = model.n_threads
        net.params[...] = arrays["params"]
        _format.check_params(net.params)
        opt = net.optimizer = model.optimizer
        for i, mine in enumerate(net._opt_state[: opt.n_state]):
            mine[...] = arrays[_format.state_name(i)]
            _format.check_state(opt, i, mine)
        net._apply_optimizer(steps=model.steps)
        with _format.field("meta.rng"):
            net._rng.bit_generator.state = model.rng
        with _format.field("meta.classes"):
            net.classes = model.classes
        callbacks: dict[str, dict] = {}
        for key, state in model.training.callbacks.items():
            callbacks[key] = {}
            for name, value in state.items():
                if isinstance(value, _format.ArrayOf):
                    where = f"{value.name} (meta.training.callbacks.{key}.{name})"
                    value = np.array(arrays[value.name], dtype=net.dtype)
                    _format.check_training(where, value)
                callbacks[key][name] = value
        net._training = TrainingState(model.training.epoch, model.training.seed, callbacks)
        return net

    @_exclusive
    def copy(self, dtype: str | np.dtype | None = None, *, dropout: bool = True) -> Sequential:
        """An independent copy (weights included), optionally in another
        dtype; with its dropout, which goes on to draw the masks this one
        would, unless `dropout` is False: then the copy is the network
        without its Dropout layers (as predict runs it)."""
        if not isinstance(dropout, bool):
            raise TypeError(f"dropout must be True or False, got {dropout!r}")
        net = Sequential(
            *[
                layer.copy(dtype) if isinstance(layer, Dense) else layer.copy()
                for layer in (self.stack if dropout else self.layers)
            ],
            loss=self.loss,
            dtype=dtype or self.dtype,
            n_threads=self.n_threads,
        )
        net._seed = self._seed
        if dropout:
            net.dropout_seed, net.dropout_steps = self.dropout_seed, self.dropout_steps
        return net

    @_exclusive
    def save(self, path: str | os.PathLike) -> str:
        """Write the network to an .npz file (".npz" is added when missing):
        the architecture, the weights, the optimizer and its state, and the
        position of the random generator, so that `backprop.load` gives a
        network that predicts the same and resumes training exactly."""
        return _format.write(path, self._snapshot())

    def to_onnx(self, path: str | os.PathLike | None = None, opset: int | None = None, **options):
        """The network as an ONNX model (an onnx ModelProto), written to
        `path` when given; options: labels, input_name, output_name,
        label_name.  See backprop.onnx.export (needs the onnx package)."""
        return _onnx.export(self, path, opset, **options)


def state_of(net: Sequential) -> dict:
    """Everything about `net` as arrays: 'meta' (JSON text), 'params' and
    'optimizer_state_<i>' (copies).  What `save` writes and pickling uses:
    one snapshot, taken while no other thread can change the network."""
    with net.exclusive():
        return net._snapshot()


@_format.refusing
def from_state(arrays: dict) -> Sequential:
    """The network that `state_of` described."""
    return Sequential._from_record(_format.check(arrays), arrays)


@_format.refusing
def load(path: str | os.PathLike) -> Sequential:
    """Read a network written by `Sequential.save` (or `backprop.io.save`)
    from a path or a binary file: it predicts as the saved one did and
    resumes training where that stopped.  Any other file raises a ValueError
    saying why (see backprop.io)."""
    return Sequential._from_record(*_format.read(path))
