"""Input checks shared by every public entry point.

Python validates, the core computes: each public function turns its inputs
into C-contiguous float32/float64 arrays here, or raises a ValueError or
TypeError that names the argument and says what was expected.  The compiled
core then trusts what it is given.
"""

from __future__ import annotations

import math
import numbers
import sys

import numpy as np

from . import _ops

FLOAT_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    """float32 or float64, given as a name, a numpy dtype or a type."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {dtype!r}")
    return dt


def check_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number (bool excluded) no smaller than `minimum` and, if
    given, no larger than `maximum`."""
    if type(value) is not int and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral)
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    number = int(value)  # (numbers.Integral declares no comparison with int)
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return number


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or ≥ 0 with allow_zero)."""
    if type(value) not in (float, int) and (
        isinstance(value, bool) or not isinstance(value, numbers.Real)
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        value = math.inf
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def check_rate(value, name: str = "rate") -> float:
    """A dropout rate: a real number in [0, 1)."""
    rate = check_positive_float(value, name, allow_zero=True)
    if not rate < 1:
        raise ValueError(f"{name} must lie in [0, 1) (the fraction of units dropped), got {value}")
    return rate


def is_sparse(x) -> bool:
    """Whether x is a scipy.sparse matrix or array.  (scipy.sparse is not
    imported for it: nothing can be one before it is loaded.)"""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(x))


def as_float_array(
    x, name: str, dtype: np.dtype, ndims=(1, 2), allow_empty: bool = False
) -> np.ndarray:
    """`x` as a C-contiguous array of `dtype`, finite, of one of `ndims`.

    Real numbers of any width (bool, integers, float16 …) are converted;
    complex numbers, strings and objects are refused, and so are sparse
    matrices (where sparse input is taken, it is checked by
    backprop._sources.as_sparse_rows).
    """
    if is_sparse(x):
        raise TypeError(
            f"{name} must be a dense array here, got a scipy.sparse matrix ({x.format}, "
            f"shape {x.shape}); convert it with .toarray()"
        )
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001  (ragged lists and the like)
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got {arr.ndim}-D with shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.asarray(arr, dtype=dtype, order="C")  # (ascontiguousarray makes 0-D 1-D)
    if not _ops.all_finite(arr.reshape(-1)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def as_batch(x, name: str, dtype: np.dtype, n_features: int):
    """A 2-D batch (rows, n_features) from `x`, and whether x was one sample.

    A 1-D x of length n_features is one sample; a 2-D x is a batch.
    """
    arr = as_float_array(x, name, dtype)
    single = arr.ndim == 1
    if single:
        arr = arr.reshape(1, -1)
    if arr.shape[1] != n_features:
        what = "length" if single else "columns"
        raise ValueError(
            f"{name} must have {n_features} {what} (features), got shape {np.shape(x)}"
        )
    return arr, single


def check_overflow(
    out: np.ndarray, name: str, what: str, given: np.ndarray, advice: str, wider: str
) -> None:
    """Finite input can still overflow the float type (e^z, a large
    product): raise a ValueError naming the argument `name` if `out`,
    computed from `given`, is not finite, rather than hand back inf or NaN.
    `what` says what overflowed ("the layer's outputs overflow"), `advice`
    what to do, and `wider` how to get float64 (said in float32 only)."""
    if not _ops.all_finite(out.reshape(-1)):
        dtype = out.dtype.name
        raise ValueError(
            f"{name}: {what} {dtype} for these inputs (up to "
            f"{np.abs(given).max():.3g} in size); {advice}"
            + (f", or {wider}" if dtype == "float32" else "")
        )


class Fixed:
    """An object whose attributes its constructor sets once (through `_fix`)
    and nothing changes or deletes afterwards: an activation or a loss, which
    a network copies into its compiled engine when it is built and which
    every layer of that kind shares.  A later change would reach some of a
    network's paths and not others, and its model file but not its weights."""

    def _fix(self, **values) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(
            f"{type(self).__name__}.{name} is fixed at construction: make a new one instead"
        )

    def __delattr__(self, name):
        self.__setattr__(name, None)
