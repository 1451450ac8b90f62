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

import numpy as np  # noqa: F401  (io.np: where callers and tests reach numpy's savez)

from . import _format
from ._format import FORMAT_VERSION

__all__ = ["save", "load", "FORMAT_VERSION"]

# The format itself (its fields, checks, reading and the atomic write) is
# backprop._format's; here a network becomes its arrays and back.


def state_of(net) -> dict:
    """Everything about `net` as arrays: 'meta' (JSON text), 'params' and
    'optimizer_state_<i>' (copies).  What `save` writes and pickling uses:
    one snapshot, taken while no other thread can change the network."""
    with net.exclusive():
        return _snapshot(net)


def _snapshot(net) -> dict:
    opt = net.optimizer
    model = _format.Model(
        sizes=[net.n_inputs] + [layer.n_out for layer in net.layers],
        activations=[layer.activation for layer in net.layers],
        loss=net.loss.name, dtype=net.dtype.name, seed=net.seed,
        n_threads=net.n_threads, classes=net.classes, optimizer=opt,
        steps=int(net.optimizer_steps), rng=net._rng.bit_generator.state)
    return _format.arrays_of(model, net.params, net._opt_state[:opt.n_state])


def save(net, path) -> str:
    """Write `net` to `path` (".npz" is added when missing); returns the path."""
    return _format.write(path, state_of(net))


@_format.refusing
def load(path):
    """Read a network written by `save` (or `Sequential.save`) from a path or
    a binary file: it predicts as the saved one did and resumes training
    where that stopped.  Any other file raises a ValueError saying why."""
    return _build(*_format.read(path))


@_format.refusing
def from_state(arrays: dict):
    """The network that `state_of` described."""
    return _build(_format.check(arrays), arrays)


def _build(model: _format.Model, arrays: dict):
    """The network `model` describes, with the weights and state of `arrays`
    (checked against it)."""
    from .layers import Dense
    from .network import Sequential

    sizes, dtype = model.sizes, model.dtype
    with _format.field("meta"):
        net = Sequential(*[Dense(a, b, act, init="zeros", dtype=dtype)
                           for a, b, act in zip(sizes, sizes[1:], model.activations)],
                         loss=model.loss, dtype=dtype, seed=model.seed)
    with _format.field("meta.n_threads"):
        net.n_threads = model.n_threads
    net.params[...] = arrays["params"]
    _format.check_params(net.params)
    opt = net.optimizer = model.optimizer
    for i, mine in enumerate(net._opt_state[:opt.n_state]):
        mine[...] = arrays[_format.state_name(i)]
        _format.check_state(opt, i, mine)
    net._apply_optimizer(steps=model.steps)
    with _format.field("meta.rng"):
        net._rng.bit_generator.state = model.rng
    with _format.field("meta.classes"):
        net.classes = model.classes
    return net
