"""One place decides how many threads backprop's matrix products use.

The compiled core calls BLAS through scipy (scipy.linalg.cython_blas), whose
OpenBLAS has a thread pool of its own, separate from numpy's.  That pool
starts at the size OpenBLAS reads from OPENBLAS_NUM_THREADS or
OMP_NUM_THREADS (else the number of cores), and threadpoolctl's limits act on
it directly.  Here it is found and set:

    backprop.get_num_threads()      the current size of the pool
    backprop.set_num_threads(n)     change it (for scipy's BLAS as a whole)
    with backprop.num_threads(1):   for a block of code

The engine adds two rules of its own: a matrix product too small for a
second thread to pay off runs on one, and while networks train in several
Python threads at once each runs on one (see `Sequential.n_threads`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from ._validation import check_int

__all__ = ["get_num_threads", "set_num_threads", "num_threads", "blas_info"]

# The most threads a count may ask for: more than any machine's cores, and
# within the C int that OpenBLAS takes (a larger value would wrap around to
# some other count, or to one it ignores).
MAX_THREADS = 2**15


def _find_blas():
    """(library path, get_num_threads, set_num_threads) of the BLAS that
    scipy.linalg.cython_blas uses, or None where it cannot be found."""
    import scipy.linalg.cython_blas  # make sure it is loaded

    try:
        with open("/proc/self/maps") as maps:
            paths = {
                line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line
            }
    except OSError:
        return None
    import scipy

    scipy_root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    # Prefer scipy's own bundled copy over numpy's (which uses 64-bit ints).
    paths = sorted(
        paths, key=lambda p: (not os.path.abspath(p).startswith(scipy_root) or "numpy" in p, p)
    )
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            get = getattr(lib, f"{prefix}_get_num_threads", None)
            put = getattr(lib, f"{prefix}_set_num_threads", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                config = getattr(lib, f"{prefix}_get_config", None)
                if config is not None:
                    config.restype, config.argtypes = ctypes.c_char_p, []
                return path, get, put, config
    return None


_BLAS = _find_blas()


def get_num_threads() -> int:
    """Threads in the BLAS pool behind backprop's matrix products (1 where
    the pool cannot be controlled)."""
    return int(_BLAS[1]()) if _BLAS else 1


def check_threads(n, name: str) -> int:
    """A thread count: an integer from 1 to MAX_THREADS."""
    return check_int(n, name, maximum=MAX_THREADS)


def set_num_threads(n: int) -> None:
    """Use `n` threads for backprop's matrix products (scipy's BLAS).

    n is an integer from 1 to MAX_THREADS (32768).  OpenBLAS then caps the
    pool at the largest size it was built for (MAX_THREADS in
    ``blas_info()["config"]``, 64 for scipy's wheels): get_num_threads()
    tells what it took.
    """
    n = check_threads(n, "n")
    if _BLAS:
        _BLAS[2](n)


@contextlib.contextmanager
def num_threads(n: int):
    """Run a block with `n` BLAS threads, then restore the previous count."""
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


def blas_info() -> dict:
    """Which BLAS the core calls, its configuration and thread count."""
    if not _BLAS:
        return {"library": None, "config": "unknown (thread count not controllable)", "threads": 1}
    config = _BLAS[3]().decode() if _BLAS[3] is not None else ""
    return {"library": _BLAS[0], "config": config, "threads": get_num_threads()}


def set_function_addresses():
    """The C addresses of (get, set) for the compiled engine, or (0, 0)."""
    if not _BLAS:
        return 0, 0
    return (
        ctypes.cast(_BLAS[1], ctypes.c_void_p).value,
        ctypes.cast(_BLAS[2], ctypes.c_void_p).value,
    )
