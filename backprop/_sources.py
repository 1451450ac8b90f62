"""Where `fit` takes its rows from, one chunk at a time.

In memory, the whole data set is one chunk.  A memory-mapped array (or any
array, given fit's chunk_size) is read a chunk of rows at a time, visiting
the chunks in a new seeded order each epoch; an iterable of (X, y) batches is
read in its own order.  Each chunk is converted and checked as it is read and
its rows are shuffled by the core, so one chunk at a time is in memory.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from ._validation import check_int

# A chunk read from a memory-mapped array holds about this many bytes of X.
CHUNK_BYTES = 64 * 2**20


class Chunk(NamedTuple):
    X: np.ndarray               # (rows, n_in) in the network's dtype, checked
    Y: np.ndarray               # (rows, n_out) targets
    weights: np.ndarray | None  # (rows,) sample weights, or None
    seed: int                   # the core's shuffle seed for these rows (-1: keep their order)
    order: np.ndarray | None = None   # the row order to shuffle (None: a new 0, 1, 2 …)


def _seeds(seed: int, count: int) -> list[int]:
    """`count` shuffle seeds derived from an epoch's seed (-1: no shuffling)."""
    if seed < 0:
        return [-1] * count
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count, np.uint64) >> 2]


def chunk_order(rows: int, chunk_rows: int, seed: int) -> list[tuple[int, int]]:
    """The chunks of an epoch in the order they are visited: (first row,
    shuffle seed of its rows) each; in stored order when seed < 0."""
    starts = np.arange(0, rows, chunk_rows)
    if seed >= 0:
        starts = np.random.default_rng(seed).permutation(starts)
    return list(zip(starts.tolist(), _seeds(seed, len(starts))))


class InMemory:
    """Arrays already converted and checked: the whole data set is one chunk,
    whose row order carries over from epoch to epoch (shuffled again each)."""

    def __init__(self, X2, Y, weights):
        self.rows = X2.shape[0]
        self._data = (X2, Y, weights)
        self._order = np.arange(self.rows)

    def chunks(self, seed: int) -> Iterator[Chunk]:
        yield Chunk(*self._data, seed, self._order if seed >= 0 else None)


class ChunkedArrays:
    """Arrays (typically memory-mapped) read `chunk_rows` rows at a time."""

    def __init__(self, net, X, y, sample_weight, class_table, chunk_rows):
        self._net, self._X, self._y = net, X, y
        self._weights, self._table = sample_weight, class_table
        self.rows = X.shape[0]
        self.chunk_rows = chunk_rows

    def chunks(self, seed: int) -> Iterator[Chunk]:
        for start, chunk_seed in chunk_order(self.rows, self.chunk_rows, seed):
            rows = slice(start, start + self.chunk_rows)
            where = f"rows {start}:{min(start + self.chunk_rows, self.rows)}"
            X2, single = self._net._inputs(self._X[rows], f"X {where}")
            Y = self._net._targets(self._y[rows], X2.shape[0], single, f"y {where}")
            weights = None if self._weights is None else self._weights[rows]
            yield Chunk(X2, Y, self._net._row_weights(weights, self._table, Y), chunk_seed)


class Batches:
    """An iterable of (X, y) or (X, y, sample_weight) batches, read anew each
    epoch; a one-shot iterator (a generator) feeds a single epoch."""

    rows = None

    def __init__(self, net, batches, class_table, epochs: int):
        try:
            one_shot = iter(batches) is batches
        except TypeError:
            raise TypeError(f"X: without y, X must be an iterable of (X, y) batches, "
                            f"got {type(batches).__name__}") from None
        if one_shot and epochs > 1:
            raise ValueError(f"X: a one-shot iterator (such as a generator) feeds one "
                             f"epoch, not epochs={epochs}; pass a list, or an object whose "
                             f"__iter__ starts the batches over")
        self._net, self._batches, self._table = net, batches, class_table

    def chunks(self, seed: int) -> Iterator[Chunk]:
        rng = np.random.default_rng(seed) if seed >= 0 else None
        for i, item in enumerate(self._batches):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(f"X: each batch must be a pair (X, y) or a triple "
                                f"(X, y, sample_weight); batch {i} is a "
                                f"{type(item).__name__}")
            X2, single = self._net._inputs(item[0], f"batch {i}: X")
            Y = self._net._targets(item[1], X2.shape[0], single, f"batch {i}: y")
            weights = (None if len(item) == 2 else
                       self._net._check_sample_weight(item[2], X2.shape[0],
                                                      f"batch {i}: sample_weight"))
            yield Chunk(X2, Y, self._net._row_weights(weights, self._table, Y),
                        -1 if rng is None else int(rng.integers(2**62)))


def chunk_rows(chunk_size, batch_size: int, n_inputs: int, itemsize: int) -> int:
    """Rows per chunk: `chunk_size`, or about CHUNK_BYTES of X, rounded down
    to whole batches (at least one)."""
    if chunk_size is None:
        chunk_size = CHUNK_BYTES // (n_inputs * itemsize)
    else:
        chunk_size = check_int(chunk_size, "chunk_size")
    return max(batch_size, chunk_size - chunk_size % batch_size)
