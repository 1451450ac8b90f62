"""The dense (fully connected) layer.

    forward:   z = x @ W + b ;  a = f(z)
    backward:  δ = ∂L/∂a ⊙ f′(z) ;  dW = xᵀ @ δ ;  db = Σ_rows δ ;  ∂L/∂x = δ @ Wᵀ

Both directions run in the compiled core (one BLAS product, then bias and
activation in one pass; the derivative multiplied in in one pass, then two
BLAS products and one reduction).

>>> import numpy as np, backprop as bp
>>> layer = bp.Dense(2, 3, activation="tanh", seed=0)
>>> a = layer.forward(np.array([0.5, -1.0]))      # one sample → shape (3,)
>>> dx = layer.backward(np.ones(3))              # fills layer.dW, layer.db
>>> layer.dW.shape, dx.shape
((2, 3), (2,))
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _ops, initializers
from . import activations as _activations
from ._engine import Guard
from ._validation import as_batch, as_float_array, check_dtype, check_int, check_overflow
from .layout import Layout

__all__ = ["Dense"]


def _fixed(name: str, doc: str) -> property:
    """A read-only attribute: what the layer was built with."""
    return property(operator.attrgetter("_" + name), doc=doc)


class Dense:
    """A fully connected layer: a = f(x @ W + b).

    Parameters
    ----------
    n_in, n_out : int
        Inputs and outputs (units).  `W` has shape (n_in, n_out), `b` (n_out,).
    activation : str or Activation
        identity, sigmoid, tanh, relu, leaky_relu, softmax, step, exp, gelu,
        gelu_tanh, silu (swish), softplus, elu or selu, or an Activation such
        as ``activations.LeakyReLU(0.2)`` or ``activations.Elu(0.5)``.
    init : str, optional
        Weight initialisation (see `backprop.initializers`); by default he for
        relu/leaky_relu and xavier otherwise.  Biases start at 0.
    seed : int or numpy.random.Generator, optional
        Seeds the initial weights.  Inside a `Sequential` with a seed of its
        own, layers without a seed are drawn from the network's generator.
    dtype : 'float64' (default) or 'float32'

    The sizes, activation, init and dtype are fixed at construction.  A
    layer belongs to at most one Sequential at a time; inside one, its W, b,
    dW and db are views of the network's flat buffers, and every call on it
    counts as a call on the network (see `Sequential.exclusive`).
    """

    n_in = _fixed("n_in", "Inputs of the layer.")
    n_out = _fixed("n_out", "Outputs (units) of the layer.")
    activation = _fixed("activation", "The Activation f of a = f(x @ W + b).")
    init = _fixed("init", "The weight initialisation scheme.")
    seed = _fixed(
        "seed", "The seed of the initial weights (None: drawn by the network, or unseeded)."
    )
    dtype = _fixed("dtype", "The layer's float dtype.")
    dW = _fixed("dW", "∂L/∂W from the last backward (None before the first).")
    db = _fixed("db", "∂L/∂b from the last backward (None before the first).")

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str | _activations.Activation = "identity",
        *,
        init: str | None = None,
        seed: int | np.random.Generator | None = None,
        dtype: str | np.dtype = "float64",
    ):
        self._n_in = check_int(n_in, "n_in")
        self._n_out = check_int(n_out, "n_out")
        self._activation = _activations.get(activation)
        self._init = initializers.check_init(
            init if init is not None else self._activation.default_init
        )
        self._dtype = check_dtype(dtype)
        self._seed = seed
        self._W = np.zeros((self._n_in, self._n_out), self._dtype)
        self._b = np.zeros(self._n_out, self._dtype)
        self._dW: np.ndarray | None = None
        self._db: np.ndarray | None = None
        self._x: np.ndarray | None = None  # the last forward's input …
        self._a: np.ndarray | None = None  # … and output
        self._z: np.ndarray | None = None  # … and z, if f′ needs it (activation.keeps_z)
        self._single = False
        self._guard = Guard()  # the network's, once in one
        self._owner: weakref.ref | None = None  # a weak reference to that network
        self.reset_parameters(np.random.default_rng(seed))

    def __repr__(self) -> str:
        return (
            f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r}, "
            f"dtype={self.dtype.name!r})"
        )

    # -- parameters ----------------------------------------------------------
    @property
    def W(self) -> np.ndarray:
        """Weights, shape (n_in, n_out)."""
        return self._W

    @W.setter
    def W(self, value: ArrayLike) -> None:
        value = self._checked(value, "W", (self.n_in, self.n_out))
        with self._guard:
            self._W[...] = value

    @property
    def b(self) -> np.ndarray:
        """Biases, shape (n_out,)."""
        return self._b

    @b.setter
    def b(self, value: ArrayLike) -> None:
        value = self._checked(value, "b", (self.n_out,))
        with self._guard:
            self._b[...] = value

    def _checked(self, value, name, shape):
        arr = as_float_array(value, name, self.dtype, ndims=(len(shape),))
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        return arr

    @property
    def n_params(self) -> int:
        return self.n_in * self.n_out + self.n_out

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Draw W by the layer's init scheme from `rng`; set b to 0."""
        W = initializers.initialize(self.init, self.n_in, self.n_out, rng)
        with self._guard:
            self._W[...] = W
            self._b[...] = 0

    def _bind(self, network, guard, W, b, dW, db) -> None:
        """Join `network`: move the parameters and gradients into the given
        views of its flat buffers (keeping their values) and share its guard."""
        with self._guard:
            W[...] = self._W
            b[...] = self._b
            self._W, self._b, self._dW, self._db = W, b, dW, db
            self._x = self._a = self._z = None
        self._guard, self._owner = guard, weakref.ref(network)

    @property
    def output(self) -> np.ndarray | None:
        """a = f(z) of the last forward, as a batch (rows, n_out); None before
        the first."""
        return self._a

    @property
    def preactivation(self) -> np.ndarray | None:
        """z = x @ W + b of the last forward, as a batch (rows, n_out), kept
        only when the activation's derivative needs it (`activation.keeps_z`:
        gelu, gelu_tanh, silu); None otherwise."""
        return self._z

    # -- forward and backward -----------------------------------------------
    def forward(self, x: ArrayLike) -> np.ndarray:
        """a = f(x @ W + b) for one sample (n_in,) or a batch (rows, n_in)."""
        x2, single = as_batch(x, "x", self._dtype, self._n_in)
        a = np.empty((x2.shape[0], self._n_out), self._dtype)
        act = self._activation
        z = np.empty_like(a) if act.keeps_z else None
        with self._guard:
            _ops.dense_forward(a, x2, self._W, self._b, act.code, act.parameter, z)
            check_overflow(
                a,
                "x",
                "the layer's outputs overflow",
                x2,
                "scale the inputs down",
                "use dtype='float64'",
            )
            self._x, self._a, self._z, self._single = x2, a, z, single
        return a[0] if single else a

    __call__ = forward

    def backward(self, grad: ArrayLike) -> np.ndarray:
        """Backpropagate grad = ∂L/∂a of the last forward.

        Sets `dW` and `db` (∂L/∂W, ∂L/∂b) and returns ∂L/∂x, shaped like the
        forward's input.
        """
        with self._guard:
            self.activation.require_gradient(" (layer activation)")
            g = self._like_output(grad, "grad")
            delta = np.empty_like(g)
            _ops.act_backward(
                delta, g, self._a, self.activation.code, self.activation.parameter, self._z
            )
            dx = self._dense_backward(delta, need_dx=True)
        assert dx is not None
        return dx[0] if self._single else dx

    def backward_delta(self, delta: ArrayLike, need_dx: bool = True) -> np.ndarray | None:
        """Given δ = ∂L/∂z (rows, n_out) of the last forward, set dW and db
        and return ∂L/∂x (rows, n_in) (or None when need_dx is False)."""
        with self._guard:
            return self._dense_backward(self._like_output(delta, "delta"), need_dx)

    def _like_output(self, value, name: str) -> np.ndarray:
        """`value` (∂L/∂a or ∂L/∂z of the last forward) as a (rows, n_out)
        array, held against that forward: the one place where a backward
        call is checked against the forward it follows."""
        if self._a is None:
            raise RuntimeError(f"{name}: call forward(x) before backward")
        arr = as_float_array(value, name, self.dtype)
        shape = self._a.shape
        if arr.shape != shape and not (self._single and arr.shape == shape[1:]):
            want = shape[1:] if self._single else shape
            raise ValueError(
                f"{name} must have the shape of the last forward's output "
                f"{want}, got {np.shape(value)}"
            )
        return arr.reshape(shape)

    def _dense_backward(self, delta: np.ndarray, need_dx: bool) -> np.ndarray | None:
        if self._dW is None:
            self._dW, self._db = np.zeros_like(self._W), np.zeros_like(self._b)
        dx = np.empty_like(self._x) if need_dx else None
        _ops.dense_backward(self._dW, self._db, delta, self._x, self._W, dx)
        return dx

    def __reduce__(self):
        # Pickling and copy.copy/deepcopy give an independent standalone
        # layer, as copy() does: never one on another network's buffers, one
        # that belongs to that network, or one whose guard is held.
        with self._guard:
            return _rebuilt, (
                self.n_in,
                self.n_out,
                self.activation,
                self.init,
                self.seed,
                self.dtype.name,
                self._W.copy(),
                self._b.copy(),
            )

    def copy(self, dtype: str | np.dtype | None = None) -> Dense:
        """An independent copy, optionally in another float dtype."""
        new = Dense(
            self.n_in,
            self.n_out,
            self.activation,
            init=self.init,
            seed=self.seed,
            dtype=self.dtype if dtype is None else dtype,
        )
        with self._guard:
            new._W[...] = self._W
            new._b[...] = self._b
        return new


def join(
    layers: Sequence[Dense], network, guard, layout: Layout, params: np.ndarray, grads: np.ndarray
) -> None:
    """Make `layers` the layers of `network`: each layer's W and b (and dW,
    db) become views into the flat buffers `params` and `grads` (keeping
    their values), placed by `layout`, and the layers share `guard`.  A layer
    still in another live network is refused: its weights live in that
    network's buffer."""
    for i, layer in enumerate(layers):
        owner = layer._owner() if layer._owner is not None else None
        if owner is not None and owner is not network:
            raise ValueError(
                f"layers[{i}] already belongs to another Sequential: its "
                "weights live in that network's buffer; give this one "
                "a copy (layer.copy())"
            )
    for layer, (W, b), (dW, db) in zip(layers, layout.views(params), layout.views(grads)):
        layer._bind(network, guard, W, b, dW, db)


def _rebuilt(n_in, n_out, activation, init, seed, dtype, W, b) -> Dense:
    """An unpickled or copied Dense (see Dense.__reduce__)."""
    layer = Dense(n_in, n_out, activation, init=init, seed=seed, dtype=dtype)
    layer.W, layer.b = W, b
    return layer
