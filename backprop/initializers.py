"""Weight initialisation, drawn from one seeded numpy Generator.

    uniform          U(−1/√n_in, 1/√n_in)
    normal           N(0, 1/n_in)
    xavier, glorot   U(−√(6/(n_in + n_out)), +√(6/(n_in + n_out)))   (Glorot & Bengio, 2010)
    xavier_normal    N(0, 2/(n_in + n_out))
    he               N(0, 2/n_in)                                    (He et al., 2015)
    he_uniform       U(−√(6/n_in), +√(6/n_in))
    zeros            all 0 (every unit stays the same: shows why random init matters)

Biases start at 0.  Each activation names its default: he for relu and
leaky_relu, xavier for the others.
"""

from __future__ import annotations

import numpy as np

__all__ = ["initialize", "NAMES"]


def _uniform(limit):
    return lambda rng, n_in, n_out: rng.uniform(
        -limit(n_in, n_out), limit(n_in, n_out), size=(n_in, n_out)
    )


def _normal(std):
    return lambda rng, n_in, n_out: rng.normal(0.0, std(n_in, n_out), size=(n_in, n_out))


_INITS = {
    "uniform": _uniform(lambda i, o: 1 / np.sqrt(i)),
    "normal": _normal(lambda i, o: 1 / np.sqrt(i)),
    "xavier": _uniform(lambda i, o: np.sqrt(6 / (i + o))),
    "xavier_normal": _normal(lambda i, o: np.sqrt(2 / (i + o))),
    "he": _normal(lambda i, o: np.sqrt(2 / i)),
    "he_uniform": _uniform(lambda i, o: np.sqrt(6 / i)),
    "zeros": lambda rng, n_in, n_out: np.zeros((n_in, n_out)),
}
_INITS["glorot"] = _INITS["xavier"]
_INITS["glorot_normal"] = _INITS["xavier_normal"]
NAMES = tuple(sorted(_INITS))


def check_init(name) -> str:
    if not isinstance(name, str) or name.lower() not in _INITS:
        raise ValueError(f"init must be one of {', '.join(NAMES)}, got {name!r}")
    return name.lower()


def initialize(name: str, n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_in, n_out) float64 weight matrix drawn by the scheme `name`."""
    return _INITS[check_init(name)](rng, n_in, n_out)
