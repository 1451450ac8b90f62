"""The model file format, knowing nothing of networks: the metadata's fields
and their strict parsing into a plain record (`Model`), the checks of an
archive and of arrays against that record, reading the arrays, and the
atomic write.  The loader's contract is in backprop.io's docstring; turning
a network into a `Model` and its arrays, and back, is Sequential's
(backprop.network).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import BinaryIO, NamedTuple

import numpy as np
from numpy.lib import format as _npy

from . import _ops
from . import activations as _activations
from . import losses as _losses
from . import optimizers as _optimizers
from .layout import Layout

FORMAT_VERSION = 2  # version 1 (no training state) is read as well
_MAGIC = "backprop model"
_META_FIELDS_1 = (
    "format",
    "version",
    "layers",
    "loss",
    "dtype",
    "seed",
    "n_threads",
    "classes",
    "optimizer",
    "optimizer_steps",
    "rng",
)
_META_FIELDS = _META_FIELDS_1 + ("training",)
_TRAINING_FIELDS = ("epoch", "seed", "callbacks", "run")
_RUN_FIELDS = (
    "first",
    "last",
    "rows",
    "batch_size",
    "shuffle",
    "complete",
    "history",
    "every",
    "position",
)
_DROPOUT_FIELDS = ("rates", "seed", "steps")  # an optional field of version 2
_MAX_FIGURES = 20
_MAX_CALLBACKS, _MAX_VALUES, _MAX_TEXT = 100, 100, 1000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}(#[0-9]{1,3})?")
_LAYER_FIELDS = ("n_in", "n_out", "activation", "negative_slope")
_ELU_FIELDS = _LAYER_FIELDS + ("alpha",)  # an elu layer's: its α too
_HUBER_FIELDS = ("name", "delta")  # meta.loss of huber: an object with its δ
_COMMON = ("lr", "l2", "weight_decay", "clip_norm", "decay_biases")
_SETTINGS = {  # each optimizer's settings, as its constructor takes them
    _optimizers.SGD: _COMMON + ("momentum", "nesterov"),
    _optimizers.Adam: _COMMON + ("betas", "eps"),
    _optimizers.AdamW: _COMMON + ("betas", "eps"),
    _optimizers.RMSProp: _COMMON + ("rho", "eps"),
    _optimizers.AdaGrad: _COMMON + ("eps",),
}
_OPTIMIZERS = {cls.__name__: cls for cls in _SETTINGS}
_SQUARES = {  # the state arrays that sum squares, by index
    _optimizers.Adam: {1: "second moment"},
    _optimizers.AdamW: {1: "second moment"},
    _optimizers.RMSProp: {0: "mean square"},
    _optimizers.AdaGrad: {0: "sum of squares"},
}
_ACTIVATIONS = tuple(n for n in _activations.NAMES if _activations.get(n).name == n)
_LOSSES = tuple(n for n in _losses.NAMES if _losses.get(n).name == n)
_DTYPES = ("float32", "float64")
_META_BYTES = 4 << 20
_MAX_RATIO, _RATIO_FROM = 100, 16 << 20
# The most optimizer steps a file may count (and so a network may be given).
MAX_STEPS = 2**62


# -- the record ----------------------------------------------------------------
class Model(NamedTuple):
    """What the metadata describes: the layer sizes (inputs, then each
    layer's outputs), their activations, the loss, the dtype's name,
    seed, threads, class names, the optimizer, its step count and the random
    generator's state (as numpy's bit_generator.state)."""

    sizes: list
    activations: list
    loss: _losses.Loss
    dtype: str
    seed: int | None
    n_threads: int | None
    classes: list | None
    optimizer: _optimizers.Optimizer
    steps: int
    rng: Mapping
    training: Training
    dropout: DropoutState | None = None  # (None: no Dropout layer)

    @property
    def n_params(self) -> int:
        return Layout(self.sizes).n_params

    @property
    def array_names(self) -> list:
        """The arrays (meta aside) that a file of this model holds."""
        return (
            ["params"]
            + [state_name(i) for i in range(self.optimizer.n_state)]
            + self.training.array_names
        )


class ArrayOf(NamedTuple):
    """A callback's value that is an array of the parameters' shape, held in
    the file as the member `name` (see Training)."""

    name: str


class Training(NamedTuple):
    """Where training stands (backprop.training.TrainingState): the epochs
    trained, the shuffle stream's seed (None: not drawn yet) and each
    callback's state, by key: {name: a JSON value, or an array}.  In a
    record read from a file, the arrays are ArrayOf their member."""

    epoch: int = 0
    seed: int | None = None
    callbacks: Mapping = {}
    run: Mapping | None = None  # a checkpoint's run (see backprop.training.Checkpoint)

    @property
    def array_names(self) -> list:
        return [
            value.name
            for state in self.callbacks.values()
            for value in state.values()
            if isinstance(value, ArrayOf)
        ]


class DropoutState(NamedTuple):
    """A network's dropout: the rate after each layer (None where no Dropout
    layer follows it; the output layer's is None), the seed of the masks'
    stream and the training passes that drew masks so far."""

    rates: list
    seed: int
    steps: int


def state_name(i: int) -> str:
    """The member holding the optimizer's state buffer `i`."""
    return f"optimizer_state_{i}"


def arrays_of(model: Model, params: np.ndarray, states) -> dict:
    """What a file of `model` holds, as arrays: 'meta' (JSON text), then
    copies of `params`, of the optimizer's `states` and of the arrays among
    the callbacks' states (members training_0, training_1 …)."""
    opt, rng = model.optimizer, model.rng
    extra: dict[str, np.ndarray] = {}
    callbacks: dict[str, dict] = {}
    for key, state in model.training.callbacks.items():
        callbacks[key] = {}
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                if value.shape != params.shape:
                    raise ValueError(
                        f"callback {key}: state {name!r} must be an array of the "
                        f"parameters' shape {params.shape}, got {value.shape}"
                    )
                member = f"training_{len(extra)}"
                extra[member] = value.astype(params.dtype)
                value = {"array": member}
            elif isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"callback {key}: state {name!r} is {value}, not a finite number")
            if not (value is None or isinstance(value, (bool, int, float, str, dict))):
                raise TypeError(
                    f"callback {key}: state {name!r} must be a number, text, None or an "
                    f"array, got {type(value).__name__}"
                )
            callbacks[key][name] = value
    settings = {k: getattr(opt, k) for k in _SETTINGS[type(opt)]}
    meta = {
        "format": _MAGIC,
        "version": FORMAT_VERSION,
        "layers": [
            _layer_of(a, b, act)
            for a, b, act in zip(model.sizes, model.sizes[1:], model.activations)
        ],
        "loss": _loss_of(model.loss),
        "dtype": model.dtype,
        "seed": model.seed,
        "n_threads": model.n_threads,
        "classes": None if model.classes is None else [str(c) for c in model.classes],
        "optimizer": {
            "class": type(opt).__name__,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        },
        "optimizer_steps": int(model.steps),
        "rng": {
            "bit_generator": rng["bit_generator"],
            "state": {k: str(v) for k, v in rng["state"].items()},
            "has_uint32": int(rng["has_uint32"]),
            "uinteger": int(rng["uinteger"]),
        },
        "training": {
            "epoch": int(model.training.epoch),
            "seed": model.training.seed,
            "callbacks": callbacks,
            "run": _run_of(model.training.run),
        },
    }
    if model.dropout is not None:  # (written only for a network with dropout)
        meta["dropout"] = {
            "rates": list(model.dropout.rates),
            "seed": str(int(model.dropout.seed)),
            "steps": int(model.dropout.steps),
        }
    arrays = {"meta": np.array(json.dumps(meta, allow_nan=False)), "params": params.copy()}
    for i, state in enumerate(states):
        arrays[state_name(i)] = state.copy()
    return arrays | extra


def _layer_of(n_in: int, n_out: int, act: _activations.Activation) -> dict:
    """A layer as JSON: its sizes, its activation's name and parameters
    (elu's α only for elu, so that every other layer reads as before)."""
    layer = {"n_in": n_in, "n_out": n_out, "activation": act.name}
    layer["negative_slope"] = act.negative_slope
    if act.name == "elu":
        layer["alpha"] = act.alpha
    return layer


def _loss_of(loss: _losses.Loss):
    """The loss as JSON: its name, or for huber {"name": "huber", "delta": δ}."""
    return {"name": loss.name, "delta": loss.delta} if loss.name == "huber" else loss.name


def _run_of(run):
    """A checkpoint's run as JSON: its history's figures with None for a
    value that is not finite (a diverged epoch's loss)."""
    if run is None:
        return None
    history = {
        key: [v if math.isfinite(v) else None for v in map(float, values)]
        for key, values in run["history"].items()
    }
    return dict(run, history=history)


# -- writing -------------------------------------------------------------------
def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def _umask() -> int:
    """The process's umask, read without changing it where the system shows it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: str) -> None:
    """Make a rename in `folder` durable (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def npz_path(path) -> str:
    """`path` as `write` names the file (".npz" added when missing)."""
    return _npz_path(path)


def write(path, arrays: dict) -> str:
    """Write `arrays` (from `arrays_of`) to `path` (".npz" is added when
    missing) atomically (see `write_atomically`).  Returns the path."""
    path = _npz_path(path)
    write_atomically(path, lambda fh: np.savez(fh, **arrays))
    return path


def write_atomically(path: str, fill: Callable[[BinaryIO], object]) -> None:
    """Create or replace the file `path` with what `fill(fh)` writes to the
    binary file fh: a temporary file beside it, fsynced, renamed over the
    target, its mode following the umask.  A crash or an error midway
    leaves the previous file whole (and no temporary file after an error)."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1] + ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=".backprop-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~_umask())
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _sync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- refusals ------------------------------------------------------------------
class _Refused(ValueError):
    """A model file refused, with the reason."""


def bad(why: str) -> _Refused:
    return _Refused(f"path: not a usable backprop model file: {why}")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value) -> str:
    """A JSON value, briefly, for a message."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return _short(repr(value))


@contextlib.contextmanager
def field(name: str, errors=(ValueError, TypeError, OverflowError)):
    """Refuse the file, naming `name` (if any), when the block raises one of
    `errors` (Exception: any, then named in the message too)."""
    try:
        yield
    except _Refused:
        raise
    except errors as exc:
        why = f"{type(exc).__name__}: {exc}" if errors is Exception else str(exc)
        raise bad(_short(f"{name}: {why}" if name else why, 300)) from None


def refusing(fn):
    """`fn`, raising nothing but the ValueError of a refused file."""

    @functools.wraps(fn)
    def refusing(*args):
        with field("", Exception):  # a damaged zip, a bare .npy, a missing file …
            return fn(*args)

    return refusing


def _fields(obj, name: str, keys) -> dict:
    """`obj`, a JSON object with exactly the fields `keys`."""
    if not isinstance(obj, dict):
        raise bad(f"{name} must be an object, got {_show(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise bad(f"missing {', '.join(f'{name}.{k}' for k in missing)}")
    extra = [k for k in obj if k not in keys]
    if extra:
        raise bad(f"{name}: unexpected field {_show(extra[0])}")
    return obj


def _integer(value, name: str, low: int, high: int | None = None) -> int:
    """`value`, a JSON integer in low … high."""
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"≥ {low}" if high is None else f"in {low} … {high}"
        raise bad(f"{name} must be an integer {bound}, got {_show(value)}")
    return value


def _choice(value, name: str, choices):
    if not (isinstance(value, str) and value in choices):
        raise bad(f"{name} must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _decimal(value, name: str, bound: int) -> int:
    """`value`, an integer in 0 … bound − 1 written in decimal digits."""
    if not (
        isinstance(value, str)
        and value.isascii()
        and value.isdecimal()
        and len(value) <= len(str(bound))
        and str(int(value)) == value
        and int(value) < bound
    ):
        raise bad(
            f"{name} must be a decimal integer below 2**{bound.bit_length() - 1} "
            f"in a string, got {_show(value)}"
        )
    return int(value)


def _optional(value, check, *args):
    return None if value is None else check(value, *args)


# -- the metadata --------------------------------------------------------------
def parse_meta(text: str) -> Model:
    """The record of metadata `text`, every field checked."""
    try:
        meta = json.loads(text)
    except RecursionError:
        raise bad("meta: nested too deeply") from None
    except ValueError as exc:
        raise bad(f"meta is not valid JSON: {_short(str(exc), 200)}") from None
    if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
        raise bad("no backprop header")
    version = meta.get("version")
    if type(version) is not int or version not in (1, FORMAT_VERSION):
        raise _Refused(
            f"path: model format version {_show(version)} is not "
            f"supported (this backprop reads versions 1 to {FORMAT_VERSION})"
        )
    fields: tuple[str, ...] = _META_FIELDS if version == 2 else _META_FIELDS_1
    if version == 2 and isinstance(meta, dict) and "dropout" in meta:
        fields += ("dropout",)
    _fields(meta, "meta", fields)
    sizes, activations = _parse_layers(meta["layers"])
    classes = meta["classes"]  # (their number is the network's to check)
    if classes is not None and not (
        isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    ):
        raise bad(f"meta.classes must be null or a list of class names, got {_show(classes)}")
    return Model(
        sizes,
        activations,
        _parse_loss(meta["loss"]),
        _choice(meta["dtype"], "meta.dtype", _DTYPES),
        _optional(meta["seed"], _integer, "meta.seed", 0),
        _optional(meta["n_threads"], _integer, "meta.n_threads", 1),
        classes,
        _parse_optimizer(meta["optimizer"]),
        _integer(meta["optimizer_steps"], "meta.optimizer_steps", 0, MAX_STEPS),
        _parse_rng(meta["rng"]),
        _parse_training(meta["training"]) if version == 2 else Training(),
        _optional(meta.get("dropout"), _parse_dropout, len(activations)),
    )


def _parse_dropout(meta, n_layers: int) -> DropoutState:
    """The network's dropout (see DropoutState) for its n_layers layers."""
    name = "meta.dropout"
    _fields(meta, name, _DROPOUT_FIELDS)
    rates = meta["rates"]
    if not (isinstance(rates, list) and len(rates) == n_layers):
        raise bad(
            f"{name}.rates must be a list of {n_layers} rates, one per layer, got {_show(rates)}"
        )
    for i, rate in enumerate(rates):
        if rate is None:
            continue
        if i == n_layers - 1 or type(rate) not in (int, float) or not 0 <= rate < 1:
            want = (
                "null (no dropout after the output layer)"
                if i == n_layers - 1
                else "null or a number in [0, 1)"
            )
            raise bad(f"{name}.rates[{i}] must be {want}, got {_show(rate)}")
    return DropoutState(
        [None if rate is None else float(rate) for rate in rates],
        _decimal(meta["seed"], f"{name}.seed", 2**64),
        _integer(meta["steps"], f"{name}.steps", 0, MAX_STEPS),
    )


def _parse_layers(layers):
    """The layer sizes (inputs, then each layer's outputs) and activations."""
    if not (isinstance(layers, list) and layers):
        raise bad(f"meta.layers must be a non-empty list, got {_show(layers)}")
    sizes, activations = [], []
    for i, layer in enumerate(layers):
        name = f"meta.layers[{i}]"
        elu = isinstance(layer, dict) and layer.get("activation") == "elu"
        _fields(layer, name, _ELU_FIELDS if elu else _LAYER_FIELDS)
        n_in = _integer(layer["n_in"], f"{name}.n_in", 1)
        if i and n_in != sizes[-1]:
            raise bad(
                f"{name}.n_in is {n_in}: it does not connect to the {sizes[-1]} "
                f"outputs of meta.layers[{i - 1}]"
            )
        sizes[i:] = [n_in, _integer(layer["n_out"], f"{name}.n_out", 1)]
        act = _choice(layer["activation"], f"{name}.activation", _ACTIVATIONS)
        slope = layer["negative_slope"]
        with field(f"{name}.negative_slope"):
            if act == "leaky_relu":
                activations.append(_activations.LeakyReLU(slope))
            elif not (type(slope) in (int, float) and slope == 0):
                raise ValueError(f"must be 0 for {act}, got {_show(slope)}")
            elif not elu:
                activations.append(_activations.get(act))
        if elu:
            with field(f"{name}.alpha"):
                activations.append(_activations.Elu(_real(layer["alpha"])))
    return sizes, activations


def _real(value):
    """`value`, if a JSON number a float holds (see _number); its range is
    for the parameter's own check to refuse."""
    if not _number(value):
        raise TypeError(f"must be a number, got {_show(value)}")
    return value


def _parse_loss(loss) -> _losses.Loss:
    """meta.loss: a loss's name, or for huber an object with its δ."""
    if isinstance(loss, dict):
        _fields(loss, "meta.loss", _HUBER_FIELDS)
        if loss["name"] != "huber":
            raise bad(f"meta.loss.name must be huber, got {_show(loss['name'])}")
        with field("meta.loss.delta"):
            return _losses.Huber(_real(loss["delta"]))
    name = _choice(loss, "meta.loss", _LOSSES)
    if name == "huber":
        raise bad('meta.loss: huber is written with its delta, {"name": "huber", "delta": …}')
    return _losses.get(name)


def _parse_optimizer(meta) -> _optimizers.Optimizer:
    _fields(meta, "meta.optimizer", ("class", "settings"))
    cls = _OPTIMIZERS[_choice(meta["class"], "meta.optimizer.class", _OPTIMIZERS)]
    name = "meta.optimizer.settings"
    settings = meta["settings"]
    if isinstance(settings, dict) and "decay_biases" not in settings:
        settings = dict(settings, decay_biases=True)  # (files from before it: biases decayed)
    settings = dict(_fields(settings, name, _SETTINGS[cls]))
    if "betas" in settings:
        betas = settings["betas"]
        if not (isinstance(betas, list) and len(betas) == 2):
            raise bad(f"{name}.betas must be a pair of numbers, got {_show(betas)}")
        settings["betas"] = tuple(betas)
    for key in ("nesterov", "decay_biases"):
        if key in settings and type(settings[key]) is not bool:
            raise bad(f"{name}.{key} must be true or false, got {_show(settings[key])}")
    with field(name):
        return cls(**settings)  # the constructor checks every value


def _parse_rng(meta) -> dict:
    name = "meta.rng"
    _fields(meta, name, ("bit_generator", "state", "has_uint32", "uinteger"))
    words = _fields(meta["state"], f"{name}.state", ("state", "inc"))
    return {
        "bit_generator": _choice(meta["bit_generator"], f"{name}.bit_generator", ("PCG64",)),
        "state": {k: _decimal(v, f"{name}.state.{k}", 2**128) for k, v in words.items()},
        "has_uint32": _integer(meta["has_uint32"], f"{name}.has_uint32", 0, 1),
        "uinteger": _integer(meta["uinteger"], f"{name}.uinteger", 0, 2**32 - 1),
    }


def _parse_training(meta) -> Training:
    name = "meta.training"
    _fields(meta, name, _TRAINING_FIELDS)
    callbacks = meta["callbacks"]
    if not isinstance(callbacks, dict) or len(callbacks) > _MAX_CALLBACKS:
        raise bad(f"{name}.callbacks must be an object of at most {_MAX_CALLBACKS} callbacks")
    members = 0
    parsed: dict[str, dict] = {}
    for key, state in callbacks.items():
        where = f"{name}.callbacks.{_short(key)}"
        if not _KEY.fullmatch(key):
            raise bad(f"{name}.callbacks: unexpected field {_show(key)} (not a callback's key)")
        if not isinstance(state, dict) or len(state) > _MAX_VALUES:
            raise bad(f"{where} must be an object of at most {_MAX_VALUES} values")
        parsed[key] = {}
        for item, value in state.items():
            if not _NAME.fullmatch(item):
                raise bad(f"{where}: unexpected field {_show(item)} (not a name)")
            if isinstance(value, dict):  # an array: the next member, in order
                _fields(value, f"{where}.{item}", ("array",))
                if value["array"] != f"training_{members}":
                    raise bad(
                        f"{where}.{item}.array must be 'training_{members}', "
                        f"got {_show(value['array'])}"
                    )
                value = ArrayOf(value["array"])
                members += 1
            elif not (value is None or type(value) in (bool, int, float, str)):
                raise bad(f"{where}.{item} must be a number, text, true, false or null")
            elif type(value) is float and not math.isfinite(value):
                raise bad(f"{where}.{item} must be finite, got {_show(value)}")
            elif (
                type(value) is int
                and abs(value) >= 2**63
                or (type(value) is str and len(value) > _MAX_TEXT)
            ):
                raise bad(f"{where}.{item} is out of range")
            parsed[key][item] = value
    epoch = _integer(meta["epoch"], f"{name}.epoch", 0, MAX_STEPS)
    run = _optional(meta["run"], _parse_run)
    if run is not None and not run["first"] <= epoch <= run["last"]:
        raise bad(
            f"{name}.epoch must be in the run's epochs {run['first']} … {run['last']}, got {epoch}"
        )
    position = None if run is None else run["position"]
    if position is not None and (
        position["epoch"] != epoch + 1 or position["rows"] > (run["rows"] or position["rows"])
    ):
        raise bad(
            f"{name}.run.position must be within epoch {epoch + 1} and its "
            f"{run['rows']} rows, got epoch {position['epoch']}, rows {position['rows']}"
        )
    if run is not None:  # the History holds one value of each figure per epoch trained
        done = epoch - run["first"]
        lengths = {key: len(values) for key, values in run["history"].items()}
        if (done and "loss" not in lengths) or any(n != done for n in lengths.values()):
            raise bad(
                f"{name}.run.history must hold {done} values of each figure (loss among "
                f"them) for the epochs trained, got {_short(str(lengths), 120)}"
            )
    return Training(
        epoch, _optional(meta["seed"], _integer, f"{name}.seed", 0, 2**62 - 1), parsed, run
    )


def _parse_run(meta) -> dict:
    name = "meta.training.run"
    _fields(meta, name, _RUN_FIELDS)
    first = _integer(meta["first"], f"{name}.first", 0, MAX_STEPS)
    last = _integer(meta["last"], f"{name}.last", first, MAX_STEPS)
    for flag in ("shuffle", "complete"):
        if type(meta[flag]) is not bool:
            raise bad(f"{name}.{flag} must be true or false, got {_show(meta[flag])}")
    history = meta["history"]
    if not isinstance(history, dict) or len(history) > _MAX_FIGURES:
        raise bad(f"{name}.history must be an object of at most {_MAX_FIGURES} figures")
    for key, values in history.items():
        if not (
            _NAME.fullmatch(key)
            and isinstance(values, list)
            and all(v is None or _number(v) for v in values)
        ):
            raise bad(f"{name}.history.{_short(key)} must be a list of numbers")
    return {
        "first": first,
        "last": last,
        "rows": _optional(meta["rows"], _integer, f"{name}.rows", 1),
        "batch_size": _integer(meta["batch_size"], f"{name}.batch_size", 1),
        "shuffle": meta["shuffle"],
        "complete": meta["complete"],
        "history": {
            k: [math.nan if v is None else float(v) for v in vs] for k, vs in history.items()
        },
        "every": _optional(meta["every"], _integer, f"{name}.every", 1),
        "position": _optional(meta["position"], _parse_position, last),
    }


def _number(value) -> bool:
    """Whether `value` is a JSON number a float holds (not an integer of
    hundreds of digits, which float() refuses)."""
    return type(value) is float or (type(value) is int and abs(value) < 2**63)


def _parse_position(meta, last: int) -> dict:
    """Where within an epoch a checkpoint was saved (fit's checkpoint_every)."""
    name = "meta.training.run.position"
    _fields(meta, name, ("epoch", "rows", "loss", "right"))
    for key in ("loss", "right"):
        value = meta[key]
        if not _number(value) or not math.isfinite(value):
            raise bad(f"{name}.{key} must be a finite number, got {_show(value)}")
    return {
        "epoch": _integer(meta["epoch"], f"{name}.epoch", 1, last),
        "rows": _integer(meta["rows"], f"{name}.rows", 1),
        "loss": float(meta["loss"]),
        "right": float(meta["right"]),
    }


# -- the arrays against the record ---------------------------------------------
def _check_names(model: Model, names) -> None:
    """Refuse unless `names` are the arrays (meta aside) that `model` keeps."""
    opt = model.optimizer
    expected = model.array_names
    keeps = f": {type(opt).__name__} keeps {opt.n_state} state array{'s' * (opt.n_state != 1)}"
    for name in expected:
        if name not in names:
            raise bad(f"missing {name}" + keeps * (name != "params"))
    for name in sorted(names):
        if name not in expected:
            raise bad(
                f"unexpected member {_short(repr(name))}"
                + keeps * name.startswith("optimizer_state_")
            )


def _check_array(model: Model, name: str, shape, dtype) -> None:
    """Refuse unless array `name` has the shape and dtype `model` gives it."""
    n = model.n_params
    if shape != (n,):
        of = f"layers of sizes {_short(str(model.sizes))}" if name == "params" else "the model"
        raise bad(f"{name}: shape {_short(str(shape))} does not fit the {n} weights of {of}")
    if getattr(dtype, "name", None) != model.dtype:  # (in either byte order)
        raise bad(f"{name}: dtype {dtype} in a {model.dtype} model")


def check_training(name: str, array: np.ndarray) -> None:
    """Refuse a callback's array (a copy in the network's dtype) unless finite."""
    if not _ops.all_finite(array):
        raise bad(f"{name} contains NaN or infinity")


def check_params(params: np.ndarray) -> None:
    """Refuse weights (in the network's own buffer) that are not all finite."""
    if not _ops.all_finite(params):
        raise bad("params: the weights contain NaN or infinity")


def check_state(optimizer: _optimizers.Optimizer, i: int, state: np.ndarray) -> None:
    """Refuse the optimizer's state buffer `i` (in the network's own
    buffer) unless finite, and ≥ 0 where it sums squares."""
    name = state_name(i)
    if not _ops.all_finite(state):
        raise bad(f"{name} contains NaN or infinity")
    squares = _SQUARES.get(type(optimizer), {})
    if i in squares and state.min() < 0:
        raise bad(
            f"{name}, {type(optimizer).__name__}'s {squares[i]}, must be ≥ 0; "
            f"it holds {state.min()}"
        )


def check(arrays: dict) -> Model:
    """The record of `arrays` (as `arrays_of` gives them), checked: the
    metadata, the names, and each array's shape and dtype."""
    meta = arrays.get("meta")
    if not (isinstance(meta, np.ndarray) and meta.shape == () and meta.dtype.kind == "U"):
        raise bad("meta must be text")
    model = parse_meta(str(meta))
    _check_names(model, [name for name in arrays if name != "meta"])
    for name in model.array_names:
        _check_array(model, name, np.shape(arrays[name]), getattr(arrays[name], "dtype", None))
    return model


# -- reading -------------------------------------------------------------------
def _header(zf: zipfile.ZipFile, name: str, file_size: int):
    """Array `name` (member name.npy) opened at its data, and its header's
    shape and dtype."""
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise bad(f"{name}: compression method {info.compress_type} is not supported")
    if info.compress_size > file_size:
        raise bad(f"{name}: claims {info.compress_size} bytes in a file of {file_size}")
    if info.file_size > max(_RATIO_FROM, _MAX_RATIO * info.compress_size):
        raise bad(
            f"{name}: declares {info.file_size} bytes compressed into "
            f"{info.compress_size}, more than {_MAX_RATIO}-fold"
        )
    with field(name, Exception):  # a damaged member
        fp = zf.open(info)
        version = _npy.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise bad(f"{name}: .npy format version {version} is not supported")
        read = _npy.read_array_header_1_0 if version == (1, 0) else _npy.read_array_header_2_0
        shape, _fortran, dtype = read(fp)  # (a 1-D array reads alike in either order)
    if dtype.hasobject:
        raise bad(f"{name} holds Python objects, which need a pickle (backprop never unpickles)")
    if fp.tell() + math.prod(shape) * dtype.itemsize != info.file_size:
        raise bad(
            f"{name}: {info.file_size} bytes do not match the header's "
            f"shape {_short(str(shape))} of {dtype}"
        )
    return fp, shape, dtype


def _data(name: str, fp, shape, dtype) -> np.ndarray:
    """The array of member `name`, read from `fp` (at its data)."""
    size = math.prod(shape) * dtype.itemsize
    with field(name, Exception):
        data = fp.read(size)
    if len(data) != size:
        raise bad(f"{name}: truncated")
    return np.frombuffer(data, dtype).reshape(shape)


@refusing
def read(path) -> tuple[Model, dict]:
    """The checked record of the model file at `path` (a path or a binary
    file) and its arrays (meta aside), read only once their checks pass."""
    with contextlib.ExitStack() as stack:
        fh = path if hasattr(path, "read") else stack.enter_context(open(path, "rb"))
        file_size = fh.seek(0, os.SEEK_END)
        try:
            zf = stack.enter_context(zipfile.ZipFile(fh))
        except zipfile.BadZipFile as exc:
            raise bad(f"not an .npz archive ({exc})") from None
        names = set()
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise bad(f"unexpected member {_short(repr(name))}: not an .npy array")
            if name[:-4] in names:
                raise bad(f"member {_short(repr(name))} appears twice")
            names.add(name[:-4])
        if "meta" not in names:
            raise bad("missing meta")
        if zf.getinfo("meta.npy").file_size > _META_BYTES:
            raise bad(f"meta: more than {_META_BYTES} bytes")
        fp, shape, dtype = _header(zf, "meta", file_size)
        if shape != () or dtype.kind != "U":
            raise bad(f"meta must be text, got shape {_short(str(shape))} of dtype {dtype}")
        model = parse_meta(str(_data("meta", fp, shape, dtype)))
        _check_names(model, names - {"meta"})
        headers = {name: _header(zf, name, file_size) for name in model.array_names}
        for name, (_, shape, dtype) in headers.items():
            _check_array(model, name, shape, dtype)
        return model, {name: _data(name, *h) for name, h in headers.items()}
