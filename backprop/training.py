"""Training: fit and partial_fit, the epoch loop and its stretches, the
return to the last finite state when an epoch diverges or fails, callbacks,
and the plumbing that turns fit's arguments into a data source.

`Trainer` is the part of a `Sequential` that trains it, kept apart from the
model the way Keras keeps its trainer apart from its layers: the model holds
the layers, the flat parameters and gradients, the optimizer and its state,
the engine and inference; the trainer drives them.  An epoch goes to the
compiled engine in stretches of whole batches (see STRETCH_FLOPS), so Python
sees Ctrl-C between two of them.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

import numpy as np
from numpy.typing import ArrayLike

from . import _format, _ops, _sources
from . import callbacks as _callbacks
from . import optimizers as _optimizers
from ._engine import Engine
from ._validation import check_int, check_positive_float, is_sparse

__all__ = ["Trainer", "History", "TrainingState", "EpochRunner", "FitPlan", "STRETCH_FLOPS"]

# fit hands each epoch to the core in stretches of about this many
# floating-point operations (tens of milliseconds): Python sees Ctrl-C between
# two stretches, after a whole batch, at a cost of a few µs per stretch.
STRETCH_FLOPS = 2e9


def holding(method):
    """Run `method` holding the network's guard (see Sequential.exclusive)."""

    @functools.wraps(method)
    def held(self, *args, **kwargs):
        with self._guard:
            return method(self, *args, **kwargs)

    return held


class History:
    """What `fit` returns: `history` maps each figure ('loss', 'accuracy',
    'val_loss', 'val_accuracy', 'lr') to its value in every epoch; `epoch`
    lists the epoch numbers."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {"loss": []}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = self.history["loss"][-1] if self.epoch else None
        return f"History(epochs={len(self.epoch)}, loss={last})"


class TrainingState:
    """Where a network's training stands.  The network keeps it, and so do
    its files, so that training split across calls, or saved, loaded and
    resumed, is the same as one uninterrupted fit:

    epoch      the epochs trained so far; the next fit's first is epoch + 1,
               and its History numbers its epochs from there.
    seed       the seed of the shuffle stream, drawn from the network's
               generator by its first fit (None before): epoch e visits the
               rows in the order of seed + e, and validation_split holds out
               the rows that seed chooses.
    callbacks  the state of every callback that keeps one (a learning-rate
               schedule's initial rate, early stopping's counters and best
               weights …), by key (see Callback.get_state): a callback of
               the same class at the same place in a later fit's callbacks
               takes it up.

    fit(..., reset=True) starts a new training run instead."""

    __slots__ = ("epoch", "seed", "callbacks")

    def __init__(
        self, epoch: int = 0, seed: int | None = None, callbacks: dict[str, dict] | None = None
    ):
        self.epoch, self.seed = epoch, seed
        self.callbacks: dict[str, dict] = {} if callbacks is None else callbacks

    def __repr__(self) -> str:
        return (
            f"TrainingState(epoch={self.epoch}, seed={self.seed}, "
            f"callbacks={sorted(self.callbacks)})"
        )


def callback_keys(callbacks) -> list[str]:
    """Each callback's key in TrainingState.callbacks: its class name, and
    '#k' for the (k+1)-th of that class."""
    seen: dict[str, int] = {}
    keys = []
    for callback in callbacks:
        name = type(callback).__name__
        keys.append(name if name not in seen else f"{name}#{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return keys


class FitPlan(NamedTuple):
    """What fit has set up before its first epoch, for an EpochRunner."""

    source: Any  # the data: a source of backprop._sources (chunks, order, read)
    batch_size: int  # rows of a step (of this process's share, for a runner that splits)
    seed: int  # the fit's shuffle seed: epoch e shuffles by seed + e (< 0: none)
    engine: Engine  # the network's compiled engine, reserved for batch_size rows
    stretch: int  # rows handed to the core at once (Ctrl-C is seen in between)
    progress: Progress | None = None  # saves within an epoch (fit's checkpoint_every)


class Progress:
    """Checkpoints within an epoch (fit's checkpoint_every): after every
    `every` batches the runner calls save(epoch, rows, loss, right) with the
    rows of the epoch done so far and the sums of their loss and accuracy;
    `resume`, (epoch, rows, loss, right) from a checkpoint, says where the
    first epoch run takes up."""

    def __init__(self, every: int, save: Callable, resume: tuple | None = None):
        self.every, self.save, self.resume = every, save, resume


class EpochRunner:
    """How fit runs each epoch.  fit checks its arguments, sets up the
    optimizer, the data source, callbacks and the shuffle seed, and calls
    start once; then, for every epoch, epoch() and the validation figures of
    score().  This one runs every epoch in this process, on the compiled
    engine; backprop.distributed's runner splits every batch over MPI ranks
    in the same order (see backprop._sources.Order)."""

    # Whether this process writes fit's checkpoint file (distributed training:
    # rank 0 alone; every rank resumes from it), and whether the runner can
    # save within an epoch (fit's checkpoint_every: this one can).
    writes_checkpoints = True
    saves_within_epochs = True

    # Whether the runner reads only the rows it trains on (each MPI rank its
    # shares): fit then checks the shapes of X and y and converts no row
    # before the runner asks for it (see backprop._sources.ChunkedArrays).
    reads_rows = False

    def step_rows(self, batch_size: int) -> int:
        """Rows of one step over all workers (chunks hold whole steps)."""
        return batch_size

    def validating(self, here: bool) -> bool:
        """Whether the epochs are scored on validation data (here: this
        process has some)."""
        return here

    def start(self, net: Trainer, plan: FitPlan) -> FitPlan:
        """Called once before the first epoch; returns the plan to train by."""
        return plan

    def epoch(self, net: Trainer, plan: FitPlan, epoch: int, lr: float) -> tuple[float, float]:
        """Epoch number `epoch` at rate lr: (mean loss, accuracy)."""
        seed = plan.seed + epoch if plan.seed >= 0 else -1
        rows = skip = batches = 0
        loss = right = 0.0
        progress = plan.progress
        if progress is not None and progress.resume is not None and progress.resume[0] == epoch:
            _, skip, loss, right = progress.resume  # (the rows before it are trained)
            progress.resume = None
        for X2, Y, weights, order in plan.source.chunks(seed):
            n = X2.shape[0]
            batch = min(plan.batch_size, n)
            plan.engine.reserve(batch)  # (a stream's batches may be small)
            for first in range(max(0, min(skip - rows, n)), n, plan.stretch):
                count = min(plan.stretch, n - first)
                loss += count * train_stretch(
                    plan.engine, X2, Y, order, batch, lr, -1, weights, first, count
                )
                right += count * plan.engine.epoch_accuracy
                batches += -(-count // batch)
                if progress is not None and batches >= progress.every:
                    batches = 0
                    progress.save(epoch, rows + first + count, loss, right)
            rows += n
        if rows == 0:
            raise ValueError("X: the iterable of batches gave no rows")
        return loss / rows, right / rows

    def score(self, here: Callable[[], dict] | None) -> Callable[[], dict] | None:
        """The function giving each epoch's validation figures, from the
        one for this process's validation data (None: none here)."""
        return here


def _peek_seed(rng: np.random.Generator) -> int:
    """The seed a new training run would draw from rng next, rng left as it
    was (fit takes the draw only once its arguments have passed their
    checks)."""
    state = rng.bit_generator.state
    try:
        return int(rng.integers(2**62))
    finally:
        rng.bit_generator.state = state


def train_stretch(engine: Engine, X2, *args) -> float:
    """engine.train_epoch(X2, *args) for X2 an array or SparseRows (whose
    batches the core takes from the CSR arrays, by its gather rule)."""
    if isinstance(X2, _sources.SparseRows):
        return engine.train_epoch_csr(X2.data, X2.indices, X2.indptr, *args, X2.gather)
    return engine.train_epoch(X2, *args)


class Checkpoint:
    """fit's checkpoint= file: where it is, the run it belongs to (its first
    and last epoch, the data's rows, batch_size, shuffle, whether it is
    complete, and the History so far), and whether this process writes it
    (in distributed training, rank 0 alone)."""

    def __init__(self, path: str, run: dict, writes: bool = True):
        self.path, self.run, self.writes = path, run, writes

    def save(self, snapshot, history: History, complete: bool) -> None:
        """Write the network's snapshot(run) (see Sequential.save) with the
        run and its History so far, at the end of an epoch."""
        self.run = dict(self.run, complete=complete, history=dict(history.history), position=None)
        if self.writes:
            _format.write(self.path, snapshot(self.run))

    def save_within(self, snapshot, epoch: int, rows: int, loss: float, right: float) -> None:
        """Write the checkpoint within epoch `epoch`, `rows` of its rows done
        (and the sums of their loss and accuracy)."""
        if not math.isfinite(loss):  # (the epoch diverges: its end undoes it)
            return
        # A regression network counts no accuracy (NaN): the file keeps 0.
        right = float(right) if math.isfinite(right) else 0.0
        position = {"epoch": epoch, "rows": rows, "loss": float(loss), "right": right}
        self.run = dict(self.run, position=position)
        if self.writes:
            _format.write(self.path, snapshot(self.run))


class _Undo:
    """What fit may change on a network before its first epoch (the weights
    a checkpoint brings, the optimizer, its state and steps, the training
    state, the generator), put back by undo() when the fit is refused
    before it starts (see Trainer._undo_point)."""

    def __init__(self, undo: Callable[[], None]):
        self.undo, self.started = undo, False


def _history_of(run: dict) -> History:
    """The History a checkpoint's run holds."""
    history = History()
    n = len(run["history"].get("loss", []))
    history.epoch = list(range(run["first"] + 1, run["first"] + n + 1))
    history.history = {key: list(values) for key, values in run["history"].items()}
    history.history.setdefault("loss", [])
    return history


class Trainer:
    """fit, partial_fit and what they need: a mixin of Sequential, whose
    members it uses."""

    if TYPE_CHECKING:  # what it uses of the model (backprop.network)
        stop_training: bool
        _about: _sources.Description
        _optimizer: _optimizers.Optimizer
        _opt_state: list[np.ndarray]
        _rng: np.random.Generator
        _training: TrainingState
        _macs: int

        @property
        def params(self) -> np.ndarray: ...
        @property
        def layers(self) -> tuple: ...
        def _require_trainable(self) -> None: ...
        @property
        def layout(self) -> Any: ...
        @property
        def loss(self) -> Any: ...
        def _engine_for(self, rows: int, train: bool) -> Engine: ...
        @property
        def dtype(self) -> np.dtype: ...
        @property
        def n_inputs(self) -> int: ...
        def _apply_optimizer(self, steps: int | None = None) -> None: ...
        @property
        def is_classifier(self) -> bool: ...
        @property
        def optimizer_steps(self) -> int: ...
        @property
        def dropout(self) -> tuple[float, ...]: ...

        dropout_steps: int
        dropout_seed: int

        def _snapshot(self, run: dict | None = None) -> dict: ...
        @property
        def training_state(self) -> TrainingState: ...
        @classmethod
        def _from_record(cls, model: Any, arrays: dict) -> Any: ...
        def _chunks_of(self, X) -> list[slice]: ...
        def _evaluate(self, X2, Y) -> dict: ...
        def evaluate(self, X, y) -> dict[str, float]: ...

    @holding
    def fit(
        self,
        X: ArrayLike | Iterable,
        y: ArrayLike | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        lr: float | None = None,
        optimizer: _optimizers.Optimizer | str | None = None,
        shuffle: bool = True,
        validation_data: tuple | None = None,
        validation_split: float = 0.0,
        callbacks: list | None = None,
        early_stopping: bool = False,
        patience: int = 5,
        min_delta: float = 0.0,
        sample_weight: ArrayLike | None = None,
        class_weight: dict | str | None = None,
        chunk_size: int | None = None,
        verbose: int = 0,
        reset: bool = False,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        runner: EpochRunner | None = None,
    ) -> History:
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

        A scipy.sparse X (CSR; CSC, COO and the other formats are converted
        once, with .tocsr()) stays sparse: its values are checked and turned
        into the network's dtype once, and the core takes each batch's rows
        from it, so no more than one batch is ever dense.  Under 10 % nonzeros
        (backprop._sources.SPARSE_DENSITY) the first layer's products take the
        nonzeros alone, and training equals that on X.toarray() up to
        rounding; denser, each batch is gathered dense, and training is that
        on X.toarray() bit for bit.  validation_data may be sparse too.

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
        reset: start a new training run: epochs count from 1 again, the
            shuffle stream and the callbacks' state start afresh, and the
            optimizer's state (momentum, moments, step count) is cleared;
            the weights are kept.  Without it, fit goes on where the last
            fit (or the file the network was loaded from) stopped: see
            TrainingState.
        checkpoint: a file (".npz" added when missing) that keeps the whole
            run safe, as Keras's BackupAndRestore does: the network, its
            optimizer and training state, and the History so far are saved
            atomically after every epoch.  If the file exists when fit
            starts, training resumes from it; once the run is over the file
            is marked complete, and running the same fit again returns its
            History without training twice.  A run killed at any moment and
            started again with the same command ends with the same model,
            bit for bit.  A file of another network, data size or run (other
            epochs, batch_size or shuffle) is refused; delete it to start
            over.
        checkpoint_every: also save the checkpoint every this many batches
            within an epoch (a run then resumes mid-epoch), for epochs long
            enough that losing one matters.
        runner: how each epoch runs, an EpochRunner; by default in this
            process (backprop.distributed passes one that spreads every
            batch over MPI ranks).

        Returns a History: history['loss'] (and 'accuracy' for classifiers,
        'val_loss' and 'val_accuracy' with validation, 'lr') per epoch.

        The network is this thread's while fit runs (see `exclusive`): calls
        on it from other threads raise RuntimeError; callbacks, which run in
        fit's thread, may use it.
        """
        self._require_trainable()
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size")
        if not isinstance(reset, bool):
            raise TypeError(f"reset must be True or False, got {reset!r}")
        runner = EpochRunner() if runner is None else runner
        if not isinstance(runner, EpochRunner):
            raise TypeError(
                f"runner must be a backprop.training.EpochRunner, got {type(runner).__name__}"
            )
        # The run's shuffle seed: the one kept, or (a new run) the next draw from the
        # network's generator, taken only once the arguments have passed their checks.
        if checkpoint_every is not None:
            checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
            if checkpoint is None:
                raise ValueError("checkpoint_every: give checkpoint= too (the file to save)")
            if not runner.saves_within_epochs:
                raise ValueError(
                    f"checkpoint_every: {type(runner).__name__} saves at the ends of epochs only"
                )
        path = None if checkpoint is None else _format.npz_path(checkpoint)
        if path is not None:
            if reset and os.path.exists(path):
                raise ValueError(
                    f"reset: the checkpoint {path} exists and would resume the run; "
                    "delete it to start over"
                )
        kept = self._training.seed
        new_run = reset or kept is None
        run_seed = _peek_seed(self._rng) if new_run or kept is None else kept
        # A fit refused before its first epoch (an argument, a checkpoint of
        # another run, a bad file) leaves the network as it was.
        undo = self._undo_point()
        try:
            self._set_optimizer_for_fit(optimizer, lr)
            source_of = functools.partial(
                self._source,
                X,
                y,
                epochs,
                runner.step_rows(batch_size),
                chunk_size,
                sample_weight,
                class_weight,
                validation_data,
                validation_split,
                runner.reads_rows,
            )
            source, score = source_of(run_seed)
            n = source.rows
            batch_size = min(batch_size, n or batch_size)
            engine = self._engine_for(batch_size if n else 1, True)  # (a stream: per batch)
            callbacks = self._callbacks(
                callbacks,
                early_stopping,
                patience,
                min_delta,
                verbose,
                runner.validating(score is not None),
            )
            run = None
            if path is not None:
                first = self._training.epoch
                run = {
                    "first": first,
                    "last": first + epochs,
                    "rows": n,
                    "batch_size": batch_size,
                    "shuffle": bool(shuffle),
                    "complete": False,
                    "history": {},
                    "every": checkpoint_every,
                    "position": None,
                }
                if os.path.exists(path):  # resume the run from it
                    run = self._resume(path, run)
                    if validation_split and self._training.seed not in (None, run_seed):
                        # (the run holds out the rows its own seed chose)
                        source, score = source_of(self._training.seed)
                    run_seed = int(self._training.seed or 0)
                    new_run = reset = False
                    epochs = run["last"] - self._training.epoch
                    if run["complete"]:
                        return _history_of(run)
            if reset:
                self._reset_training()
            if new_run:
                self._rng.integers(2**62)  # (the draw run_seed took)
                self._training.seed = run_seed
            # The core shuffles the rows of each chunk by the epoch's seed: the
            # training run's seed plus the epoch's number (see TrainingState).
            seed = run_seed if shuffle else -1
            # An epoch goes to the core in stretches of whole batches, each about
            # STRETCH_FLOPS of work, so that Ctrl-C lands between two of them.
            step_flops = self._engine_flops_per_row() * batch_size
            stretch = batch_size * max(1, int(STRETCH_FLOPS // max(step_flops, 1.0)))
            saver = (
                None
                if run is None or path is None
                else Checkpoint(path, run, runner.writes_checkpoints)
            )
            progress = None
            if saver is not None and checkpoint_every is not None:
                stretch = min(stretch, batch_size * checkpoint_every)  # (a save ends a stretch)
                position = saver.run["position"]
                progress = Progress(
                    checkpoint_every,
                    lambda epoch, rows, loss, right: saver.save_within(
                        self._snapshot, epoch, rows, loss, right
                    ),
                    None
                    if position is None
                    else (position["epoch"], position["rows"], position["loss"], position["right"]),
                )
            plan = runner.start(self, FitPlan(source, batch_size, seed, engine, stretch, progress))
            return self._run_epochs(
                epochs,
                n,
                callbacks,
                lambda epoch, lr: runner.epoch(self, plan, epoch, lr),
                runner.score(score),
                saver,
                undo,
            )
        except BaseException:
            if not undo.started:
                undo.undo()
            raise

    def _run_epochs(
        self, epochs, rows, callbacks, run_epoch, score, checkpoint=None, undo=None
    ) -> History:
        """The loop over the epochs of a fit around run_epoch(epoch, lr) →
        (mean loss, accuracy): callbacks, history, validation figures from
        score(), and the return to the last finite state when an epoch
        diverges or meets bad data."""
        history = History() if not checkpoint else _history_of(checkpoint.run)
        self.stop_training = False
        state = self._training
        first = state.epoch
        logs = {"epochs": epochs, "rows": rows, "initial_epoch": first}
        keys = callback_keys(callbacks)
        for callback, key in zip(callbacks, keys):
            callback.on_train_begin(self, logs)
            if key in state.callbacks:  # take up where the last fit left it
                try:
                    callback.set_state(state.callbacks[key])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"callbacks: the training state kept for {key} does not suit it "
                        f"({type(exc).__name__}: {exc}); fit(..., reset=True) starts a new run"
                    ) from None
        if undo is not None:
            undo.started = True
        try:
            for epoch in range(first + 1, first + epochs + 1):
                for callback in callbacks:
                    callback.on_epoch_begin(self, epoch, logs)
                lr = self._optimizer.lr
                # (a callback may have changed the optimizer, or how much state it keeps)
                kept = [self.params] + self._opt_state[: self._optimizer.n_state]
                backup = [a.copy() for a in kept]
                steps, drops = self.optimizer_steps, self.dropout_steps
                try:
                    loss, right = run_epoch(epoch, lr)
                except Exception:  # bad data, a batch that failed to load: undone
                    self._restore(backup, kept, steps, drops)  # (Ctrl-C keeps the steps taken)
                    raise
                logs = {"loss": loss}
                if self.is_classifier:
                    logs["accuracy"] = right
                if not (math.isfinite(loss) and _ops.all_finite(self.params)):
                    problem = (
                        f"the loss became {loss} (the weights overflowed). The "
                        f"learning rate (lr={lr}) is probably too large: try a "
                        "smaller one."
                    )
                elif not all(_ops.all_finite(state) for state in kept[1:]):
                    dtype = self.dtype.name
                    problem = (
                        f"the optimizer's state ({type(self._optimizer).__name__}'s "
                        "running sums of the gradients or of their squares) overflowed "
                        f"{dtype}, and the weights stopped moving. The gradients are "
                        f"too large for {dtype}: scale the inputs (and targets) down, "
                        "clip the gradients (clip_norm=…)"
                        + (" or train in float64." if dtype == "float32" else ".")
                    )
                else:
                    problem = None
                if problem:
                    self._restore(backup, kept, steps, drops)
                    history.append(epoch, dict(logs, lr=lr))
                    warnings.warn(
                        f"training stopped at epoch {epoch}: {problem} The network "
                        "keeps its weights from before that epoch.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    break
                if score is not None:
                    logs.update(score())
                logs["lr"] = lr
                history.append(epoch, logs)
                for callback in callbacks:
                    callback.on_epoch_end(self, epoch, logs)
                state.epoch = epoch
                for callback, key in zip(callbacks, keys):
                    kept_state = callback.get_state()
                    if kept_state:
                        state.callbacks[key] = kept_state
                if checkpoint and not self.stop_training and epoch < first + epochs:
                    checkpoint.save(self._snapshot, history, complete=False)
                if self.stop_training:
                    break
        finally:  # also when an error or Ctrl-C ends training
            for callback in callbacks:
                callback.on_train_end(self, logs)
        if checkpoint:  # the run is over (every epoch, an early stop or a divergence)
            checkpoint.save(self._snapshot, history, complete=True)
        return history

    def _resume(self, path: str, run: dict) -> dict:
        """Take up the run saved in the checkpoint `path`: the network's
        weights, optimizer, state and generator become the file's; returns
        the file's run, once it is known to be this fit's."""
        model, arrays = _format.read(path)
        saved = model.training.run
        mine = (
            list(self.layout.sizes),
            [layer.activation for layer in self.layers],
            self.loss,
            self.dtype.name,
            list(self.dropout),
        )
        rates = [0.0] * len(model.activations) if model.dropout is None else model.dropout.rates
        theirs = (
            list(model.sizes),
            list(model.activations),
            model.loss,
            model.dtype,
            [rate or 0.0 for rate in rates],
        )
        if saved is None:
            raise ValueError(f"checkpoint: {path} is a model file, not a checkpoint of a run")
        if theirs != mine:
            raise ValueError(
                f"checkpoint: {path} belongs to another network (layers {theirs[0]}, "
                f"{theirs[1]}, {theirs[2]}, {theirs[3]}, dropout {theirs[4]}; this one is "
                f"{mine[0]}, {mine[1]}, {mine[2]}, {mine[3]}, dropout {mine[4]}); delete it "
                "or name another file"
            )
        for key, what in (
            ("rows", "rows of data"),
            ("first", "first epoch"),
            ("last", "last epoch"),
            ("batch_size", "batch_size"),
            ("shuffle", "shuffle"),
            ("every", "checkpoint_every"),
        ):
            if saved[key] != run[key]:
                raise ValueError(
                    f"checkpoint: {path} belongs to another run: its {what} is "
                    f"{saved[key]}, this fit's is {run[key]}; delete it to start over"
                )
        other = type(self)._from_record(model, arrays)  # (checked whole first)
        if type(other.optimizer) is not type(self._optimizer):
            raise ValueError(
                f"checkpoint: {path} trains with {type(other.optimizer).__name__}, "
                f"this fit with {type(self._optimizer).__name__}; delete it to start over"
            )
        self.params[...] = other.params
        self.optimizer = other.optimizer
        for mine_state, theirs_state in zip(self._opt_state, other.optimizer_state):
            mine_state[...] = theirs_state
        self._apply_optimizer(steps=other.optimizer_steps)
        self._rng.bit_generator.state = model.rng
        self.dropout_seed, self.dropout_steps = other.dropout_seed, other.dropout_steps
        self._training = other.training_state
        return dict(saved)

    def _undo_point(self) -> _Undo:
        """fit's way back to the network as it is now (see _Undo)."""
        opt, lr = self._optimizer, self._optimizer.lr
        params, opt_state = self.params.copy(), self._opt_state
        opt_arrays = [state.copy() for state in opt_state]
        steps = self.optimizer_steps
        training = self._training
        epoch, seed, callbacks = training.epoch, training.seed, dict(training.callbacks)
        rng = self._rng.bit_generator.state
        drop_seed, drops = self.dropout_seed, self.dropout_steps

        def undo() -> None:
            self.params[...] = params
            self._optimizer = opt
            opt.lr = lr
            self._opt_state = opt_state
            for state, saved in zip(opt_state, opt_arrays):
                state[...] = saved
            self._apply_optimizer(steps=steps)
            training.epoch, training.seed, training.callbacks = epoch, seed, callbacks
            self._training = training
            self._rng.bit_generator.state = rng
            self.dropout_seed, self.dropout_steps = drop_seed, drops

        return _Undo(undo)

    def _reset_training(self) -> None:
        """A new training run (fit's reset=True): see TrainingState."""
        self._training = TrainingState()
        for state in self._opt_state:
            state[...] = 0
        self._apply_optimizer(steps=0)

    def _restore(self, backup, kept, steps, drops) -> None:
        for saved, current in zip(backup, kept):
            current[...] = saved
        self._apply_optimizer(steps)
        self.dropout_steps = drops

    def partial_fit(
        self,
        X: ArrayLike | Iterable,
        y: ArrayLike | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        callbacks: list | None = None,
        chunk_size: int | None = None,
    ) -> float:
        """One more epoch over (X, y) — a chunk of a stream, new data for a
        trained network, a memory-mapped array or an iterable of batches (see
        fit) — with the current weights, optimizer and its state.  Returns
        the epoch's mean training loss."""
        history = self.fit(
            X,
            y,
            epochs=1,
            batch_size=batch_size,
            shuffle=shuffle,
            callbacks=callbacks,
            chunk_size=chunk_size,
        )
        return history.history["loss"][0]

    def _engine_flops_per_row(self) -> float:
        return 2.0 * (3 * self._macs - self.layers[0].n_in * self.layers[0].n_out)

    def _set_optimizer_for_fit(self, optimizer, lr) -> None:
        """fit's optimizer= and lr= (see fit), applied to the engine."""
        if lr is not None:
            lr = check_positive_float(lr, "lr")
        if optimizer is not None:
            if lr is not None and isinstance(optimizer, _optimizers.Optimizer):
                raise ValueError(
                    "lr: give the learning rate to the optimizer "
                    f"({type(optimizer).__name__}(lr=…)), not beside it"
                )
            self.optimizer = _optimizers.get(optimizer, lr)
        elif lr is not None and type(self._optimizer) is _optimizers.SGD:
            self._optimizer.lr = lr
        elif lr is not None:
            self.optimizer = _optimizers.SGD(lr)
        self._apply_optimizer()

    def _source(
        self,
        X,
        y,
        epochs,
        step_rows,
        chunk_size,
        sample_weight,
        class_weight,
        validation_data,
        validation_split,
        lazy=False,
        split_seed=0,
    ):
        """fit's data as a source of chunks (see backprop._sources; chunks
        hold whole steps of step_rows rows; `lazy`: no row is read before it
        is asked for), and a function giving the validation figures after
        each epoch (or None); validation_split holds out the rows that
        split_seed chooses."""
        if y is None and (isinstance(X, np.ndarray) or is_sparse(X)):
            raise TypeError(
                "y is missing: fit(X, y) takes arrays, fit(batches) an iterable of (X, y) batches"
            )
        chunked = chunk_size is not None or isinstance(X, np.memmap)
        if y is not None and not chunked and not lazy:
            return self._in_memory(
                X, y, sample_weight, class_weight, validation_data, validation_split, split_seed
            )
        if validation_split:
            raise ValueError(
                "validation_split holds out rows of data in memory; with "
                "chunked or streamed data give validation_data"
            )
        score = self._scorer(validation_data, checked=False)
        if y is None:
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight: with an iterable of batches, give each "
                    "batch's weights as a triple (X, y, sample_weight)"
                )
            table = self._about.class_table(class_weight, None)
            return _sources.Batches(self._about, X, table, epochs), score
        return self._chunked(
            X, y, step_rows, chunk_size, sample_weight, class_weight, chunked
        ), score

    def _in_memory(
        self, X, y, sample_weight, class_weight, validation_data, validation_split, split_seed
    ):
        """The source and scorer of fit for data converted in memory at once."""
        if validation_data is not None and validation_split:
            raise ValueError("validation_data and validation_split: give one, not both")
        X2, Y = self._about.data(X, y, sparse=True)
        weights = (
            None if sample_weight is None else self._about.sample_weights(sample_weight, Y.shape[0])
        )
        table = self._about.class_table(class_weight, lambda: self._about.label_counts(Y))
        weights = self._about.row_weights(weights, table, Y)
        if self._scored_in_chunks(validation_data):
            return _sources.InMemory(X2, Y, weights), self._scorer(validation_data, False)
        X2, Y, weights, validation = self._validation(
            X2, Y, weights, validation_data, validation_split, split_seed
        )
        return _sources.InMemory(X2, Y, weights), self._scorer(validation)

    def _chunked(self, X, y, step_rows, chunk_size, sample_weight, class_weight, chunked=True):
        """The source of fit for arrays read some rows at a time: a chunk
        at a time (memory maps, chunk_size), or (not `chunked`) in the order
        of one chunk, only the rows asked for.  A sparse X is checked whole
        first, and its chunks stay sparse."""
        if is_sparse(X):
            X = self._about.sparse(X)
        X, y = self._about.rows_to_read(X, y)
        if sample_weight is not None:
            sample_weight = self._about.sample_weights(sample_weight, X.shape[0])
        rows = (
            _sources.chunk_rows(chunk_size, step_rows, self.n_inputs, self.dtype.itemsize)
            if chunked
            else len(y)
        )
        table = self._about.class_table(
            class_weight,
            lambda: sum(
                self._about.label_counts(
                    self._about.targets(y[i : i + rows], len(y[i : i + rows]), False)
                )
                for i in range(0, len(y), rows)
            ),
        )
        return _sources.ChunkedArrays(
            self._about, X, y, sample_weight, table, rows if chunked else None
        )

    def _validation(self, X2, Y, weights, validation_data, validation_split, split_seed=0):
        """(X_train, Y_train, weights, (X_val, Y_val) or None) from fit's
        arguments (at most one of validation_data and validation_split, which
        holds out the rows split_seed chooses: the same in every fit of a
        training run)."""
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            Xv, single = self._about.rows(validation_data[0], "validation_data[0]")
            Yv = self._about.targets(validation_data[1], Xv.shape[0], single)
            return X2, Y, weights, (Xv, Yv)
        if not validation_split:
            return X2, Y, weights, None
        fraction = check_positive_float(validation_split, "validation_split")
        n_val = int(round(fraction * X2.shape[0]))
        if not fraction < 1 or n_val < 1 or n_val >= X2.shape[0]:
            raise ValueError(
                f"validation_split must leave rows on both sides, got "
                f"{validation_split} of {X2.shape[0]} rows"
            )
        rows = np.random.default_rng([split_seed, 1]).permutation(X2.shape[0])
        val, train = np.sort(rows[:n_val]), np.sort(rows[n_val:])
        return (X2[train], Y[train], None if weights is None else weights[train], (X2[val], Y[val]))

    def _scorer(self, validation, checked: bool = True):
        """The function that gives fit its validation figures, from a checked
        (X_val, Y_val) (or, unless `checked`, fit's validation_data); None
        without validation.  A memory-mapped X_val is scored a chunk at a
        time (see evaluate)."""
        if validation is None:
            return None
        if not checked and self._scored_in_chunks(validation):
            Xv, yv = self._about.rows_to_read(
                validation[0], validation[1], names=("validation_data[0]", "validation_data[1]")
            )
            for rows in self._chunks_of(Xv):  # checked before training, as in memory
                where = f"rows {rows.start}:{min(rows.stop, len(Xv))}"
                X2, single = self._about.inputs(np.asarray(Xv[rows]), f"validation_data[0] {where}")
                self._about.targets(yv[rows], X2.shape[0], single, f"validation_data[1] {where}")
            return lambda: {f"val_{k}": v for k, v in self.evaluate(Xv, yv).items()}
        if not checked:
            validation = self._validation(None, None, None, validation, 0.0)[3]
        return lambda: {f"val_{k}": v for k, v in self._evaluate(*validation).items()}

    def _scored_in_chunks(self, validation_data) -> bool:
        return (
            isinstance(validation_data, (tuple, list))
            and len(validation_data) == 2
            and self._memory_mapped(validation_data[0])
        )

    @staticmethod
    def _memory_mapped(X) -> TypeGuard[np.memmap]:
        """A non-empty 2-D memory map: read in chunks by predict, evaluate and fit."""
        return isinstance(X, np.memmap) and X.ndim == 2 and X.shape[0] > 0

    @staticmethod
    def _callbacks(callbacks, early_stopping, patience, min_delta, verbose, validation):
        callbacks = list(callbacks or [])
        for i, callback in enumerate(callbacks):
            if not isinstance(callback, _callbacks.Callback):
                raise TypeError(
                    f"callbacks[{i}] must be a backprop.callbacks.Callback, "
                    f"got {type(callback).__name__}"
                )
        if early_stopping:
            callbacks.append(
                _callbacks.EarlyStopping("val_loss" if validation else "loss", patience, min_delta)
            )
        if verbose:
            callbacks.append(_callbacks.ProgressBar())
        return callbacks
