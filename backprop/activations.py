"""Activation functions and their derivatives.

Each activation is an object that computes a = f(z) with the compiled core and
knows its derivative, taken from the outputs a (so z need not be kept):

    identity    f(z) = z                      f′ = 1
    sigmoid     f(z) = 1 / (1 + e^−z)          f′ = a (1 − a)
    tanh        f(z) = tanh z                 f′ = 1 − a²
    relu        f(z) = max(z, 0)              f′ = [a > 0]
    leaky_relu  f(z) = z if z > 0 else s·z    f′ = 1 if a > 0 else s
    softmax     f(z)_i = e^z_i / Σ_j e^z_j    (a Jacobian: see `backward`)
    step        f(z) = [z ≥ 0]                the perceptron's unit: no useful f′
    exp         f(z) = e^z                    f′ = a   (the mean of a Poisson count)
    softplus    f(z) = log(1 + e^z)           f′ = σ(z) = 1 − e^−a
    elu         f(z) = z if z > 0 else α(e^z − 1)          f′ = 1 if a > 0 else a + α
    selu        λ·elu with α = 1.6732632…, λ = 1.0507009…  f′ = λ if a > 0 else a + λα

or, for the smooth units that are not monotonic (their a does not tell z),
from z, which the layer then keeps (`keeps_z`):

    gelu        f(z) = z Φ(z)                 f′ = Φ(z) + z φ(z)
    gelu_tanh   f(z) = ½z(1 + tanh u) = z σ(2u),  u = √(2/π)(z + 0.044715 z³)
    silu        f(z) = z σ(z)  (also 'swish')  f′ = σ(z) + z σ(z)(1 − σ(z))

Φ and φ are the standard normal distribution and density functions.  gelu
is the exact (erf) form, as PyTorch's default GELU() and Keras's
gelu(approximate=False); gelu_tanh is the tanh approximation, PyTorch's
GELU(approximate='tanh') and Keras's gelu(approximate=True).  silu is
PyTorch's name (SiLU), swish Keras's.  elu takes α > 0 (`Elu(alpha)`, 1 by
default, as leaky_relu takes its slope); selu's constants are fixed
(Klambauer et al., 2017).  Every form is the stable one: softplus is
max(z, 0) + log1p(e^−|z|), gelu's Φ(z) is ½ erfc(−z/√2), gelu_tanh's
½(1 + tanh u) is σ(2u), and each stays finite and right at its limits for
any finite z (|z| up to 1e4 and far beyond), derivatives included.

e^z is the one that can overflow the float type for a finite z (above
ln FLT_MAX ≈ 88.72 in float32, ln DBL_MAX ≈ 709.78 in float64), and selu's
λz past the largest float over λ ≈ 1.05: called here,
it then raises a ValueError naming z, as predict and evaluate do for a
network's outputs; in fit the epoch diverges and is undone.

>>> from backprop import activations
>>> activations.sigmoid(0.0)
0.5
>>> activations.relu([-1.0, 2.0])
array([0., 2.])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _ops
from ._codes import ActivationCode
from ._validation import Fixed, as_float_array, check_overflow, check_positive_float

__all__ = [
    "Activation",
    "LeakyReLU",
    "get",
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "step",
    "exp",
    "Elu",
    "gelu",
    "gelu_tanh",
    "silu",
    "softplus",
    "elu",
    "selu",
    "NAMES",
]

IDENTITY = ActivationCode.IDENTITY
SIGMOID = ActivationCode.SIGMOID
TANH = ActivationCode.TANH
RELU = ActivationCode.RELU
LEAKY_RELU = ActivationCode.LEAKY_RELU
SOFTMAX = ActivationCode.SOFTMAX
STEP = ActivationCode.STEP
EXP = ActivationCode.EXP
GELU = ActivationCode.GELU
GELU_TANH = ActivationCode.GELU_TANH
SILU = ActivationCode.SILU
SOFTPLUS = ActivationCode.SOFTPLUS
ELU = ActivationCode.ELU
SELU = ActivationCode.SELU
SELU_SCALE, SELU_ALPHA = _ops.SELU_SCALE, _ops.SELU_ALPHA  # selu's λ and α (the core's)
GELU_CUBIC = _ops.GELU_CUBIC  # gelu_tanh's 0.044715


_ADVICE = ("pass smaller values", "pass float64 ones")  # (float32 input stays float32)


class NotDifferentiableError(ValueError):
    """Raised when a gradient is asked of the step activation."""


class Activation(Fixed):
    """One activation function: `f(z)`, its derivative and their kernels.

    Attributes, fixed at construction: `name`; `code` (the compiled core's
    ActivationCode); `default_init` (the weight initialisation that suits it);
    `negative_slope` (leaky_relu); `alpha` (elu).
    """

    name: str
    code: ActivationCode
    default_init: str
    negative_slope: float
    alpha: float

    def __init__(
        self,
        name: str,
        code: ActivationCode,
        default_init: str,
        negative_slope: float = 0.0,
        alpha: float = 0.0,
    ):
        self._fix(
            name=name,
            code=code,
            default_init=default_init,
            negative_slope=float(negative_slope),
            alpha=float(alpha),
        )

    def __repr__(self) -> str:
        if self.code == LEAKY_RELU:
            return f"LeakyReLU(negative_slope={self.negative_slope})"
        if self.code == ELU:
            return f"Elu(alpha={self.alpha})"
        return f"activations.{self.name}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Activation) and (self.code, self.parameter) == (
            other.code,
            other.parameter,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.parameter))

    @property
    def parameter(self) -> float:
        """The one number the core's kernels take with the code: leaky_relu's
        negative_slope, elu's alpha, else 0."""
        return self.alpha if self.code == ELU else self.negative_slope

    @property
    def keeps_z(self) -> bool:
        """Whether f′ is taken from z rather than from the outputs a (gelu,
        gelu_tanh, silu: their a does not tell z), so that a layer keeps z."""
        return bool(_ops.act_keeps_z(self.code))

    @property
    def differentiable(self) -> bool:
        return self.code != STEP

    def require_gradient(self, where: str = "") -> None:
        """Raise a clear error if nothing can be trained through this unit."""
        if not self.differentiable:
            raise NotDifferentiableError(
                f"cannot backpropagate through the step activation{where}: its "
                "derivative is 0 everywhere (and undefined at 0), so no "
                "gradient reaches the weights. Use 'sigmoid' or 'tanh' to "
                "train; 'step' is for fixed-weight perceptrons."
            )

    def __call__(self, z: ArrayLike) -> np.ndarray | float:
        """a = f(z) for a scalar, a vector (softmax over it) or a batch
        (rows, features), as float64 (float32 input stays float32)."""
        arr = _float(z, "z")
        a = np.array(arr, ndmin=2, copy=True)
        _ops.act_forward(a, self.code, self.parameter)
        check_overflow(a, "z", f"{self.name}(z) overflows", arr, *_ADVICE)
        return _shaped(a, arr)

    def backward(
        self, a: ArrayLike, grad: ArrayLike, z: ArrayLike | None = None
    ) -> np.ndarray | float:
        """∂L/∂z = grad ⊙ f′(z), from the outputs a = f(z) and grad = ∂L/∂a,
        and from z itself for the activations that keep it (`keeps_z`: gelu,
        gelu_tanh, silu), for which z is required.

        For softmax this is the Jacobian-vector product
        a ⊙ (grad − Σ_j grad_j a_j), taken row by row.
        """
        self.require_gradient()
        a_arr = _float(a, "a")
        g_arr = _float(grad, "grad", a_arr.dtype)
        if a_arr.shape != g_arr.shape:
            raise ValueError(f"grad must have the shape of a {a_arr.shape}, got {g_arr.shape}")
        z2 = None
        if self.keeps_z:
            if z is None:
                raise ValueError(
                    f"z: {self.name}'s derivative is taken from z, which its outputs "
                    "a do not tell: pass z (the layer's pre-activation)"
                )
            z_arr = _float(z, "z", a_arr.dtype)
            if z_arr.shape != a_arr.shape:
                raise ValueError(f"z must have the shape of a {a_arr.shape}, got {z_arr.shape}")
            z2 = np.array(z_arr, ndmin=2)
        a2 = np.array(a_arr, ndmin=2)
        delta = np.empty_like(a2)
        _ops.act_backward(delta, np.array(g_arr, ndmin=2), a2, self.code, self.parameter, z2)
        check_overflow(delta, "grad", "grad ⊙ f′(z) overflows", g_arr, *_ADVICE)
        return _shaped(delta, a_arr)

    def derivative(self, z: ArrayLike) -> np.ndarray | float:
        """f′(z) element by element (not for softmax, whose derivative is a
        Jacobian: use `backward`)."""
        if self.code == SOFTMAX:
            raise ValueError(
                "softmax has no element-wise derivative; use "
                "softmax.backward(a, grad) for the Jacobian product"
            )
        a = self(z)
        return self.backward(a, np.ones_like(a), z)


def LeakyReLU(negative_slope: float = 0.01) -> Activation:
    """leaky_relu with the given slope for z < 0 (a number ≥ 0)."""
    slope = check_positive_float(negative_slope, "negative_slope", allow_zero=True)
    return Activation("leaky_relu", LEAKY_RELU, "he", slope)


def Elu(alpha: float = 1.0) -> Activation:
    """elu with the given α > 0: f(z) = α(e^z − 1) for z ≤ 0, which tends
    to −α (PyTorch's ELU(alpha), Keras's elu(x, alpha))."""
    alpha = check_positive_float(alpha, "alpha")
    return Activation("elu", ELU, "he", alpha=alpha)


identity = Activation("identity", IDENTITY, "xavier")
sigmoid = Activation("sigmoid", SIGMOID, "xavier")
tanh = Activation("tanh", TANH, "xavier")
relu = Activation("relu", RELU, "he")
leaky_relu = LeakyReLU(0.01)
softmax = Activation("softmax", SOFTMAX, "xavier")
step = Activation("step", STEP, "xavier")
exp = Activation("exp", EXP, "xavier")
gelu = Activation("gelu", GELU, "he")
gelu_tanh = Activation("gelu_tanh", GELU_TANH, "he")
silu = Activation("silu", SILU, "he")
softplus = Activation("softplus", SOFTPLUS, "he")
elu = Elu(1.0)
selu = Activation("selu", SELU, "normal")  # N(0, 1/n_in), LeCun's: what selu expects

_BY_NAME = {
    a.name: a
    for a in (identity, sigmoid, tanh, relu, leaky_relu, softmax, step, exp)
    + (gelu, gelu_tanh, silu, softplus, elu, selu)
}
_BY_NAME["linear"] = identity
_BY_NAME["swish"] = silu
NAMES = tuple(sorted(_BY_NAME))


def get(activation: str | Activation) -> Activation:
    """The Activation for a name ('relu', …) or an Activation itself."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str) and activation.lower() in _BY_NAME:
        return _BY_NAME[activation.lower()]
    raise ValueError(
        f"activation must be one of {', '.join(NAMES)} or an Activation, got {activation!r}"
    )


def _float(x, name, dtype=None):
    arr = np.asarray(x)
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    return as_float_array(x, name, np.dtype(dtype), ndims=(0, 1, 2))


def _shaped(out2d, like):
    """Give a 2-D kernel result the shape of the input it came from."""
    if like.ndim == 0:
        return float(out2d[0, 0]) if out2d.dtype == np.float64 else out2d.dtype.type(out2d[0, 0])
    return out2d.reshape(like.shape)
