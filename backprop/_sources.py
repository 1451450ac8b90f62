"""Where `fit` takes its rows from, one chunk at a time.

In memory, the whole data set is one chunk.  A memory-mapped array (or any
array, given fit's chunk_size) is read a chunk of rows at a time, visiting
the chunks in a new seeded order each epoch; an iterable of (X, y) batches is
read in its own order.  Each chunk is converted and checked as it is read and
its rows are shuffled by the core, so one chunk at a time is in memory.

A scipy.sparse X is checked and converted to CSR once (SparseRows) and stays
sparse: the core takes each batch's rows from it, and inference densifies a
chunk of rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from . import _ops
from . import losses as _losses
from ._engine import csr_rows, shuffled
from ._validation import as_batch, as_float_array, check_int, check_positive_float, is_sparse

# A chunk read from a memory-mapped array holds about this many bytes of X.
CHUNK_BYTES = 64 * 2**20

# fit on a CSR matrix of fewer nonzeros than this fraction of its entries
# runs the first layer's products on the nonzeros alone; a denser one has
# each batch's rows gathered dense for BLAS, which is then as fast or faster
# (docs/performance.md: on one thread the two meet between 10 and 15 %; more
# BLAS threads on an idle machine bring that down, a busy one up).
SPARSE_DENSITY = 0.1


class SparseRows:
    """A CSR matrix as the core takes it, checked (see as_sparse_rows): row
    r holds the values data[indptr[r]:indptr[r + 1]] (the network's dtype)
    at the columns indices[indptr[r]:indptr[r + 1]] (any order; a repeated
    column adds up, as in scipy), indices and indptr as intp.  X[rows] is
    the rows picked by a slice or an index array, as SparseRows;
    X.dense() the whole of it as an array."""

    ndim = 2

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (indptr.shape[0] - 1, n_cols)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def density(self) -> float:
        """The fraction of the entries stored."""
        return self.data.shape[0] / max(1, self.shape[0] * self.shape[1])

    @property
    def gather(self) -> bool:
        """Whether fit gathers each batch dense (see SPARSE_DENSITY)."""
        return self.density >= SPARSE_DENSITY

    def __getitem__(self, rows) -> SparseRows:
        n = self.shape[0]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            if step == 1:
                stop = max(start, stop)
                low, high = self.indptr[start], self.indptr[stop]
                indptr = self.indptr[start : stop + 1] - low
                return SparseRows(
                    self.data[low:high], self.indices[low:high], indptr, self.shape[1]
                )
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows, np.intp).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"rows must lie in [0, {n})")
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(rows.shape[0] + 1, np.intp)
        np.cumsum(lengths, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseRows(self.data[take], self.indices[take], indptr, self.shape[1])

    def dense(self) -> np.ndarray:
        """The rows as a dense (rows, n_cols) array: scipy's toarray of them."""
        out = np.empty(self.shape, self.data.dtype)
        if self.shape[0]:
            csr_rows(out, self.data, self.indices, self.indptr)
        return out


def as_sparse_rows(x, name: str, dtype: np.dtype, n_features: int) -> SparseRows:
    """A scipy.sparse matrix or array x (2-D) as checked SparseRows: CSR,
    other formats converted once (x.tocsr()); its values real numbers (bool
    and integers converted to `dtype`) and finite; its structure sound
    (indptr rising from 0, every column index in [0, n_features)); and
    n_features columns.  Raises a ValueError or TypeError naming x."""
    if isinstance(x, SparseRows):
        return x
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got a {x.ndim}-D sparse array of shape {x.shape}")
    if x.format != "csr":
        try:
            x = x.tocsr()
        except (ValueError, IndexError, TypeError) as exc:
            raise ValueError(
                f"{name}: its {x.format} matrix does not convert to CSR: {exc}"
            ) from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if cols != n_features:
        raise ValueError(f"{name} must have {n_features} columns (features), got shape {x.shape}")
    indptr, indices, data = np.asarray(x.indptr), np.asarray(x.indices), np.asarray(x.data)
    if (
        indptr.shape != (rows + 1,)
        or indptr.dtype.kind not in "iu"
        or indptr[0] != 0
        or (np.diff(indptr) < 0).any()
        or indptr[-1] > min(indices.shape[0], data.shape[0])
    ):
        raise ValueError(
            f"{name}: its CSR structure is broken (indptr must have one entry per row "
            f"and one more, and rise from 0 to at most the "
            f"{min(indices.shape[0], data.shape[0])} values stored)"
        )
    nnz = int(indptr[-1])
    indices, data = indices[:nnz], data[:nnz]
    if nnz and (indices.dtype.kind not in "iu" or indices.min() < 0 or indices.max() >= cols):
        raise ValueError(f"{name}: its column indices must lie in [0, {cols})")
    data = np.ascontiguousarray(data, dtype)
    if not _ops.all_finite(data):
        raise ValueError(f"{name} contains NaN or infinity")
    return SparseRows(
        data,
        np.ascontiguousarray(indices, np.intp),
        np.ascontiguousarray(indptr, np.intp),
        cols,
    )


def read_rows(X, rows) -> np.ndarray:
    """The rows of X (a memory map, an array, SparseRows) as an array: read
    from the file, or densified."""
    part = X[rows]
    return part.dense() if isinstance(part, SparseRows) else np.asarray(part)


class Description(NamedTuple):
    """What reading data for a network needs to know of it: the sizes of its
    inputs and outputs, its float type and its loss.  Every check and
    conversion of training data is one of its methods."""

    n_inputs: int
    n_outputs: int
    dtype: np.dtype
    loss: _losses.Loss

    def inputs(self, X, name: str = "X"):
        """X as a checked (rows, n_inputs) batch, and whether it was one
        sample; a sparse X (a batch: it is densified) never is."""
        if is_sparse(X) or isinstance(X, SparseRows):
            return self.sparse(X, name).dense(), False
        return as_batch(X, name, self.dtype, self.n_inputs)

    def sparse(self, X, name: str = "X") -> SparseRows:
        """A scipy.sparse X as checked SparseRows (see as_sparse_rows)."""
        return as_sparse_rows(X, name, self.dtype, self.n_inputs)

    def rows(self, X, name: str = "X"):
        """inputs(X), but a sparse X stays sparse, as SparseRows."""
        if is_sparse(X):
            return self.sparse(X, name), False
        return self.inputs(X, name)

    def targets(self, y, n_rows: int, single: bool, name: str = "y") -> np.ndarray:
        """y as checked (n_rows, n_outputs) targets for the loss."""
        if single:  # the target of one sample: a label, a value or a vector
            y = np.asarray(y)
            y = y.reshape(1) if y.ndim == 0 else y.reshape(1, -1) if y.ndim == 1 else y
        return _losses.targets(self.loss, y, n_rows, self.n_outputs, self.dtype, name)

    def data(self, X, y, sparse: bool = False):
        """(X2, Y): inputs and targets, checked; with `sparse`, a sparse X
        stays sparse (see rows)."""
        X2, single = self.rows(X) if sparse else self.inputs(X)
        return X2, self.targets(y, X2.shape[0], single)

    def rows_to_read(self, X, y, names=("X", "y")):
        """X and y to be read some rows at a time (a chunk, a rank's share),
        their shapes checked without reading a row; lists become arrays.
        `names`: what to call them in errors."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        if len(X.shape) != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(
                f"{names[0]} must be a 2-D array with {self.n_inputs} columns, got shape {X.shape}"
            )
        if X.shape[0] == 0:
            raise ValueError(f"{names[0]} is empty (shape {X.shape})")
        if not hasattr(y, "shape"):
            y = np.asarray(y)
        if len(y.shape) not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"{names[1]} must have one row per sample ({X.shape[0]}), got shape {y.shape}"
            )
        return X, y

    def sample_weights(self, sample_weight, n: int, name: str = "sample_weight"):
        """sample_weight as n checked weights ≥ 0."""
        weights = as_float_array(sample_weight, name, self.dtype, ndims=(1,))
        if weights.shape[0] != n:
            raise ValueError(f"{name} must have one entry per row ({n}), got {weights.shape[0]}")
        if (weights < 0).any():
            raise ValueError(f"{name} must not be negative")
        return weights

    def labels(self, A) -> np.ndarray:
        """The label rule of a classifier, for its outputs or its targets A
        (…, n_outputs): the argmax for cross_entropy; for sigmoid outputs
        [a ≥ ½] per output, one label a row when there is one output.  (The
        core's rule, _ops.labels, which training's accuracy counts by.)"""
        A = np.asarray(A)
        rows = np.ascontiguousarray(
            A.reshape(-1, A.shape[-1]),
            A.dtype if A.dtype in (np.float32, np.float64) else np.float64,
        )
        labels = _ops.labels(self.loss.code, rows)
        return labels.reshape(A.shape[:-1] + labels.shape[1:])[()]

    def label_counts(self, Y) -> np.ndarray:
        return np.bincount(self.labels(Y), minlength=max(self.n_outputs, 2))

    def class_table(self, class_weight, label_counts):
        """class_weight as one weight per class (None without it);
        label_counts() gives the rows per class, which 'balanced' needs (None:
        not available)."""
        if class_weight is None:
            return None
        if not self.loss.is_classification or (
            self.loss.code == _losses.BINARY_CROSS_ENTROPY and self.n_outputs > 1
        ):
            raise ValueError("class_weight applies to cross_entropy and to one sigmoid output")
        n_classes = max(self.n_outputs, 2)
        if isinstance(class_weight, str) and class_weight == "balanced":
            if label_counts is None:
                raise ValueError(
                    "class_weight='balanced' needs every label before training; "
                    "with an iterable of batches give a dict {label: weight}"
                )
            counts = label_counts()
            return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
        if not isinstance(class_weight, dict):
            raise TypeError("class_weight must be a dict {label: weight} or 'balanced'")
        table = np.ones(n_classes)
        for label, w in class_weight.items():
            if not (isinstance(label, (int, np.integer)) and 0 <= label < n_classes):
                raise ValueError(
                    f"class_weight: no class {label!r} (labels are 0 … {n_classes - 1})"
                )
            table[label] = check_positive_float(w, f"class_weight[{label}]", allow_zero=True)
        return table

    def row_weights(self, weights, table, Y):
        """The sample weights times the class weights of the rows of Y."""
        if table is None:
            return weights
        per_row = table[self.labels(Y)].astype(self.dtype)
        return per_row if weights is None else weights * per_row


def describe(net) -> Description:
    """The Description of a network (anything with n_inputs, n_outputs,
    dtype and loss)."""
    return Description(net.n_inputs, net.n_outputs, net.dtype, net.loss)


class Chunk(NamedTuple):
    X: np.ndarray | SparseRows  # (rows, n_in) in the network's dtype, checked
    Y: np.ndarray  # (rows, n_out) targets
    weights: np.ndarray | None  # (rows,) sample weights, or None
    order: np.ndarray | None  # the order in which to visit its rows (None: as stored)


def _seeds(seed: int, count: int) -> list[int]:
    """`count` shuffle seeds derived from an epoch's seed (-1: no shuffling)."""
    if seed < 0:
        return [-1] * count
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count, np.uint64) >> 2]


def _shuffled_rows(count: int, seed: int) -> np.ndarray | None:
    """0 … count − 1 in the seeded order of the core's shuffle (None: seed < 0)."""
    if seed < 0:
        return None
    order = np.arange(count)
    shuffled(order, seed)
    return order


class Order:
    """The order in which each epoch visits the `rows` rows of a data set:
    the one rule, used by fit's sources and by distributed training.  It
    depends on the epoch's seed alone, so that training split across calls
    or resumed from a file visits the rows as one uninterrupted fit does.

    In one chunk (chunk_rows None), a permutation of every row drawn by the
    core's shuffle from the epoch's seed.  In chunks of `chunk_rows` rows,
    the chunks in a seeded random order and the rows of each in an order of
    their own.  A seed < 0 keeps everything in stored order."""

    def __init__(self, rows: int, chunk_rows: int | None = None):
        self.rows, self.chunk_rows = rows, chunk_rows

    def epoch(self, seed: int) -> Iterator[tuple[slice, np.ndarray | None]]:
        """Each chunk of the epoch of this seed, in the order visited: its
        rows, and the order of those rows (indices into the chunk; None:
        as stored)."""
        if self.chunk_rows is None:
            yield slice(0, self.rows), _shuffled_rows(self.rows, seed)
            return
        size = self.chunk_rows
        starts = np.arange(0, self.rows, size)
        if seed >= 0:
            starts = np.random.default_rng(seed).permutation(starts)
        for first, chunk_seed in zip(starts.tolist(), _seeds(seed, len(starts))):
            count = min(size, self.rows - first)
            yield slice(first, first + count), _shuffled_rows(count, chunk_seed)

    def rows_of(self, seed: int) -> Iterator[np.ndarray]:
        """The rows of each chunk of the epoch, as indices into the whole
        data set, in the order visited."""
        for rows, order in self.epoch(seed):
            yield rows.start + (np.arange(rows.stop - rows.start) if order is None else order)


class InMemory:
    """Arrays already converted and checked: the whole data set is one chunk
    (see Order)."""

    def __init__(self, X2, Y, weights):
        self.rows = X2.shape[0]
        self.order = Order(self.rows)
        self._data = (X2, Y, weights)

    def chunks(self, seed: int) -> Iterator[Chunk]:
        X2, Y, weights = self._data
        for _, order in self.order.epoch(seed):
            yield Chunk(X2, Y, weights, order)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(X, Y, weights) of the given rows."""
        X2, Y, weights = self._data
        return X2[rows], Y[rows], None if weights is None else weights[rows]


class ChunkedArrays:
    """Arrays (typically memory-mapped) read `chunk_rows` rows at a time."""

    def __init__(self, about: Description, X, y, sample_weight, class_table, chunk_rows):
        self._about, self._X, self._y = about, X, y
        self._weights, self._table = sample_weight, class_table
        self.rows = X.shape[0]
        self.chunk_rows = chunk_rows
        self.order = Order(self.rows, chunk_rows)

    def chunks(self, seed: int) -> Iterator[Chunk]:
        for rows, order in self.order.epoch(seed):
            X2, Y, weights = self._read(rows, f"rows {rows.start}:{rows.stop}")
            yield Chunk(X2, Y, weights, order)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(X, Y, weights) of the given rows, read, converted and checked."""
        return self._read(rows, f"{len(rows)} rows from row {rows.min() if len(rows) else 0}")

    def _read(self, rows, where: str):
        X2, single = (
            (self._X[rows], False)  # (checked whole before training)
            if isinstance(self._X, SparseRows)
            else self._about.inputs(self._X[rows], f"X {where}")
        )
        Y = self._about.targets(self._y[rows], X2.shape[0], single, f"y {where}")
        weights = None if self._weights is None else self._weights[rows]
        return X2, Y, self._about.row_weights(weights, self._table, Y)


class Batches:
    """An iterable of (X, y) or (X, y, sample_weight) batches, read anew each
    epoch; a one-shot iterator (a generator) feeds a single epoch."""

    rows = None

    def __init__(self, about: Description, batches, class_table, epochs: int):
        try:
            one_shot = iter(batches) is batches
        except TypeError:
            raise TypeError(
                f"X: without y, X must be an iterable of (X, y) batches, "
                f"got {type(batches).__name__}"
            ) from None
        if one_shot and epochs > 1:
            raise ValueError(
                f"X: a one-shot iterator (such as a generator) feeds one "
                f"epoch, not epochs={epochs}; pass a list, or an object whose "
                f"__iter__ starts the batches over"
            )
        self._about, self._batches, self._table = about, batches, class_table

    def chunks(self, seed: int) -> Iterator[Chunk]:
        rng = np.random.default_rng(seed) if seed >= 0 else None
        for i, item in enumerate(self._batches):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(
                    f"X: each batch must be a pair (X, y) or a triple "
                    f"(X, y, sample_weight); batch {i} is a "
                    f"{type(item).__name__}"
                )
            X2, single = self._about.inputs(item[0], f"batch {i}: X")
            Y = self._about.targets(item[1], X2.shape[0], single, f"batch {i}: y")
            weights = (
                None
                if len(item) == 2
                else self._about.sample_weights(item[2], X2.shape[0], f"batch {i}: sample_weight")
            )
            yield Chunk(
                X2,
                Y,
                self._about.row_weights(weights, self._table, Y),
                _shuffled_rows(X2.shape[0], -1 if rng is None else int(rng.integers(2**62))),
            )


def chunk_rows(chunk_size, batch_size: int, n_inputs: int, itemsize: int) -> int:
    """Rows per chunk: `chunk_size`, or about CHUNK_BYTES of X, rounded down
    to whole batches (at least one)."""
    if chunk_size is None:
        chunk_size = CHUNK_BYTES // (n_inputs * itemsize)
    else:
        chunk_size = check_int(chunk_size, "chunk_size")
    return max(batch_size, chunk_size - chunk_size % batch_size)
