"""Callbacks: code that runs between the epochs of `fit`.

The compiled core runs a whole epoch per call; between epochs `fit` hands
each callback the network, the epoch number (from 1) and the epoch's `logs`:
'loss' and, for classifiers, 'accuracy' (both averaged over the epoch's
batches, as they were trained); 'val_loss' and 'val_accuracy' with
validation data; 'lr', the learning rate the epoch used.  A callback stops
training by setting `net.stop_training = True`.  Early stopping, the
learning-rate schedules and the progress bar are callbacks themselves:

    net.fit(X, y, epochs=100, validation_split=0.2,
            callbacks=[bp.callbacks.CosineDecay(100), bp.callbacks.EarlyStopping(patience=5)])
"""
from __future__ import annotations

import math
import sys
import time

from ._validation import check_int, check_positive_float

__all__ = ["Callback", "EarlyStopping", "LearningRateSchedule", "StepDecay",
           "ExponentialDecay", "InverseScaling", "CosineDecay", "ReduceLROnPlateau",
           "ProgressBar"]


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


def _monitor_mode(monitor: str) -> float:
    """+1 where smaller is better (losses), -1 where larger is (accuracies)."""
    return -1.0 if "accuracy" in monitor else 1.0


class _Monitor:
    """Tracks the best value of logs[monitor] and how long ago it was."""

    def __init__(self, monitor: str, min_delta: float):
        self.monitor = monitor
        self.min_delta = check_positive_float(min_delta, "min_delta", allow_zero=True)
        self.sign = _monitor_mode(monitor)

    def reset(self):
        self.best = math.inf
        self.wait = 0

    def improved(self, logs: dict) -> bool:
        """Record logs[monitor]; True when it beats the best by > min_delta."""
        if self.monitor not in logs:
            raise ValueError(f"monitor: {self.monitor!r} is not among this fit's figures "
                             f"({', '.join(sorted(logs))}); validation figures need "
                             "validation_data or validation_split")
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False


class EarlyStopping(Callback):
    """Stop when `monitor` ('val_loss' by default; 'loss', 'accuracy',
    'val_accuracy') has not improved by more than `min_delta` for
    `patience` epochs, and put back the weights of the best epoch
    (`restore_best_weights`)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5,
                 min_delta: float = 0.0, restore_best_weights: bool = True):
        self.patience = check_int(patience, "patience", minimum=0)
        self.restore_best_weights = restore_best_weights
        self._monitor = _Monitor(monitor, min_delta)
        self.best_epoch = self.stopped_epoch = None

    @property
    def monitor(self) -> str:
        return self._monitor.monitor

    def on_train_begin(self, net, logs):
        self._monitor.reset()
        self.best_epoch = self.stopped_epoch = None
        self._best_params = None

    def on_epoch_end(self, net, epoch, logs):
        if self._monitor.improved(logs):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self._best_params = net.params.copy()
        elif self._monitor.wait >= self.patience:
            self.stopped_epoch = epoch
            net.stop_training = True

    def on_train_end(self, net, logs):
        if self.restore_best_weights and self._best_params is not None:
            net.params[...] = self._best_params


class LearningRateSchedule(Callback):
    """Sets the optimizer's learning rate before each epoch from
    `rate(epoch, initial_lr)`; the initial rate is the optimizer's when
    training begins."""

    def on_train_begin(self, net, logs):
        self.initial_lr = net.optimizer.lr

    def on_epoch_begin(self, net, epoch, logs):
        net.optimizer.lr = self.rate(epoch, self.initial_lr)

    def on_train_end(self, net, logs):
        net.optimizer.lr = self.initial_lr

    def rate(self, epoch: int, initial_lr: float) -> float:
        raise NotImplementedError


class StepDecay(LearningRateSchedule):
    """η·γ^⌊(epoch − 1) / step_size⌋: multiply by `gamma` every `step_size` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = check_int(step_size, "step_size")
        self.gamma = check_positive_float(gamma, "gamma")

    def rate(self, epoch, initial_lr):
        return initial_lr * self.gamma ** ((epoch - 1) // self.step_size)


class ExponentialDecay(LearningRateSchedule):
    """η·γ^(epoch − 1)."""

    def __init__(self, gamma: float):
        self.gamma = check_positive_float(gamma, "gamma")

    def rate(self, epoch, initial_lr):
        return initial_lr * self.gamma ** (epoch - 1)


class InverseScaling(LearningRateSchedule):
    """η / epoch^power_t (scikit-learn's 'invscaling', counted in epochs)."""

    def __init__(self, power_t: float = 0.5):
        self.power_t = check_positive_float(power_t, "power_t", allow_zero=True)

    def rate(self, epoch, initial_lr):
        return initial_lr / epoch ** self.power_t


class CosineDecay(LearningRateSchedule):
    """From η down to `min_lr` along half a cosine over `epochs` epochs:
    min_lr + (η − min_lr)·(1 + cos(π·(epoch − 1)/epochs))/2."""

    def __init__(self, epochs: int, min_lr: float = 0.0):
        self.epochs = check_int(epochs, "epochs")
        self.min_lr = check_positive_float(min_lr, "min_lr", allow_zero=True)

    def rate(self, epoch, initial_lr):
        t = min(epoch - 1, self.epochs) / self.epochs
        return self.min_lr + (initial_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` has not improved
    by more than `min_delta` for `patience` epochs (never below `min_lr`)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, min_lr: float = 0.0):
        self.factor = check_positive_float(factor, "factor")
        if not self.factor < 1:
            raise ValueError(f"factor must be below 1, got {factor}")
        self.patience = check_int(patience, "patience", minimum=0)
        self.min_lr = check_positive_float(min_lr, "min_lr", allow_zero=True)
        self._monitor = _Monitor(monitor, min_delta)

    def on_train_begin(self, net, logs):
        self._monitor.reset()

    def on_epoch_end(self, net, epoch, logs):
        if not self._monitor.improved(logs) and self._monitor.wait > self.patience:
            net.optimizer.lr = max(net.optimizer.lr * self.factor, self.min_lr)
            self._monitor.wait = 0


class ProgressBar(Callback):
    """A tqdm bar over the epochs showing the loss, the validation figures
    and samples per second; where the output is not a terminal, one plain
    line every `every` epochs (by default about 20 lines a fit)."""

    def __init__(self, file=None, every: int | None = None):
        self.file = file
        self.every = every

    def on_train_begin(self, net, logs):
        self._file = self.file or sys.stderr
        self._epochs = logs["epochs"]
        self._rows = logs["rows"]
        self._start = time.perf_counter()
        self._bar = None
        if getattr(self._file, "isatty", lambda: False)():
            from tqdm import tqdm
            self._bar = tqdm(total=self._epochs, file=self._file, unit="epoch",
                             dynamic_ncols=True, leave=True)

    def _figures(self, logs) -> str:
        keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
        return "  ".join(f"{k} {logs[k]:.4f}" for k in keys)

    def on_epoch_end(self, net, epoch, logs):
        figures = self._figures(logs)
        if self._rows is not None:       # (unknown for an iterable of batches)
            rate = self._rows * epoch / max(time.perf_counter() - self._start, 1e-9)
            figures += f"  {rate:,.0f} samples/s"
        if self._bar is not None:
            self._bar.set_postfix_str(figures, refresh=False)
            self._bar.update(1)
            return
        every = self.every or max(1, self._epochs // 20)
        if epoch % every == 0 or epoch in (1, self._epochs) or net.stop_training:
            width = len(str(self._epochs))
            print(f"epoch {epoch:>{width}}/{self._epochs}  {figures}", file=self._file,
                  flush=True)

    def on_train_end(self, net, logs):
        if self._bar is not None:
            self._bar.close()
