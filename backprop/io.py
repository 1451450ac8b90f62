"""Model files: one .npz holding everything needed to predict and to resume.

    meta                 JSON text: format version, layers, loss, dtype, seed,
                         threads, class names, the optimizer (its class and
                         settings) and its step count, the random generator's
                         state (the training position: the next epoch's shuffle),
                         and for a network with dropout its rates, the masks'
                         seed and the passes drawn (a field only such files hold)
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
   fraction) and in range; the optimizer's settings pass its constructor
   (a file from before decay_biases, which lacks it, means True);
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

from ._format import FORMAT_VERSION
from ._format import write as _write
from .network import from_state, load, state_of  # noqa: F401  (from_state: for pickles)

__all__ = ["save", "load", "FORMAT_VERSION"]

# The format itself (its fields, checks, reading and the atomic write) is
# backprop._format's; turning a network into its arrays and back is
# Sequential's (backprop.network: state_of, from_state, load).


def save(net, path) -> str:
    """Write `net` to `path` (".npz" is added when missing); returns the path."""
    return _write(path, state_of(net))
