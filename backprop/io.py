"""Model files: one .npz holding everything needed to predict and to resume.

    meta                 JSON text: format version, layers, loss, dtype, seed,
                         threads, class names, the optimizer (its class and
                         settings) and its step count, the random generator's
                         state (the training position: the next epoch's shuffle)
    params               the flat parameter buffer
    optimizer_state_<i>  the optimizer's state buffers (momentum, moments …)

The loader's contract: `load` returns a network only for a file that holds
one as `save` writes it; anything else raises a ValueError naming the
member or the metadata field at fault.  It checks, in this order, and reads no array
data before the checks on its member pass:

1. the archive: .npy members only, each once, stored or deflated, each
   compressed within the file's size and declaring at most 100 times that
   (or 16 MiB, if more), the metadata at most 4 MiB;
2. the metadata: JSON with exactly the fields `save` writes, each of its
   type (an integer is a JSON integer, not a string, a boolean or a
   fraction) and in range; the optimizer's settings pass its constructor;
3. the members and their .npy headers against the metadata: one `params`
   of the layers' weight count and the model's dtype, as many
   `optimizer_state_<i>` of the same shape as the optimizer keeps, and
   nothing else; each member's size is its header's;
4. the values: weights and state finite, and the sums of squares
   (Adam's second moment, RMSProp's and AdaGrad's accumulators) ≥ 0.

So what loading allocates is bounded by the file's size.  A model file
holds numbers and text only (no pickle is ever read), so loading one never
runs code.  `save` writes a temporary file, fsyncs it and renames it over
the target, so a crash midway leaves the previous file whole; the file's
mode follows the umask, as for any file the user creates.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np
from numpy.lib import format as _npy

from . import _ops
from . import activations as _activations
from . import losses as _losses
from . import optimizers as _optimizers

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MAGIC = "backprop model"
_META_FIELDS = ("format", "version", "layers", "loss", "dtype", "seed", "n_threads",
                "classes", "optimizer", "optimizer_steps", "rng")
_LAYER_FIELDS = ("n_in", "n_out", "activation", "negative_slope")
_COMMON = ("lr", "l2", "weight_decay", "clip_norm")
_SETTINGS = {        # each optimizer's settings, as its constructor takes them
    _optimizers.SGD: _COMMON + ("momentum", "nesterov"),
    _optimizers.Adam: _COMMON + ("betas", "eps"),
    _optimizers.AdamW: _COMMON + ("betas", "eps"),
    _optimizers.RMSProp: _COMMON + ("rho", "eps"),
    _optimizers.AdaGrad: _COMMON + ("eps",),
}
_OPTIMIZERS = {cls.__name__: cls for cls in _SETTINGS}
_SQUARES = {         # the state arrays that sum squares, by index
    _optimizers.Adam: {1: "second moment"}, _optimizers.AdamW: {1: "second moment"},
    _optimizers.RMSProp: {0: "mean square"}, _optimizers.AdaGrad: {0: "sum of squares"},
}
_ACTIVATIONS = tuple(n for n in _activations.NAMES if _activations.get(n).name == n)
_LOSSES = tuple(n for n in _losses.NAMES if _losses.get(n).name == n)
_DTYPES = ("float32", "float64")
_META_BYTES = 4 << 20
_MAX_RATIO, _RATIO_FROM = 100, 16 << 20
_MAX_STEPS = 2 ** 62


def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def state_of(net) -> dict:
    """Everything about `net` as arrays: 'meta' (JSON text), 'params' and
    'optimizer_state_<i>' (copies).  What `save` writes and pickling uses:
    one snapshot, taken while no other thread can change the network."""
    with net.exclusive():
        return _snapshot(net)


def _snapshot(net) -> dict:
    opt = net.optimizer
    rng_state = net._rng.bit_generator.state
    settings = {k: getattr(opt, k) for k in _SETTINGS[type(opt)]}
    meta = {
        "format": _MAGIC, "version": FORMAT_VERSION,
        "layers": [{"n_in": la.n_in, "n_out": la.n_out, "activation": la.activation.name,
                    "negative_slope": la.activation.negative_slope} for la in net.layers],
        "loss": net.loss.name, "dtype": net.dtype.name, "seed": net.seed,
        "n_threads": net.n_threads,
        "classes": None if net.classes is None else [str(c) for c in net.classes],
        "optimizer": {"class": type(opt).__name__,
                      "settings": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in settings.items()}},
        "optimizer_steps": int(net.optimizer_steps),
        "rng": {"bit_generator": rng_state["bit_generator"],
                "state": {k: str(v) for k, v in rng_state["state"].items()},
                "has_uint32": int(rng_state["has_uint32"]),
                "uinteger": int(rng_state["uinteger"])},
    }
    arrays = {"meta": np.array(json.dumps(meta)), "params": net.params.copy()}
    for i, state in enumerate(net._opt_state[:opt.n_state]):
        arrays[f"optimizer_state_{i}"] = state.copy()
    return arrays


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


def save(net, path) -> str:
    """Write `net` to `path` (".npz" is added when missing); returns the path."""
    path = _npz_path(path)
    arrays = state_of(net)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".backprop-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~_umask())
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# -- refusals ------------------------------------------------------------------
class _Refused(ValueError):
    """A model file refused, with the reason."""


def _bad(why: str) -> _Refused:
    return _Refused(f"path: not a usable backprop model file: {why}")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value) -> str:
    """A JSON value, briefly, for a message."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return _short(repr(value))


@contextlib.contextmanager
def _field(name: str, errors=(ValueError, TypeError, OverflowError)):
    """Refuse the file, naming `name` (if any), when the block raises one of
    `errors` (Exception: any, then named in the message too)."""
    try:
        yield
    except _Refused:
        raise
    except errors as exc:
        why = f"{type(exc).__name__}: {exc}" if errors is Exception else str(exc)
        raise _bad(_short(f"{name}: {why}" if name else why, 300)) from None


def _refusing(fn):
    """`fn`, raising nothing but the ValueError of a refused file."""
    @functools.wraps(fn)
    def refusing(*args):
        with _field("", Exception):       # a damaged zip, a bare .npy, a missing file …
            return fn(*args)
    return refusing


def _fields(obj, name: str, keys) -> dict:
    """`obj`, a JSON object with exactly the fields `keys`."""
    if not isinstance(obj, dict):
        raise _bad(f"{name} must be an object, got {_show(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _bad(f"missing {', '.join(f'{name}.{k}' for k in missing)}")
    extra = [k for k in obj if k not in keys]
    if extra:
        raise _bad(f"{name}: unexpected field {_show(extra[0])}")
    return obj


def _integer(value, name: str, low: int, high: int | None = None) -> int:
    """`value`, a JSON integer in low … high."""
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"≥ {low}" if high is None else f"in {low} … {high}"
        raise _bad(f"{name} must be an integer {bound}, got {_show(value)}")
    return value


def _choice(value, name: str, choices):
    if not (isinstance(value, str) and value in choices):
        raise _bad(f"{name} must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _decimal(value, name: str, bound: int) -> int:
    """`value`, an integer in 0 … bound − 1 written in decimal digits."""
    if not (isinstance(value, str) and value.isascii() and value.isdecimal()
            and len(value) <= len(str(bound)) and str(int(value)) == value
            and int(value) < bound):
        raise _bad(f"{name} must be a decimal integer below 2**{bound.bit_length() - 1} "
                   f"in a string, got {_show(value)}")
    return int(value)


def _optional(value, check, *args):
    return None if value is None else check(value, *args)


# -- the metadata --------------------------------------------------------------
class _Model(NamedTuple):
    """What the metadata describes, checked."""
    sizes: list
    activations: list
    loss: str
    dtype: str
    seed: int | None
    n_threads: int | None
    classes: list | None
    optimizer: _optimizers.Optimizer
    steps: int
    rng: dict

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes, self.sizes[1:]))


def _parse_meta(text: str) -> _Model:
    try:
        meta = json.loads(text)
    except RecursionError:
        raise _bad("meta: nested too deeply") from None
    except ValueError as exc:
        raise _bad(f"meta is not valid JSON: {_short(str(exc), 200)}") from None
    if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
        raise _bad("no backprop header")
    version = meta.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _Refused(f"path: model format version {_show(version)} is not "
                       f"supported (this backprop reads version {FORMAT_VERSION})")
    _fields(meta, "meta", _META_FIELDS)
    sizes, activations = _parse_layers(meta["layers"])
    classes = meta["classes"]          # (their number is the network's to check)
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, str) for c in classes)):
        raise _bad(f"meta.classes must be null or a list of class names, got "
                   f"{_show(classes)}")
    return _Model(
        sizes, activations, _choice(meta["loss"], "meta.loss", _LOSSES),
        _choice(meta["dtype"], "meta.dtype", _DTYPES),
        _optional(meta["seed"], _integer, "meta.seed", 0),
        _optional(meta["n_threads"], _integer, "meta.n_threads", 1), classes,
        _parse_optimizer(meta["optimizer"]),
        _integer(meta["optimizer_steps"], "meta.optimizer_steps", 0, _MAX_STEPS),
        _parse_rng(meta["rng"]))


def _parse_layers(layers):
    """The layer sizes (inputs, then each layer's outputs) and activations."""
    if not (isinstance(layers, list) and layers):
        raise _bad(f"meta.layers must be a non-empty list, got {_show(layers)}")
    sizes, activations = [], []
    for i, layer in enumerate(layers):
        name = f"meta.layers[{i}]"
        _fields(layer, name, _LAYER_FIELDS)
        n_in = _integer(layer["n_in"], f"{name}.n_in", 1)
        if i and n_in != sizes[-1]:
            raise _bad(f"{name}.n_in is {n_in}: it does not connect to the {sizes[-1]} "
                       f"outputs of meta.layers[{i - 1}]")
        sizes[i:] = [n_in, _integer(layer["n_out"], f"{name}.n_out", 1)]
        act = _choice(layer["activation"], f"{name}.activation", _ACTIVATIONS)
        slope = layer["negative_slope"]
        with _field(f"{name}.negative_slope"):
            if act == "leaky_relu":
                activations.append(_activations.LeakyReLU(slope))
            elif type(slope) in (int, float) and slope == 0:
                activations.append(_activations.get(act))
            else:
                raise ValueError(f"must be 0 for {act}, got {_show(slope)}")
    return sizes, activations


def _parse_optimizer(meta) -> _optimizers.Optimizer:
    _fields(meta, "meta.optimizer", ("class", "settings"))
    cls = _OPTIMIZERS[_choice(meta["class"], "meta.optimizer.class", _OPTIMIZERS)]
    name = "meta.optimizer.settings"
    settings = dict(_fields(meta["settings"], name, _SETTINGS[cls]))
    if "betas" in settings:
        betas = settings["betas"]
        if not (isinstance(betas, list) and len(betas) == 2):
            raise _bad(f"{name}.betas must be a pair of numbers, got {_show(betas)}")
        settings["betas"] = tuple(betas)
    if "nesterov" in settings and type(settings["nesterov"]) is not bool:
        raise _bad(f"{name}.nesterov must be true or false, got {_show(settings['nesterov'])}")
    with _field(name):
        return cls(**settings)            # the constructor checks every value


def _parse_rng(meta) -> dict:
    name = "meta.rng"
    _fields(meta, name, ("bit_generator", "state", "has_uint32", "uinteger"))
    words = _fields(meta["state"], f"{name}.state", ("state", "inc"))
    return {"bit_generator": _choice(meta["bit_generator"], f"{name}.bit_generator", ("PCG64",)),
            "state": {k: _decimal(v, f"{name}.state.{k}", 2 ** 128) for k, v in words.items()},
            "has_uint32": _integer(meta["has_uint32"], f"{name}.has_uint32", 0, 1),
            "uinteger": _integer(meta["uinteger"], f"{name}.uinteger", 0, 2 ** 32 - 1)}


def _array_names(model: _Model) -> list:
    return ["params"] + [f"optimizer_state_{i}" for i in range(model.optimizer.n_state)]


def _check_names(model: _Model, names) -> None:
    """Refuse unless `names` are the arrays (meta aside) that `model` keeps."""
    opt = model.optimizer
    expected = _array_names(model)
    keeps = f": {type(opt).__name__} keeps {opt.n_state} state array{'s' * (opt.n_state != 1)}"
    for name in expected:
        if name not in names:
            raise _bad(f"missing {name}" + keeps * (name != "params"))
    for name in sorted(names):
        if name not in expected:
            raise _bad(f"unexpected member {_short(repr(name))}"
                       + keeps * name.startswith("optimizer_state_"))


def _check_array(model: _Model, name: str, shape, dtype) -> None:
    """Refuse unless array `name` has the shape and dtype `model` gives it."""
    n = model.n_params
    if shape != (n,):
        of = f"layers of sizes {_short(str(model.sizes))}" if name == "params" else "the model"
        raise _bad(f"{name}: shape {_short(str(shape))} does not fit the {n} weights of {of}")
    if getattr(dtype, "name", None) != model.dtype:       # (in either byte order)
        raise _bad(f"{name}: dtype {dtype} in a {model.dtype} model")


# -- reading -------------------------------------------------------------------
def _header(zf: zipfile.ZipFile, name: str, file_size: int):
    """Array `name` (member name.npy) opened at its data, and its header's
    shape and dtype."""
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _bad(f"{name}: compression method {info.compress_type} is not supported")
    if info.compress_size > file_size:
        raise _bad(f"{name}: claims {info.compress_size} bytes in a file of {file_size}")
    if info.file_size > max(_RATIO_FROM, _MAX_RATIO * info.compress_size):
        raise _bad(f"{name}: declares {info.file_size} bytes compressed into "
                   f"{info.compress_size}, more than {_MAX_RATIO}-fold")
    with _field(name, Exception):         # a damaged member
        fp = zf.open(info)
        version = _npy.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise _bad(f"{name}: .npy format version {version} is not supported")
        read = _npy.read_array_header_1_0 if version == (1, 0) else _npy.read_array_header_2_0
        shape, _fortran, dtype = read(fp)   # (a 1-D array reads alike in either order)
    if dtype.hasobject:
        raise _bad(f"{name} holds Python objects, which need a pickle (backprop "
                   "never unpickles)")
    if fp.tell() + math.prod(shape) * dtype.itemsize != info.file_size:
        raise _bad(f"{name}: {info.file_size} bytes do not match the header's "
                   f"shape {_short(str(shape))} of {dtype}")
    return fp, shape, dtype


def _data(name: str, fp, shape, dtype) -> np.ndarray:
    """The array of member `name`, read from `fp` (at its data)."""
    size = math.prod(shape) * dtype.itemsize
    with _field(name, Exception):
        data = fp.read(size)
    if len(data) != size:
        raise _bad(f"{name}: truncated")
    return np.frombuffer(data, dtype).reshape(shape)


@_refusing
def load(path):
    """Read a network written by `save` (or `Sequential.save`) from a path or
    a binary file: it predicts as the saved one did and resumes training
    where that stopped.  Any other file raises a ValueError saying why."""
    with contextlib.ExitStack() as stack:
        fh = path if hasattr(path, "read") else stack.enter_context(open(path, "rb"))
        file_size = fh.seek(0, os.SEEK_END)
        try:
            zf = stack.enter_context(zipfile.ZipFile(fh))
        except zipfile.BadZipFile as exc:
            raise _bad(f"not an .npz archive ({exc})") from None
        names = set()
        for name in zf.namelist():
            if not name.endswith(".npy"):
                raise _bad(f"unexpected member {_short(repr(name))}: not an .npy array")
            if name[:-4] in names:
                raise _bad(f"member {_short(repr(name))} appears twice")
            names.add(name[:-4])
        if "meta" not in names:
            raise _bad("missing meta")
        if zf.getinfo("meta.npy").file_size > _META_BYTES:
            raise _bad(f"meta: more than {_META_BYTES} bytes")
        fp, shape, dtype = _header(zf, "meta", file_size)
        if shape != () or dtype.kind != "U":
            raise _bad(f"meta must be text, got shape {_short(str(shape))} of dtype {dtype}")
        model = _parse_meta(str(_data("meta", fp, shape, dtype)))
        _check_names(model, names - {"meta"})
        headers = {name: _header(zf, name, file_size) for name in _array_names(model)}
        for name, (_, shape, dtype) in headers.items():
            _check_array(model, name, shape, dtype)
        return _build(model, {name: _data(name, *h) for name, h in headers.items()})


@_refusing
def from_state(arrays: dict):
    """The network that `state_of` described."""
    meta = arrays.get("meta")
    if not (isinstance(meta, np.ndarray) and meta.shape == () and meta.dtype.kind == "U"):
        raise _bad("meta must be text")
    model = _parse_meta(str(meta))
    _check_names(model, [name for name in arrays if name != "meta"])
    for name in _array_names(model):
        _check_array(model, name, np.shape(arrays[name]), getattr(arrays[name], "dtype", None))
    return _build(model, arrays)


def _build(model: _Model, arrays: dict):
    """The network `model` describes, with the weights and state of `arrays`
    (checked against it)."""
    from .layers import Dense
    from .network import Sequential

    sizes, dtype = model.sizes, model.dtype
    with _field("meta"):
        net = Sequential(*[Dense(a, b, act, init="zeros", dtype=dtype)
                           for a, b, act in zip(sizes, sizes[1:], model.activations)],
                         loss=model.loss, dtype=dtype, seed=model.seed)
    with _field("meta.n_threads"):
        net.n_threads = model.n_threads
    net.params[...] = arrays["params"]
    if not _ops.all_finite(net.params):
        raise _bad("params: the weights contain NaN or infinity")
    opt = net.optimizer = model.optimizer
    squares = _SQUARES.get(type(opt), {})
    for i, mine in enumerate(net._opt_state[:opt.n_state]):
        name = f"optimizer_state_{i}"
        mine[...] = arrays[name]
        if not _ops.all_finite(mine):
            raise _bad(f"{name} contains NaN or infinity")
        if i in squares and mine.min() < 0:
            raise _bad(f"{name}, {type(opt).__name__}'s {squares[i]}, must be ≥ 0; "
                       f"it holds {mine.min()}")
    net._apply_optimizer(steps=model.steps)
    with _field("meta.rng"):
        net._rng.bit_generator.state = model.rng
    with _field("meta.classes"):
        net.classes = model.classes
    return net
