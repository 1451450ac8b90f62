"""Callbacks: code that runs between the epochs of `fit`.

The compiled core runs a whole epoch per call; between epochs `fit` hands
each callback the network, the epoch number (from 1) and the epoch's `logs`:
'loss' and, for classifiers, 'accuracy' (both averaged over the epoch's
batches, as they were trained); 'val_loss' and 'val_accuracy' with
validation data; 'lr', the learning rate the epoch used.  A callback stops
training by setting `net.stop_training = True`.  Early stopping, the
learning-rate schedules, the progress bar, the CSV log and the checkpoints
are callbacks themselves (LambdaCallback makes one of plain functions):

    net.fit(X, y, epochs=100, validation_split=0.2,
            callbacks=[bp.callbacks.CosineDecay(100), bp.callbacks.EarlyStopping(patience=5)])
"""

from __future__ import annotations

import csv
import math
import os
import string
import sys
import time

import numpy as np

from ._validation import check_int, check_positive_float
from .optimizers import Setting, boolean, non_negative, positive

__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateSchedule",
    "StepDecay",
    "ExponentialDecay",
    "InverseScaling",
    "CosineDecay",
    "ReduceLROnPlateau",
    "ProgressBar",
    "LambdaCallback",
    "CSVLogger",
    "ModelCheckpoint",
]

# The figures fit gives in an epoch's logs, in the order a CSVLogger writes them.
_FIGURES = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


class Callback:
    """The protocol: override what you need.  Every hook gets the network."""

    def on_train_begin(self, net, logs: dict) -> None:
        """Before the first epoch of a fit."""

    def on_epoch_begin(self, net, epoch: int, logs: dict) -> None:
        """Before each epoch (epoch counts from 1)."""

    def on_epoch_end(self, net, epoch: int, logs: dict) -> None:
        """After each epoch, with its figures in `logs`."""

    def on_train_end(self, net, logs: dict) -> None:
        """After the last epoch (or when training was stopped)."""

    def get_state(self) -> dict:
        """What the callback has learnt during training and needs to go on
        exactly where it stopped (numbers, strings, None and arrays of the
        network's parameters' shape); {} for a callback that keeps nothing.
        fit keeps it in the network's training state after every epoch, and
        a later fit (or one after loading a file) hands it back to a callback
        of the same class at the same place, through set_state, after
        on_train_begin."""
        return {}

    def set_state(self, state: dict) -> None:
        """Take up a state that get_state gave (see there)."""


# The settings of the callbacks below are checked whenever they are assigned,
# at construction or after (see backprop.optimizers.Setting).
def count(minimum: int):
    """The check of a whole-number setting of at least `minimum`."""
    return lambda owner, value, name: check_int(value, name, minimum)


def _monitor(owner, value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of a figure such as 'val_loss', got {value!r}")
    return value


def _below_one(owner, value, name):
    value = check_positive_float(value, name)
    if not value < 1:
        raise ValueError(f"{name} must be below 1, got {value}")
    return value


def _file(owner, value, name):
    if value is not None and not callable(getattr(value, "write", None)):
        raise TypeError(f"{name} must be a file open for writing (or None), got {value!r}")
    return value


def _every(owner, value, name):
    return None if value is None else check_int(value, name)


def _path(owner, value, name):
    """A file's path: a str or an os.PathLike naming one (kept as a str)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a path (a str or os.PathLike), got {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _checkpoint_path(owner, value, name):
    value = _path(owner, value, name)
    _placeholders(value, name)
    return value


def _placeholders(path: str, name: str) -> list[str]:
    """The placeholders of a ModelCheckpoint's path, checked: {epoch} and
    the figures, each with a format spec that suits a number, or none."""
    try:
        fields = [
            (f, spec or "") for _, f, spec, _ in string.Formatter().parse(path) if f is not None
        ]
    except ValueError as exc:
        raise ValueError(
            f"{name}: {path!r} is not a format string ({exc}); a brace is written {{{{ or }}}}"
        ) from None
    names = ("epoch", *_FIGURES)
    for field, spec in fields:
        if field not in names or "{" in spec:
            raise ValueError(
                f"{name}: unknown placeholder {{{field}{':' if spec else ''}{spec}}} in {path!r}; "
                f"the placeholders are {', '.join('{' + n + '}' for n in names)}, each with a "
                "format spec or none, as str.format takes them"
            )
    try:
        path.format(epoch=1, **dict.fromkeys(_FIGURES, 0.5))
    except (ValueError, TypeError) as exc:  # a format spec or conversion that does not apply
        raise ValueError(f"{name}: {path!r} is not a format string for numbers ({exc})") from None
    return [field for field, _ in fields]


def _separator(owner, value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a one-character str, got {value!r}")
    if len(value) != 1 or value in '\r\n"':
        raise ValueError(
            f"{name} must be one character other than a quote or a line break, got {value!r}"
        )
    return value


def _figures_of(net) -> tuple[str, ...]:
    """The figures a fit of `net` may give (the accuracies: a classifier's)."""
    return tuple(f for f in _FIGURES if net.is_classifier or "accuracy" not in f)


def _nothing(*args) -> None:
    """The hook of a LambdaCallback given None: does nothing."""


def _hook(owner, value, name):
    if value is None:
        return _nothing
    if not callable(value):
        raise TypeError(f"{name} must be a callable or None, got {value!r}")
    return value


def _new_rate(rate, what: str) -> float:
    """A learning rate a callback chose, checked: `what` names it."""
    return check_positive_float(rate, f"the learning rate {what}")


class _Monitored(Callback):
    """Tracks the best value of logs[monitor] and how many epochs ago it was:
    an epoch improves on it when it beats it by more than `min_delta`."""

    monitor = Setting(_monitor)
    min_delta = Setting(non_negative)
    patience = Setting(count(0))

    def __init__(self, monitor: str, patience: int, min_delta: float):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta

    def on_train_begin(self, net, logs):
        self._best, self._wait = math.inf, 0

    def get_state(self) -> dict:
        best = None if math.isinf(self._best) else self._best  # (JSON has no inf)
        return {"best": best, "wait": self._wait}

    def set_state(self, state: dict) -> None:
        self._best = math.inf if state["best"] is None else float(state["best"])
        self._wait = int(state["wait"])

    @property
    def _sign(self) -> float:
        """Smaller is better for losses, larger for accuracies: the values
        are compared (and the best kept) times this sign."""
        return -1.0 if "accuracy" in self.monitor else 1.0

    def _value(self, logs: dict) -> float:
        """logs[monitor] times _sign; a ValueError when the fit has no such figure."""
        if self.monitor not in logs:
            raise ValueError(
                f"monitor: {self.monitor!r} is not among this fit's figures "
                f"({', '.join(sorted(logs))}); validation figures need "
                "validation_data or validation_split"
            )
        return self._sign * logs[self.monitor]

    def _improved(self, logs: dict) -> bool:
        """Record logs[monitor]; True when it beats the best by > min_delta."""
        value = self._value(logs)
        if value < self._best - self.min_delta:
            self._best, self._wait = value, 0
            return True
        self._wait += 1
        return False


class EarlyStopping(_Monitored):
    """Stop when `monitor` ('val_loss' by default; 'loss', 'accuracy',
    'val_accuracy') has not improved by more than `min_delta` for
    `patience` epochs, and put back the weights of the best epoch
    (`restore_best_weights`)."""

    restore_best_weights = Setting(boolean)

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
    ):
        super().__init__(monitor, patience, min_delta)
        self.restore_best_weights = restore_best_weights
        self.best_epoch = self.stopped_epoch = None

    def on_train_begin(self, net, logs):
        super().on_train_begin(net, logs)
        self.best_epoch = self.stopped_epoch = None
        self._best_params = None

    def get_state(self) -> dict:
        return dict(super().get_state(), best_epoch=self.best_epoch, best_params=self._best_params)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.best_epoch = state["best_epoch"]
        params = state["best_params"]
        self._best_params = None if params is None else np.array(params)

    def on_epoch_end(self, net, epoch, logs):
        if self._improved(logs):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self._best_params = net.params.copy()
        elif self._wait >= self.patience:
            self.stopped_epoch = epoch
            net.stop_training = True

    def on_train_end(self, net, logs):
        if self.restore_best_weights and self._best_params is not None:
            net.params[...] = self._best_params


class LearningRateSchedule(Callback):
    """Sets the optimizer's learning rate before each epoch from
    `rate(epoch, initial_lr)`; the initial rate is the optimizer's when
    training begins.  A rate that is not a finite number > 0 stops the fit
    with a ValueError naming the schedule, before the epoch runs."""

    def on_train_begin(self, net, logs):
        self.initial_lr = net.optimizer.lr

    def get_state(self) -> dict:
        return {"initial_lr": self.initial_lr}

    def set_state(self, state: dict) -> None:
        self.initial_lr = float(state["initial_lr"])

    def on_epoch_begin(self, net, epoch, logs):
        what = f"{type(self).__name__} gives for epoch {epoch}"
        try:
            rate = self.rate(epoch, self.initial_lr)
        except OverflowError:
            raise ValueError(f"the learning rate {what} is out of range") from None
        net.optimizer.lr = _new_rate(rate, what)

    def on_train_end(self, net, logs):
        net.optimizer.lr = self.initial_lr

    def rate(self, epoch: int, initial_lr: float) -> float:
        raise NotImplementedError


class StepDecay(LearningRateSchedule):
    """η·γ^⌊(epoch − 1) / step_size⌋: multiply by `gamma` every `step_size` epochs."""

    step_size = Setting(count(1))
    gamma = Setting(positive)

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = step_size, gamma

    def rate(self, epoch, initial_lr):
        return initial_lr * self.gamma ** ((epoch - 1) // self.step_size)


class ExponentialDecay(LearningRateSchedule):
    """η·γ^(epoch − 1)."""

    gamma = Setting(positive)

    def __init__(self, gamma: float):
        self.gamma = gamma

    def rate(self, epoch, initial_lr):
        return initial_lr * self.gamma ** (epoch - 1)


class InverseScaling(LearningRateSchedule):
    """η / epoch^power_t (scikit-learn's 'invscaling', counted in epochs)."""

    power_t = Setting(non_negative)

    def __init__(self, power_t: float = 0.5):
        self.power_t = power_t

    def rate(self, epoch, initial_lr):
        return initial_lr / epoch**self.power_t


class CosineDecay(LearningRateSchedule):
    """From η down to `min_lr` along half a cosine over `epochs` epochs:
    min_lr + (η − min_lr)·(1 + cos(π·(epoch − 1)/epochs))/2, and min_lr
    after them (with min_lr = 0, a fit longer than `epochs` stops there)."""

    epochs = Setting(count(1))
    min_lr = Setting(non_negative)

    def __init__(self, epochs: int, min_lr: float = 0.0):
        self.epochs = epochs
        self.min_lr = min_lr

    def rate(self, epoch, initial_lr):
        t = min(epoch - 1, self.epochs) / self.epochs
        return self.min_lr + (initial_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2


class ReduceLROnPlateau(_Monitored):
    """Multiply the learning rate by `factor` when `monitor` has not improved
    by more than `min_delta` for `patience` epochs (never below `min_lr`)."""

    factor = Setting(_below_one)
    min_lr = Setting(non_negative)

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        min_lr: float = 0.0,
    ):
        # Checked in the order of the arguments: monitor, factor, patience …
        self.monitor, self.factor = monitor, factor
        super().__init__(monitor, patience, min_delta)
        self.min_lr = min_lr

    def on_epoch_end(self, net, epoch, logs):
        if not self._improved(logs) and self._wait > self.patience:
            lr = max(net.optimizer.lr * self.factor, self.min_lr)
            net.optimizer.lr = _new_rate(lr, f"ReduceLROnPlateau sets after epoch {epoch}")
            self._wait = 0


class ProgressBar(Callback):
    """A tqdm bar over the epochs showing the loss, the validation figures
    and samples per second; where the output is not a terminal, one plain
    line every `every` epochs (by default about 20 lines a fit)."""

    file = Setting(_file)
    every = Setting(_every)

    def __init__(self, file=None, every: int | None = None):
        self.file = file
        self.every = every

    def on_train_begin(self, net, logs):
        self._file = self.file or sys.stderr
        self._first = logs.get("initial_epoch", 0)  # (a fit that goes on from an earlier one)
        self._epochs = self._first + logs["epochs"]
        self._rows = logs["rows"]
        self._start = time.perf_counter()
        self._bar = None
        if getattr(self._file, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self._epochs,
                initial=self._first,
                file=self._file,
                unit="epoch",
                dynamic_ncols=True,
                leave=True,
            )

    def _figures(self, logs) -> str:
        keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
        return "  ".join(f"{k} {logs[k]:.4f}" for k in keys)

    def on_epoch_end(self, net, epoch, logs):
        figures = self._figures(logs)
        if self._rows is not None:  # (unknown for an iterable of batches)
            done = epoch - self._first
            rate = self._rows * done / max(time.perf_counter() - self._start, 1e-9)
            figures += f"  {rate:,.0f} samples/s"
        if self._bar is not None:
            self._bar.set_postfix_str(figures, refresh=False)
            self._bar.update(1)
            return
        every = self.every or max(1, (self._epochs - self._first) // 20)
        if epoch % every == 0 or epoch in (self._first + 1, self._epochs) or net.stop_training:
            width = len(str(self._epochs))
            print(f"epoch {epoch:>{width}}/{self._epochs}  {figures}", file=self._file, flush=True)

    def on_train_end(self, net, logs):
        if self._bar is not None:
            self._bar.close()


class LambdaCallback(Callback):
    """A callback made of functions, each called as the hook of its name is:
    on_epoch_begin(net, epoch, logs), on_epoch_end(net, epoch, logs),
    on_train_begin(net, logs), on_train_end(net, logs).  One left out (None)
    does nothing.

        LambdaCallback(on_epoch_end=lambda net, epoch, logs: print(epoch, logs["loss"]))
    """

    on_epoch_begin = Setting(_hook)
    on_epoch_end = Setting(_hook)
    on_train_begin = Setting(_hook)
    on_train_end = Setting(_hook)

    def __init__(
        self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None
    ):
        self.on_epoch_begin, self.on_epoch_end = on_epoch_begin, on_epoch_end
        self.on_train_begin, self.on_train_end = on_train_begin, on_train_end


class CSVLogger(Callback):
    """One row per epoch in the CSV file at `path`, under a header line:
    'epoch' (numbered as in the History), then the epoch's figures in the
    order loss, accuracy, val_loss, val_accuracy, lr (those the fit gives;
    any a callback adds to the logs come after them, by name).  Each row is
    flushed once written, so a run that is killed keeps its rows.  UTF-8,
    fields split by `separator`.

    With `append` (the default) a file that exists goes on: a resumed run
    adds its rows under the old ones, without a second header.  Its columns
    must be this fit's, or the fit stops with a ValueError naming the file:
    before the first epoch for what the network tells (the columns 'epoch',
    'loss', 'lr'; the accuracies, a classifier's only), at the first
    epoch's end for what only the figures can (validation).  append=False
    writes the file anew, from the first epoch's end."""

    path = Setting(_path)
    separator = Setting(_separator)
    append = Setting(boolean)

    def __init__(self, path, separator: str = ",", append: bool = True):
        self.path, self.separator, self.append = path, separator, append

    def on_train_begin(self, net, logs):
        # (settings changed while a fit runs apply to the next fit)
        self._where, self._split, self._append = self.path, self.separator, self.append
        self._file = self._writer = None
        self._columns = self._kept_columns(net) if self._append else None

    def _kept_columns(self, net) -> list[str] | None:
        """The header of the log being appended to (None: none yet), checked
        against what a fit of `net` can give."""
        try:
            with open(self._where, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh, delimiter=self._split), None)
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(
                f"path: {self._where!r} is not a CSV log to append to ({exc}); "
                "give another path, or append=False to write it anew"
            ) from None
        if header is None:  # an empty file
            return None
        base = ["epoch"] + [f for f in _figures_of(net) if not f.startswith("val_")]
        validated = base + [f for f in _figures_of(net) if f.startswith("val_")]
        known = {c for c in header if c in validated or c in _FIGURES}
        if len(set(header)) < len(header) or known not in (set(base), set(validated)):
            raise self._mismatch(
                header,
                f"{', '.join(base)} (and {', '.join(validated[len(base) :])} with validation)",
            )
        return header

    def _mismatch(self, header, ours: str) -> ValueError:
        return ValueError(
            f"path: {self._where!r} holds a log with the columns {', '.join(header)}, "
            f"and this fit's are {ours}: give another path, or append=False to write it anew"
        )

    def on_epoch_end(self, net, epoch, logs):
        row = {"epoch": epoch, **logs}
        new = self._columns is None
        if new:
            figures = [f for f in _FIGURES if f in logs]
            self._columns = ["epoch", *figures, *sorted(set(logs) - set(figures))]
        if sorted(row) != sorted(self._columns):
            raise self._mismatch(self._columns, ", ".join(row))
        if self._file is None:
            self._open(new)
        self._writer.writerow([row[c] for c in self._columns])
        self._file.flush()

    def _open(self, new: bool) -> None:
        ended = True
        if not new:  # (a run killed while writing may have left a row unfinished)
            with open(self._where, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                ended = fh.read(1) in b"\r\n"
        self._file = open(self._where, "a" if self._append else "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter=self._split)
        if new:
            self._writer.writerow(self._columns)
        elif not ended:
            self._file.write(self._writer.dialect.lineterminator)

    def on_train_end(self, net, logs):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class ModelCheckpoint(_Monitored):
    """Save the network (Sequential.save: the whole model and its training
    state, atomically, so a file that exists is always whole) after every
    `every`-th epoch, the epochs numbered as in the History.

    `path` may hold placeholders, filled in as str.format does: {epoch} and
    the epoch's figures ({loss}, {accuracy}, {val_loss}, {val_accuracy},
    {lr}), e.g. "ckpt-{epoch:03d}-{val_loss:.4f}.npz"; ".npz" is added when
    missing, and `last_saved` is the path written last.  A placeholder of
    another name, a malformed one, or a figure the network has not (a
    regressor's {accuracy}) is refused when the fit begins; a figure this
    fit does not give ({val_loss} without validation) at the first epoch's
    end, before anything is saved.

    save_best_only: save only when `monitor` ('val_loss' by default) beats
    its best so far (the rule of EarlyStopping: smaller is better for
    losses, larger for accuracies; with every > 1, at those epochs only), so
    the file, or the newest of the names, holds the best network.  The best
    value (`best`) goes on with the training state across fit calls and
    files (see Callback.get_state): a resumed run does not overwrite the
    best file with a worse network.

    A file holds its epoch's network with the training state fit stores
    once every callback has seen the epoch (the epochs trained, each
    callback's state), so that backprop.load(file) and fit go on exactly as
    the run did from there.  It is therefore written as the next epoch
    begins, or as training ends after the last one (with the weights of the
    epoch's end, not those EarlyStopping puts back)."""

    path = Setting(_checkpoint_path)
    every = Setting(count(1))
    save_best_only = Setting(boolean)

    def __init__(
        self,
        path: str | os.PathLike,
        every: int = 1,
        monitor: str = "val_loss",
        save_best_only: bool = False,
    ):
        self.path, self.every = path, every
        super().__init__(monitor, 0, 0.0)
        self.save_best_only = save_best_only
        self.last_saved: str | None = None
        self._best = math.inf
        self._due: tuple | None = None  # (epoch, path, its weights): the file to write

    @property
    def best(self) -> float | None:
        """The best value of `monitor` so far (with save_best_only), or None."""
        return None if math.isinf(self._best) else self._sign * self._best

    def on_train_begin(self, net, logs):
        super().on_train_begin(net, logs)
        self._due = None
        foreign = [
            f for f in _placeholders(self.path, "path") if f not in ("epoch",) + _figures_of(net)
        ]
        if foreign:
            raise ValueError(
                f"path: the placeholder {{{foreign[0]}}} of {self.path!r} is a figure this "
                "network has not (only classifiers have accuracies)"
            )
        folder = os.path.dirname(self.path)
        if folder and "{" not in folder and "}" not in folder and not os.path.isdir(folder):
            raise FileNotFoundError(f"path: the folder {folder!r} of {self.path!r} does not exist")

    def get_state(self) -> dict:
        return super().get_state() if self.save_best_only else {}

    def on_epoch_end(self, net, epoch, logs):
        values = dict(logs, epoch=epoch)
        for field in _placeholders(self.path, "path"):
            if field not in values:
                raise ValueError(
                    f"path: the placeholder {{{field}}} of {self.path!r} is not among this "
                    f"fit's figures ({', '.join(logs)}); validation figures need "
                    "validation_data or validation_split"
                )
        if self.save_best_only:
            self._value(logs)  # (a monitor the fit has not is refused at once)
        if epoch % self.every or (self.save_best_only and not self._improved(logs)):
            return
        self._due = (epoch, self.path.format_map(values), net.params.copy())

    def on_epoch_begin(self, net, epoch, logs):
        self._write(net)

    def on_train_end(self, net, logs):
        if self._due is None:
            return
        params = net.params.copy()
        net.params[...] = self._due[2]  # (EarlyStopping may have put others back since)
        try:
            self._write(net)
        finally:
            net.params[...] = params

    def _write(self, net) -> None:
        """Write the file due, if fit has stored its epoch's training state
        (it has not when an error or Ctrl-C ended the fit before)."""
        due, self._due = self._due, None
        if due is not None and net.training_state.epoch == due[0]:
            self.last_saved = net.save(due[1])
