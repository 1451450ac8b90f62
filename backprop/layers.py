"""The dense (fully connected) layer, and dropout.

    forward:   z = x @ W + b ;  a = f(z)
    backward:  δ = ∂L/∂a ⊙ f′(z) ;  dW = xᵀ @ δ ;  db = Σ_rows δ ;  ∂L/∂x = δ @ Wᵀ

Both directions run in the compiled core (one BLAS product, then bias and
activation in one pass; the derivative multiplied in in one pass, then two
BLAS products and one reduction).

    dropout, in training:  d = x ⊙ m / (1 − rate) ;  ∂L/∂x = ∂L/∂d ⊙ m / (1 − rate)

with a random mask m of 0 and 1 (1 with probability 1 − rate); at inference
dropout is the identity.

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
from ._validation import (
    as_batch,
    as_float_array,
    check_dtype,
    check_int,
    check_overflow,
    check_rate,
)
from .layout import Layout

__all__ = ["Dense", "Dropout", "join"]


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


class Dropout:
    """Inverted dropout (Srivastava et al., 2014): in training, each unit of
    the input is kept with probability 1 − rate and scaled by 1/(1 − rate),
    so that its expected value is unchanged; the others become 0.  At
    inference it is the identity.  It has no parameters.

    Parameters
    ----------
    rate : float in [0, 1)
        The fraction of units dropped (0: none).
    seed : int or numpy.random.Generator, optional
        Seeds the masks of this layer's own forward(x, training=True).
        Inside a Sequential the masks come from the network's seeded stream
        instead (the same seed trains the same, see Sequential).

    In a Sequential it goes between two Dense layers and drops units of
    the first one's output: ``Sequential(Dense(64, 128, "relu"),
    Dropout(0.2), Dense(128, 10, "softmax"), ...)``.  fit, train_step and
    loss_and_grad apply it; predict, evaluate and explain do not.
    """

    rate = _fixed("rate", "The fraction of units dropped in training.")
    seed = _fixed("seed", "The seed of the layer's own masks (None: unseeded).")
    output = _fixed("output", "The last forward's output (None before the first).")
    n_params = 0

    def __init__(self, rate: float, *, seed: int | np.random.Generator | None = None):
        self._rate = check_rate(rate)
        self._seed = seed
        self._stream = int(np.random.default_rng(seed).integers(2**63))  # the masks' seed
        self._steps = 0  # masks drawn by this layer's own forward
        self._mask: np.ndarray | None = None  # the last training forward's mask …
        self._single = False  # … and whether its input was one sample
        self._output: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"

    @property
    def mask(self) -> np.ndarray | None:
        """The last forward's mask, True where a unit was kept, shaped like
        its input; None when that forward was at inference (or before the
        first)."""
        if self._mask is None:
            return None
        mask = self._mask.view(bool)
        return mask[0] if self._single else mask

    def forward(self, x: ArrayLike, training: bool = False) -> np.ndarray:
        """x ⊙ m / (1 − rate) with a new mask m in training, else x itself
        (one sample (n,) or a batch (rows, n), float32 or float64)."""
        if not isinstance(training, bool):
            raise TypeError(f"training must be True or False, got {training!r}")
        x2 = self._input(x)
        if not training:
            self._mask, self._output = None, x2
            return x2
        mask = np.empty(np.atleast_2d(x2).shape, np.uint8)
        _ops.dropout_mask(mask, self._stream, self._steps, 0, self.rate)
        self._steps += 1
        return self._apply(x2, mask)

    __call__ = forward

    def apply(self, x: ArrayLike, mask: ArrayLike) -> np.ndarray:
        """x ⊙ mask / (1 − rate) with a given mask (True or 1 where a unit is
        kept, shaped like x), kept for backward: how a Sequential runs its
        dropout layers on the per-layer path, with its own masks."""
        x2 = self._input(x)
        m = np.asarray(mask)
        if m.shape != x2.shape:
            raise ValueError(f"mask must have the shape of x {x2.shape}, got {m.shape}")
        if m.dtype != bool and not (m.dtype.kind in "iu" and np.isin(m, (0, 1)).all()):
            raise TypeError(f"mask must hold True/False (or 0/1), got dtype {m.dtype}")
        return self._apply(x2, np.array(np.atleast_2d(m), np.uint8, order="C"))

    @staticmethod
    def _input(x) -> np.ndarray:
        """x as a checked array: float32 stays float32, the rest is float64."""
        dtype = np.float32 if getattr(x, "dtype", None) == np.float32 else np.float64
        return as_float_array(x, "x", np.dtype(dtype))

    def _apply(self, x2: np.ndarray, mask: np.ndarray) -> np.ndarray:
        a = np.atleast_2d(x2)
        d = np.empty_like(a)
        _ops.dropout_forward(d, a, mask, self.rate)
        self._mask, self._single = mask, x2.ndim == 1
        self._output = d[0] if self._single else d
        return self._output

    def backward(self, grad: ArrayLike) -> np.ndarray:
        """∂L/∂x = grad ⊙ m / (1 − rate), by the last forward's mask, from
        grad = ∂L/∂(its output); grad itself after a forward at inference."""
        if self._output is None:
            raise RuntimeError("grad: call forward(x) before backward")
        g = as_float_array(grad, "grad", self._output.dtype)
        if g.shape != self._output.shape:
            raise ValueError(
                f"grad must have the shape of the last forward's output "
                f"{self._output.shape}, got {np.shape(grad)}"
            )
        if self._mask is None:
            return g
        g2 = np.atleast_2d(g)
        out = np.empty_like(g2)
        _ops.dropout_backward(out, g2, self._mask, self.rate)
        return out[0] if self._single else out

    def copy(self) -> Dropout:
        """A new Dropout of the same rate and seed."""
        return Dropout(self.rate, seed=self.seed)


def _rebuilt(n_in, n_out, activation, init, seed, dtype, W, b) -> Dense:
    """An unpickled or copied Dense (see Dense.__reduce__)."""
    layer = Dense(n_in, n_out, activation, init=init, seed=seed, dtype=dtype)
    layer.W, layer.b = W, b
    return layer
