"""Model files: one .npz holding everything needed to predict and to resume.

    meta                 JSON text: format version, layers, loss, dtype, the
                         optimizer (its class and settings) and its step
                         count, the random generator's state (the training
                         position: the next epoch's shuffle)
    params               the flat parameter buffer
    optimizer_state_<i>  the optimizer's state buffers (momentum, moments …)

Reading uses numpy's loader with allow_pickle=False and json: a model file
can hold numbers and text only, and loading one never runs code.  Writing
goes to a temporary file that then replaces the target, so a crash midway
leaves the previous file whole; the file's mode follows the umask, as for
any file the user creates.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import activations as _activations
from . import optimizers as _optimizers

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MAGIC = "backprop model"
_OPTIMIZERS = {cls.__name__: cls for cls in (_optimizers.SGD, _optimizers.Adam,
                                             _optimizers.AdamW, _optimizers.RMSProp,
                                             _optimizers.AdaGrad)}


def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def state_of(net) -> dict:
    """Everything about `net` as arrays: 'meta' (JSON text), 'params' and
    'optimizer_state_<i>' (copies).  What `save` writes and pickling uses."""
    opt = net.optimizer
    rng_state = net._rng.bit_generator.state
    meta = {
        "format": _MAGIC, "version": FORMAT_VERSION,
        "layers": [{"n_in": la.n_in, "n_out": la.n_out, "activation": la.activation.name,
                    "negative_slope": la.activation.negative_slope} for la in net.layers],
        "loss": net.loss.name, "dtype": net.dtype.name, "seed": net.seed,
        "n_threads": net.n_threads,
        "classes": None if net.classes is None else [str(c) for c in net.classes],
        "optimizer": {"class": type(opt).__name__,
                      "settings": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in vars(opt).items()}},
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


def _bad(why: str):
    return ValueError(f"path: not a usable backprop model file: {why}")


def load(path):
    """Read a network written by `save` (or `Sequential.save`): it predicts
    as the saved one did and resumes training where that stopped."""
    try:
        with np.load(path, allow_pickle=False) as f:
            names = set(f.files)
            if not {"meta", "params"} <= names:
                raise _bad(f"missing {', '.join(sorted({'meta', 'params'} - names))}")
            arrays = {name: f[name] for name in names
                      if name in ("meta", "params") or name.startswith("optimizer_state_")}
    except Exception as exc:        # a damaged zip, a bare .npy, a missing file …
        if isinstance(exc, ValueError) and str(exc).startswith("path:"):
            raise
        if "pickle" in str(exc):            # not an archive: numpy would have to unpickle it
            raise _bad("not an .npz archive of arrays (backprop never unpickles)") from None
        raise _bad(str(exc)) from None
    return from_state(arrays)


def from_state(arrays: dict):
    """The network that `state_of` described."""
    from .layers import Dense
    from .network import Sequential

    params = arrays["params"]
    states = [arrays[n] for n in sorted(arrays) if n.startswith("optimizer_state_")]
    try:
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
            raise _bad("no backprop header")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"path: model format version {meta.get('version')!r} is not "
                             f"supported (this backprop reads version {FORMAT_VERSION})")
        layers = meta["layers"]
        sizes = [int(layers[0]["n_in"])] + [int(la["n_out"]) for la in layers]
        expected = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        if min(sizes) < 1 or params.ndim != 1 or params.size != expected:
            raise _bad(f"{params.size} weights do not fit layers of sizes {sizes}")
        dtype = meta["dtype"]
        if params.dtype.name != dtype:
            raise _bad(f"weights of dtype {params.dtype} in a {dtype} model")
        built = []
        for i, la in enumerate(layers):
            if i and int(la["n_in"]) != sizes[i]:
                raise _bad(f"layer {i} does not connect")
            act = (_activations.LeakyReLU(float(la["negative_slope"]))
                   if la["activation"] == "leaky_relu" else _activations.get(la["activation"]))
            built.append(Dense(sizes[i], sizes[i + 1], act, init="zeros", dtype=dtype))
        net = Sequential(*built, loss=meta["loss"], dtype=dtype, seed=meta.get("seed"),
                         n_threads=meta.get("n_threads"))
        net.params[...] = params
        classes = meta.get("classes")
        if classes is not None and (not isinstance(classes, list) or len(classes) != sizes[-1]):
            raise _bad("the class names do not fit the output layer")
        net.classes = classes
        opt_meta = meta["optimizer"]
        cls = _OPTIMIZERS[opt_meta["class"]]
        settings = dict(opt_meta["settings"])
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        opt = cls(**settings)                   # the constructor checks every value
        if len(states) != opt.n_state or any(s.shape != params.shape or s.dtype != params.dtype
                                             for s in states):
            raise _bad("the optimizer's state does not fit the model")
        net.optimizer = opt
        for mine, saved in zip(net._opt_state, states):
            mine[...] = saved
        net._engine.set_optimizer(**opt.settings(), state=net._opt_state[:opt.n_state],
                                  steps=int(meta["optimizer_steps"]))
        rng = meta["rng"]
        net._rng.bit_generator.state = {
            "bit_generator": rng["bit_generator"],
            "state": {k: int(v) for k, v in rng["state"].items()},
            "has_uint32": int(rng["has_uint32"]), "uinteger": int(rng["uinteger"])}
    except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as exc:
        raise _bad(f"{type(exc).__name__}: {exc}") from None
    return net
