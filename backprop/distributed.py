"""Data-parallel training over MPI: one replica of the network per process.

    mpiexec -n 4 python train.py

Every rank builds the same network and calls `fit` with the same arguments.
`fit` gives every replica rank 0's weights and optimizer state, then for each
global batch of size × batch_size rows (in one seeded order that every rank
draws alike) each rank computes the gradient of its share of the rows, one
in-place Allreduce over the flat gradient buffer sums the shares, weighted by
their rows, into the gradient of the whole batch, and every replica takes the
identical update.  N ranks with batch B therefore train like one process
with batch N·B.  Each rank reads only the rows of its shares: pass a
memory-mapped array (numpy.load(path, mmap_mode="r")) and no rank loads the
data set.  Only rank 0 shows progress; save from rank 0
(`if distributed.rank() == 0: net.save(path)`).

`fit` checks its arguments on every rank before any rank starts: where a
rank refuses its own, every rank raises.  A rank that fails during training
ends the job (MPI_Abort) after printing its error; a rank that waits longer
than `timeout` seconds for the others (one failed outside fit, or
disappeared) ends it too, with a message saying so.
Launch with `mpiexec -n N python -m mpi4py train.py` to have an uncaught
error anywhere end the job at once.

Needs mpi4py and an MPI library: pip install "backprop[mpi]".
"""
from __future__ import annotations

import os
import sys
import time
import traceback
import zlib

import numpy as np

try:
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - without the extra
    raise ImportError("backprop.distributed needs mpi4py and an MPI library: "
                      'pip install "backprop[mpi]"') from exc

from . import _sources
from . import losses as _losses
from ._engine import shuffled
from ._validation import check_int, check_positive_float
from .network import History, Sequential

__all__ = ["fit", "rank", "size", "broadcast_parameters", "allreduce_gradients",
           "threads_per_rank"]


def _comm(comm):
    return MPI.COMM_WORLD if comm is None else comm


def rank(comm=None) -> int:
    """This process's rank (0 … size − 1)."""
    return _comm(comm).Get_rank()


def size(comm=None) -> int:
    """The number of processes."""
    return _comm(comm).Get_size()


def threads_per_rank(comm=None, timeout: float = 300.0) -> int:
    """BLAS threads for each rank: this host's cores ÷ its ranks (at least 1)."""
    return _threads_per_rank(_gather(_comm(comm), [], timeout))


def _gather(comm, values, timeout) -> np.ndarray:
    """Every rank's `values` (integers) and the name of its host, as rows of
    an array, gathered with a time limit."""
    host = zlib.crc32(MPI.Get_processor_name().encode())
    mine = np.array([host, *values], np.int64)
    every = np.empty((comm.Get_size(), mine.size), np.int64)
    _wait(comm.Iallgather(mine, every), comm, timeout, "meeting the other ranks")
    return every


def _threads_per_rank(gathered) -> int:
    here = int((gathered[:, 0] == zlib.crc32(MPI.Get_processor_name().encode())).sum())
    return max(1, len(os.sched_getaffinity(0)) // here)


def _wait(request, comm, timeout: float, what: str) -> None:
    """Complete `request`, or end the job once `timeout` seconds pass."""
    start = time.monotonic()
    while not request.Test():
        waited = time.monotonic() - start
        if waited > timeout:
            _abort(comm, f"waited {waited:.0f} s for the other ranks ({what}): a rank "
                         "failed or left. Ending the job.")
        if waited > 0.01:          # past a step's usual skew: stop spinning
            time.sleep(0.0005)


def _abort(comm, message: str) -> None:
    """Print why, then end every rank of the job."""
    print(f"backprop.distributed, rank {comm.Get_rank()} of {comm.Get_size()}: {message}",
          file=sys.stderr, flush=True)
    time.sleep(0.2)                # (time for the launcher to pass the message on)
    comm.Abort(1)
    os._exit(1)                    # (should Abort return, as it can)


def broadcast_parameters(net: Sequential, comm=None, root: int = 0,
                         timeout: float = 300.0) -> None:
    """Give every rank root's weights, optimizer state and step count."""
    comm = _comm(comm)
    steps = np.array([net.optimizer_steps], np.int64)
    for array in [net.params, *net._opt_state[:net.optimizer.n_state], steps]:
        _wait(comm.Ibcast(array, root=root), comm, timeout, "broadcasting the weights")
    net._apply_optimizer(int(steps[0]))


def _allreduce(comm, buffer, timeout, what) -> None:
    """buffer ← Σ over ranks of buffer, in place, with a time limit."""
    if comm.Get_size() > 1:
        _wait(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), comm, timeout, what)


def allreduce_gradients(net: Sequential, weight: float = 1.0, comm=None,
                        timeout: float = 300.0) -> None:
    """net.grads ← Σ over ranks of weight · net.grads, in place.  With each
    rank's weight its share of the batch's rows, the sum is the gradient of
    the mean loss over the whole batch."""
    if weight != 1.0:
        net.grads *= weight
    _allreduce(_comm(comm), net.grads, timeout, "summing the gradients")


def _sum(comm, values, timeout) -> np.ndarray:
    """Σ over ranks of a few float64 figures."""
    buf = np.array(values, np.float64)
    _allreduce(comm, buf, timeout, "summing the epoch's figures")
    return buf


def fit(net: Sequential, X, y, *, epochs: int = 1, batch_size: int = 32,
        lr: float | None = None, optimizer=None, shuffle: bool = True,
        sample_weight=None, validation_data: tuple | None = None,
        callbacks: list | None = None, early_stopping: bool = False, patience: int = 5,
        min_delta: float = 0.0, chunk_size: int | None = None, verbose: int = 0,
        comm=None, timeout: float = 300.0) -> History:
    """Train `net` data-parallel on every rank of `comm` (COMM_WORLD).

    Call it on every rank with the same arguments.  X (n, n_in) and y as for
    Sequential.fit (arrays or memory-mapped arrays, the same n on every
    rank); `batch_size` rows per rank, so a global batch holds
    size × batch_size rows, and the global batches follow the order that
    Sequential.fit with that batch (and the same chunk_size) draws: a
    memory-mapped X is visited a chunk at a time.  validation_data is scored
    with each rank taking a share of its rows.  The BLAS threads of each
    rank default to this host's cores ÷ its ranks (see Sequential.n_threads).
    Returns the History, the same on every rank.  When the arguments of a
    rank are refused, every rank raises (that rank its error, the others
    a RuntimeError saying which ranks).
    """
    comm = _comm(comm)
    try:
        timeout = check_positive_float(timeout, "timeout")
        plan = _plan(net, X, y, epochs, batch_size, lr, optimizer, sample_weight,
                     validation_data, callbacks, early_stopping, patience, min_delta,
                     chunk_size, verbose, comm)
        refused = None
    except (ValueError, TypeError, RuntimeError) as exc:   # (RuntimeError: net in use)
        plan, refused = None, exc
    n = -1 if plan is None else plan["n"]
    gathered = _gather(comm, [n, refused is not None], timeout if plan else 300.0)
    if refused is not None:
        raise refused
    if gathered[:, 2].any():
        raise RuntimeError(f"ranks {np.flatnonzero(gathered[:, 2]).tolist()} refused their "
                           "arguments (their errors say why)")
    if (gathered[:, 1] != n).any():
        raise ValueError(f"X: every rank must pass the same rows; the ranks have "
                         f"{gathered[:, 1].tolist()}")
    threads = net.n_threads
    if threads is None:
        net.n_threads = _threads_per_rank(gathered)
    try:
        with net.exclusive():              # this thread's for the whole run, as in fit
            return _fit(net, plan, shuffle, comm, timeout)
    except Exception:
        if comm.Get_size() == 1:
            raise
        _abort(comm, "training failed:\n" + traceback.format_exc())
        raise                      # (not reached: _abort ends the process)
    finally:
        net.n_threads = threads


def _plan(net, X, y, epochs, batch_size, lr, optimizer, sample_weight, validation_data,
          callbacks, early_stopping, patience, min_delta, chunk_size, verbose, comm) -> dict:
    """fit's arguments, checked on this rank before any rank starts."""
    me, ranks = comm.Get_rank(), comm.Get_size()
    epochs = check_int(epochs, "epochs", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a backprop.Sequential, got {type(net).__name__}")
    net._require_trainable()
    about = _sources.describe(net)
    X, y = about.rows_to_read(X, y)
    n = X.shape[0]
    weights = None if sample_weight is None else about.sample_weights(sample_weight, n)
    validation = None
    if validation_data is not None:            # this rank's share of the rows, checked
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        Xv, yv = validation_data
        if len(Xv) != len(yv):
            raise ValueError(f"validation_data: X_val has {len(Xv)} rows, y_val {len(yv)}")
        share = slice(me * len(Xv) // ranks, (me + 1) * len(Xv) // ranks)
        validation = (None if share.start == share.stop else
                      net._validation(None, None, None, (Xv[share], yv[share]), 0.0)[3])
    callbacks = net._callbacks(callbacks, early_stopping, patience, min_delta,
                               verbose if me == 0 else 0, validation_data is not None)
    chunked = chunk_size is not None or isinstance(X, np.memmap)
    chunk = (_sources.chunk_rows(chunk_size, ranks * batch_size, net.n_inputs,
                                 net.dtype.itemsize) if chunked else None)
    net._set_optimizer_for_fit(optimizer, lr)
    return {"n": n, "X": X, "y": y, "weights": weights, "epochs": epochs, "batch_size": batch_size,
            "validation": validation, "scored": validation_data is not None,
            "callbacks": callbacks, "chunk": chunk}


def _fit(net, plan, shuffle, comm, timeout) -> History:
    me, ranks, n = comm.Get_rank(), comm.Get_size(), plan["n"]
    X, y, weights, chunk = plan["X"], plan["y"], plan["weights"], plan["chunk"]
    broadcast_parameters(net, comm, timeout=timeout)
    engine = net._engine_for(min(plan["batch_size"], n), True)
    seed = np.array([net._rng.integers(2**62) if shuffle else -1], np.int64)
    _wait(comm.Ibcast(seed, root=0), comm, timeout, "broadcasting the seed")
    step = ranks * plan["batch_size"]
    order = np.arange(n)

    def orders(epoch):
        """The rows of each chunk in the order Sequential.fit visits them."""
        epoch_seed = int(seed[0]) + epoch if shuffle else -1
        if chunk is None:                         # in memory: kept from epoch to epoch
            if shuffle:
                shuffled(order, epoch_seed)
            yield order
            return
        for first, chunk_seed in _sources.chunk_order(n, chunk, epoch_seed):
            rows = np.arange(min(chunk, n - first))
            if chunk_seed >= 0:
                shuffled(rows, chunk_seed)
            yield rows + first

    def shares(rows_of_chunk):
        """This rank's rows of each global batch of a chunk, read and
        converted at once (each step then takes a view), and the size of
        each global batch."""
        sizes = [min(step, len(rows_of_chunk) - s) for s in range(0, len(rows_of_chunk), step)]
        mine = np.concatenate([rows_of_chunk[s + me * m // ranks:s + (me + 1) * m // ranks]
                               for s, m in zip(range(0, len(rows_of_chunk), step), sizes)])
        if not len(mine):
            return None, None, None, sizes
        X2, Y = _sources.describe(net).data(X[mine], y[mine])
        return X2, Y, None if weights is None else weights[mine], sizes

    def run_epoch(epoch, lr):
        loss = correct = 0.0
        for rows_of_chunk in orders(epoch):
            X2, Y, w, sizes = shares(rows_of_chunk)
            first = 0
            for m in sizes:                           # a global batch of m rows
                count = (me + 1) * m // ranks - me * m // ranks    # this rank's share
                if count:
                    rows = slice(first, first + count)
                    value = engine.loss_and_grad(X2[rows], Y[rows],
                                                 None if w is None else w[rows])
                    loss += value * count
                    correct += engine.batch_correct(Y[rows]) if net.is_classifier else 0
                    first += count
                else:
                    net.grads[...] = 0
                allreduce_gradients(net, count / m, comm, timeout)
                engine.apply_update(lr)
        loss, correct = _sum(comm, [loss, correct], timeout) / n
        per_row = net.n_outputs if net.loss.code == _losses.BINARY_CROSS_ENTROPY else 1
        return float(loss), float(correct) / per_row

    def score():
        return _score(net, plan["validation"], comm, timeout)
    return net._run_epochs(plan["epochs"], n, plan["callbacks"], run_epoch,
                           score if plan["scored"] else None)


def _score(net, validation, comm, timeout) -> dict:
    """val_loss (and val_accuracy) over every rank's share of the rows."""
    rows = 0 if validation is None else len(validation[0])
    scores = net._evaluate(*validation) if rows else {}
    keys = ["loss"] + (["accuracy"] if net.is_classifier else [])
    totals = _sum(comm, [scores.get(k, 0.0) * rows for k in keys] + [rows], timeout)
    return {f"val_{k}": float(v / totals[-1]) for k, v in zip(keys, totals)}
