"""Where each parameter of a network lives: the flat layout.

A network keeps all of its parameters in one flat buffer, layer after layer,
each weight matrix row-major and followed by its bias:

    params = [ W₀ (n₀, n₁) | b₀ (n₁,) | W₁ (n₁, n₂) | b₁ (n₂,) | … ]

Its gradient and the optimizer's state (momentum, Adam's moments) are laid
out the same way.  `Layout` is that arrangement, computed once from the layer
sizes n₀ → n₁ → … and used by everything that reads the buffer by position:
the network's views W and b, the compiled engine, model files, gradcheck's
names for entries, and distributed training's check that every rank holds
the same network.

>>> from backprop.layout import Layout
>>> layout = Layout([2, 3, 1])
>>> layout.n_params, layout.w_offsets, layout.b_offsets
(13, (0, 9), (6, 12))
>>> layout.name(7)
'layers[0].b[1]'
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Layout", "Entry"]


class Entry(NamedTuple):
    """One array in the flat buffer: layer `layer`'s "W" or "b", of `shape`,
    at positions offset … offset + size − 1."""

    layer: int
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


class Layout:
    """The flat layout of a network whose layer sizes are `sizes` (inputs
    first: a network 784 → 128 → 10 has sizes (784, 128, 10))."""

    __slots__ = ("sizes", "entries", "n_params")

    sizes: tuple[int, ...]
    entries: tuple[Entry, ...]
    n_params: int

    def __init__(self, sizes: Sequence[int]):
        try:
            sizes = tuple(operator.index(n) for n in sizes)
        except TypeError:
            raise TypeError(f"sizes must be whole numbers, got {sizes!r}") from None
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must hold at least two sizes, each at least 1, got {sizes}")
        entries, offset = [], 0
        for layer, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            for name, shape in (("W", (n_in, n_out)), ("b", (n_out,))):
                entries.append(Entry(layer, name, shape, offset))
                offset += entries[-1].size
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "entries", tuple(entries))
        object.__setattr__(self, "n_params", offset)

    def __setattr__(self, name, value):
        raise AttributeError("a Layout cannot be changed")

    def __delattr__(self, name):
        raise AttributeError("a Layout cannot be changed")

    def __reduce__(self):
        # Pickles and copies are made from the sizes, by the constructor
        # (copying the slots would go through __setattr__, which refuses).
        return Layout, (self.sizes,)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def w_offsets(self) -> tuple[int, ...]:
        """Where each layer's W starts."""
        return tuple(e.offset for e in self.entries if e.name == "W")

    @property
    def b_offsets(self) -> tuple[int, ...]:
        """Where each layer's b starts."""
        return tuple(e.offset for e in self.entries if e.name == "b")

    def views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) of every layer as views into the flat buffer `flat`."""
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat must have shape ({self.n_params},), got {flat.shape}")
        arrays = [flat[e.slice].reshape(e.shape) for e in self.entries]
        return list(zip(arrays[0::2], arrays[1::2]))

    def name(self, i: int) -> str:
        """The name of entry i of the flat buffer, such as 'layers[1].W[3, 0]'."""
        i = operator.index(i)
        if not 0 <= i < self.n_params:
            raise IndexError(f"i must lie in 0 … {self.n_params - 1}, got {i}")
        for e in self.entries:
            if i < e.offset + e.size:
                index = np.unravel_index(i - e.offset, e.shape)
                return f"layers[{e.layer}].{e.name}[{', '.join(str(int(k)) for k in index)}]"
        raise AssertionError("unreachable")  # pragma: no cover

    def __eq__(self, other) -> bool:
        return isinstance(other, Layout) and other.sizes == self.sizes

    def __hash__(self) -> int:
        return hash(self.sizes)

    def __repr__(self) -> str:
        return f"Layout({list(self.sizes)})"
