"""Data-parallel training over MPI: one replica of the network per process.

    mpiexec -n 4 python train.py

Every rank builds the same network and calls `fit` with the same arguments.
`fit` gives every replica rank 0's weights and optimizer state, then for each
global batch of size × batch_size rows (in one seeded order that every rank
draws alike) each rank computes the gradient of its share of the rows, one
in-place Allreduce over the flat gradient buffer sums the shares, weighted by
their rows, into the gradient of the whole batch, and every replica takes the
identical update.  N ranks with batch B therefore train like one process
with batch N·B (with dropout too: each rank draws its own rows of the
batch's masks, from rank 0's stream).  Each rank reads only the rows of its shares: pass a
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
    raise ImportError(
        'backprop.distributed needs mpi4py and an MPI library: pip install "backprop[mpi]"'
    ) from exc

from ._sources import read_rows
from ._validation import check_positive_float, is_sparse
from .network import History, Sequential
from .training import EpochRunner, FitPlan

__all__ = ["fit", "rank", "size", "broadcast_parameters", "allreduce_gradients", "threads_per_rank"]


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
            _abort(
                comm,
                f"waited {waited:.0f} s for the other ranks ({what}): a rank "
                "failed or left. Ending the job.",
            )
        if waited > 0.01:  # past a step's usual skew: stop spinning
            time.sleep(0.0005)


def _abort(comm, message: str) -> None:
    """Print why, then end every rank of the job."""
    print(
        f"backprop.distributed, rank {comm.Get_rank()} of {comm.Get_size()}: {message}",
        file=sys.stderr,
        flush=True,
    )
    time.sleep(0.2)  # (time for the launcher to pass the message on)
    comm.Abort(1)
    os._exit(1)  # (should Abort return, as it can)


def broadcast_parameters(net: Sequential, comm=None, root: int = 0, timeout: float = 300.0) -> None:
    """Give every rank root's weights, optimizer state and step count (and
    the stream of its dropout masks)."""
    comm = _comm(comm)
    steps = np.array([net.optimizer_steps], np.int64)
    stream = np.array([net.dropout_seed, net.dropout_steps], np.uint64)
    for array in [net.params, *net.optimizer_state, steps, stream]:
        _wait(comm.Ibcast(array, root=root), comm, timeout, "broadcasting the weights")
    net.optimizer_steps = int(steps[0])
    net.dropout_seed, net.dropout_steps = int(stream[0]), int(stream[1])


def _allreduce(comm, buffer, timeout, what) -> None:
    """buffer ← Σ over ranks of buffer, in place, with a time limit."""
    if comm.Get_size() > 1:
        _wait(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), comm, timeout, what)


def allreduce_gradients(
    net: Sequential, weight: float = 1.0, comm=None, timeout: float = 300.0
) -> None:
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


def fit(
    net: Sequential,
    X,
    y,
    *,
    validation_data: tuple | None = None,
    verbose: int = 0,
    comm=None,
    timeout: float = 300.0,
    **fit_args,
) -> History:
    """Train `net` data-parallel on every rank of `comm` (COMM_WORLD).

    Call it on every rank with the same arguments, which are Sequential.fit's
    (epochs, batch_size, optimizer, callbacks, sample_weight, …) but for
    validation_split.  X (n, n_in) and y as for Sequential.fit (arrays,
    memory-mapped arrays or scipy.sparse matrices, whose shares each rank
    densifies a batch at a time; the same n on every rank); `batch_size` rows per
    rank, so a global batch holds size × batch_size rows, and the global
    batches follow the order that Sequential.fit with that batch (and the
    same chunk_size) draws: a memory-mapped X is visited a chunk at a
    time.  validation_data is scored
    with each rank taking a share of its rows.  The BLAS threads of each
    rank default to this host's cores ÷ its ranks (see Sequential.n_threads).
    Returns the History, the same on every rank.  When the arguments of a
    rank are refused, every rank raises (that rank its error, the others
    a RuntimeError saying which ranks).

    This is Sequential.fit with an epoch runner of its own (see
    backprop.training.EpochRunner): fit checks the arguments and sets up the
    training as it always does, and the runner gives each rank its share of
    every batch and sums the gradients.
    """
    comm = _comm(comm)
    runner = _Runner(comm, 300.0, validation_data is not None)
    try:
        runner.timeout = check_positive_float(timeout, "timeout")
        if not isinstance(net, Sequential):
            raise TypeError(f"net must be a backprop.Sequential, got {type(net).__name__}")
        if y is None:  # (fit's iterable of batches: it has no rows to share out)
            raise ValueError(
                "y is missing: distributed.fit shares out the rows of arrays (or "
                "memory maps) X and y, not an iterable of batches"
            )
        me, ranks = comm.Get_rank(), comm.Get_size()
        if validation_data is not None:  # this rank's share of the rows
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            Xv, yv = validation_data
            if is_sparse(Xv):  # (CSR takes slices of rows; some formats take none)
                Xv = Xv.tocsr()
            n_val = Xv.shape[0] if is_sparse(Xv) else len(Xv)
            if n_val != len(yv):
                raise ValueError(f"validation_data: X_val has {n_val} rows, y_val {len(yv)}")
            share = slice(me * n_val // ranks, (me + 1) * n_val // ranks)
            runner.validation_rows = share.stop - share.start
            validation_data = (Xv[share], yv[share]) if runner.validation_rows else None
        if fit_args.get("validation_split"):
            raise ValueError("validation_split: give validation_data, which the ranks share")
        return net.fit(
            X,
            y,
            validation_data=validation_data,
            verbose=verbose if me == 0 else 0,
            runner=runner,
            **fit_args,
        )
    except Exception as exc:
        if runner.started:  # training failed: the job ends
            runner.failed()
        elif not runner.met and isinstance(exc, (ValueError, TypeError, RuntimeError)):
            runner.meet(-1, refused=True)  # refused before training: every rank raises
        raise  # (RuntimeError: the net is in use)
    finally:
        runner.finish(net)


class _Runner(EpochRunner):
    """The epochs of fit over the ranks of `comm`: every global batch of
    size × batch_size rows, in the order of backprop._sources.Order, is
    shared out, each rank computes the gradient of its share, one Allreduce
    sums the shares (weighted by their rows), and every replica takes the
    same update."""

    reads_rows = True  # each rank reads only its shares of the data

    def __init__(self, comm, timeout: float, validating: bool):
        self.comm, self.timeout, self._validating = comm, timeout, validating
        self.me, self.ranks = comm.Get_rank(), comm.Get_size()
        self.validation_rows = 0
        self.classifies = False
        self.writes_checkpoints = self.me == 0  # (every rank resumes from rank 0's file)
        self.saves_within_epochs = False
        self.met = self.started = False
        self._threads: tuple | None = None  # (network, its own n_threads) to restore

    def step_rows(self, batch_size: int) -> int:
        return self.ranks * batch_size

    def validating(self, here: bool) -> bool:
        return self._validating

    def meet(self, rows: int, refused: bool, network: str | None = None) -> np.ndarray:
        """Every rank's rows, refusal and network (its description: layout,
        activations, loss, dtype), gathered (also by a rank whose arguments
        were refused, so that every rank raises)."""
        mark = -1 if network is None else zlib.crc32(network.encode())
        gathered = _gather(self.comm, [rows, refused, mark], self.timeout)
        self.met = True
        if refused:
            return gathered
        if gathered[:, 2].any():
            raise RuntimeError(
                f"ranks {np.flatnonzero(gathered[:, 2]).tolist()} refused "
                "their arguments (their errors say why)"
            )
        if (gathered[:, 3] != mark).any():
            raise ValueError(
                "net: every rank must train the same network (layer sizes, activations, "
                f"loss and dtype); this rank's is {network}"
            )
        if (gathered[:, 1] != rows).any():
            raise ValueError(
                f"X: every rank must pass the same rows; the ranks have {gathered[:, 1].tolist()}"
            )
        return gathered

    def start(self, net, plan: FitPlan) -> FitPlan:
        network = (
            f"{list(net.layout.sizes)} "
            f"{[layer.activation.name for layer in net.layers]} {net.loss.name} {net.dtype}"
            + (f" dropout {list(net.dropout)}" if any(net.dropout) else "")
        )
        gathered = self.meet(plan.source.rows, refused=False, network=network)
        self.started, self.classifies = True, net.is_classifier
        if net.n_threads is None:
            self._threads = (net, None)
            net.n_threads = _threads_per_rank(gathered)
        broadcast_parameters(net, self.comm, timeout=self.timeout)
        seed = np.array([plan.seed], np.int64)
        _wait(self.comm.Ibcast(seed, root=0), self.comm, self.timeout, "broadcasting the seed")
        return plan._replace(seed=int(seed[0]))

    def epoch(self, net, plan: FitPlan, epoch: int, lr: float) -> tuple[float, float]:
        me, ranks, engine = self.me, self.ranks, plan.engine
        dropping = any(net.dropout)
        step = ranks * plan.batch_size
        loss = right = 0.0
        for rows in plan.source.order.rows_of(plan.seed + epoch if plan.seed >= 0 else -1):
            starts = range(0, len(rows), step)
            sizes = [min(step, len(rows) - s) for s in starts]  # the global batches
            shares = [
                rows[s + me * m // ranks : s + (me + 1) * m // ranks] for s, m in zip(starts, sizes)
            ]
            mine = np.concatenate(shares)
            if len(mine):
                X2, Y, w = plan.source.read(mine)
            first = 0
            for m, share in zip(sizes, shares):
                count = len(share)
                if count:
                    part = slice(first, first + count)
                    loss += count * engine.loss_and_grad(  # (sparse rows: densified)
                        read_rows(X2, part),
                        Y[part],
                        None if w is None else w[part],
                        mask_row=me * m // ranks,  # (its rows' dropout masks in the batch's)
                    )
                    right += count * engine.batch_accuracy(Y[part])
                    first += count
                else:
                    net.grads[...] = 0
                    if dropping:  # (the pass goes by all the same)
                        net.dropout_steps += 1
                allreduce_gradients(net, count / m, self.comm, self.timeout)
                engine.apply_update(lr)
        loss, right = _sum(self.comm, [loss, right], self.timeout) / plan.source.rows
        return float(loss), float(right)

    def score(self, here):
        if not self._validating:
            return None

        def score() -> dict:
            """val_loss (and val_accuracy) over every rank's share of the rows."""
            scores = here() if here is not None else {}
            keys = ["val_loss"] + (["val_accuracy"] if self.classifies else [])
            totals = _sum(
                self.comm,
                [scores.get(k, 0.0) * self.validation_rows for k in keys] + [self.validation_rows],
                self.timeout,
            )
            return {k: float(v / totals[-1]) for k, v in zip(keys, totals)}

        return score

    def failed(self) -> None:
        """Training failed on this rank: end the job (alone, just raise)."""
        if self.ranks > 1:
            _abort(self.comm, "training failed:\n" + traceback.format_exc())

    def finish(self, net) -> None:
        if self._threads is not None:
            net.n_threads = self._threads[1]
