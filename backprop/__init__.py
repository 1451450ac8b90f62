"""backprop: a neural-network training core in compiled Cython.

Dense layers, activations and their derivatives, losses, backpropagation and
gradient descent run in compiled code on numpy buffers; this package is the
thin Python layer over them.

>>> import backprop as bp
>>> X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True)
>>> net = bp.Sequential(bp.Dense(64, 32, activation="relu"),
...                     bp.Dense(32, 10, activation="softmax"),
...                     loss="cross_entropy", dtype="float32", seed=0)
>>> history = net.fit(X_train, y_train, epochs=30, batch_size=32, lr=0.1)
>>> net.evaluate(X_test, y_test)["accuracy"] > 0.95
True
"""

from ._version import __version__

try:
    from . import _engine, _ops  # noqa: F401  (the compiled core)
except ImportError as exc:  # pragma: no cover - only in an unbuilt source tree
    raise ImportError(
        "backprop's compiled core is missing: this looks like the source folder, "
        "not an installed package. Install it with `pip install .` and run from "
        "another directory, or build in place with "
        "`python setup.py build_ext --inplace`."
    ) from exc

from . import (
    _kernels,  # noqa: F401  (checks BACKPROP_KERNELS)
    activations,
    callbacks,
    datasets,
    initializers,
    io,  # noqa: F401  (bp.io: model files' state_of, from_state, save)
    losses,
    optimizers,
)
from ._threads import blas_info, get_num_threads, num_threads, set_num_threads
from .gradcheck import GradcheckResult, gradcheck
from .layers import Dense, Dropout
from .network import History, Sequential, load
from .optimizers import SGD, AdaGrad, Adam, AdamW, RMSProp

__all__ = [
    "Dense",
    "Dropout",
    "Sequential",
    "History",
    "load",
    "gradcheck",
    "SGD",
    "Adam",
    "AdamW",
    "RMSProp",
    "AdaGrad",
    "optimizers",
    "callbacks",
    "GradcheckResult",
    "activations",
    "losses",
    "initializers",
    "datasets",
    "get_num_threads",
    "set_num_threads",
    "num_threads",
    "blas_info",
    "__version__",
]
