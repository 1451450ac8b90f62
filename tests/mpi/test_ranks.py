"""backprop.distributed on every rank of COMM_WORLD.  tests/test_distributed.py
runs this file under `mpiexec -n 2` and `mpiexec -n 3`; run alone, it is a
world of one rank."""

import os
import tempfile

import numpy as np
import pytest

import backprop as bp

dist = pytest.importorskip("backprop.distributed")
MPI = dist.MPI
comm = MPI.COMM_WORLD
ranks, me = comm.Get_size(), comm.Get_rank()


def make_net(seed=0, dtype="float64"):
    return bp.Sequential(
        bp.Dense(8, 16, activation="tanh"),
        bp.Dense(16, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


def data(n=997):  # not a multiple of any global batch: the last one is split unevenly
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 8))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, y


class RowLog:
    """An array that records which rows are read from it."""

    def __init__(self, array):
        self.array, self.shape, self.rows = array, array.shape, []

    def __getitem__(self, rows):
        self.rows.extend(np.arange(self.shape[0])[rows].tolist())
        return self.array[rows]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ranks_train_like_one_process_with_their_joint_batch(shuffle, optimizer):
    X, y = data()
    net = make_net()
    history = dist.fit(
        net,
        X,
        y,
        epochs=4,
        batch_size=10,
        optimizer=optimizer,
        shuffle=shuffle,
        validation_data=(X[:101], y[:101]),
    )
    alone = make_net()  # the same training in this process, batch ranks × 10
    expected = alone.fit(
        X,
        y,
        epochs=4,
        batch_size=10 * ranks,
        optimizer=optimizer,
        shuffle=shuffle,
        validation_data=(X[:101], y[:101]),
    )
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-10, atol=1e-12)
    replicas = comm.allgather(net.params)
    assert all(np.array_equal(r, net.params) for r in replicas)  # identical updates


def test_sample_weights_and_float32():
    X, y = data()
    w = np.random.default_rng(1).uniform(0, 2, len(X))
    net, alone = make_net(dtype="float32"), make_net(dtype="float32")
    dist.fit(net, X, y, epochs=2, batch_size=16, lr=0.1, sample_weight=w)
    alone.fit(X, y, epochs=2, batch_size=16 * ranks, lr=0.1, sample_weight=w)
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-4, atol=1e-5)


def test_biases_left_undecayed_train_as_in_one_process():
    """decay_biases=False reaches every rank's update (apply_update)."""
    X, y = data()

    def adamw(**kw):
        return bp.AdamW(0.01, l2=0.05, weight_decay=0.5, **kw)

    net, alone, decayed = make_net(), make_net(), make_net()
    for layer in [*net.layers, *alone.layers, *decayed.layers]:
        layer.b[...] = 1.0  # (biases that decay would move)
    dist.fit(net, X, y, epochs=2, batch_size=10, optimizer=adamw(decay_biases=False))
    alone.fit(X, y, epochs=2, batch_size=10 * ranks, optimizer=adamw(decay_biases=False))
    dist.fit(decayed, X, y, epochs=2, batch_size=10, optimizer=adamw())
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)
    assert not np.allclose(net.params, decayed.params, rtol=1e-6, atol=0)


def test_each_rank_reads_only_its_rows():
    X, y = data()
    logged = RowLog(X)
    dist.fit(make_net(), logged, y, epochs=1, batch_size=10, lr=0.1)
    mine = logged.rows
    assert len(mine) == len(set(mine))
    assert abs(len(mine) - len(X) / ranks) <= len(X) / (10 * ranks) + 1
    every = comm.allgather(set(mine))
    assert set().union(*every) == set(range(len(X)))  # every row, once
    assert sum(len(s) for s in every) == len(X)


def test_memory_mapped_rows():
    X, y = data()
    a, b = make_net(), make_net()
    with tempfile.TemporaryDirectory() as folder:  # (one per rank)
        path = os.path.join(folder, "X.npy")
        np.save(path, X.astype(np.float32))
        dist.fit(a, np.load(path, mmap_mode="r"), y, epochs=2, batch_size=8, lr=0.1)
    dist.fit(
        b, X.astype(np.float32), y, epochs=2, batch_size=8, lr=0.1, chunk_size=10**6
    )  # a memory map is read in chunks
    np.testing.assert_array_equal(a.params, b.params)


def test_broadcast_gives_every_replica_the_weights_of_rank_0():
    net = make_net(seed=me)  # a different start on every rank
    net.optimizer = bp.Adam(1e-3)
    X, y = data(64)
    net.train_step(X, y)  # and different optimizer state
    root = comm.bcast(net.params.copy() if me == 0 else None)
    dist.broadcast_parameters(net)
    np.testing.assert_array_equal(net.params, root)
    assert comm.allgather(net.optimizer_steps) == [1] * ranks


def test_allreduce_sums_the_weighted_gradients():
    net = make_net()
    net.grads[...] = me + 1
    dist.allreduce_gradients(net, weight=0.5)
    np.testing.assert_allclose(net.grads, 0.5 * ranks * (ranks + 1) / 2)


def test_threads_per_rank_divides_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert dist.threads_per_rank() == max(1, cores // ranks)  # all ranks on this host
    net = make_net()
    dist.fit(net, *data(64), epochs=1, lr=0.1)
    assert net.n_threads is None  # restored afterwards


def test_ranks_must_pass_the_same_rows():
    X, y = data(100 + (me if ranks > 1 else 0))
    if ranks == 1:
        pytest.skip("needs ranks with different data")
    with pytest.raises(ValueError, match="X: every rank must pass the same rows"):
        dist.fit(make_net(), X, y, lr=0.1)


@pytest.mark.parametrize("chunk_size", [None, 100])
def test_memory_maps_are_visited_in_the_chunks_of_sequential_fit(chunk_size):
    X, y = data()
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "X.npy"), X)
        mapped = np.load(os.path.join(folder, "X.npy"), mmap_mode="r")
        net, alone = make_net(), make_net()
        dist.fit(net, mapped, y, epochs=3, batch_size=10, lr=0.1, chunk_size=chunk_size)
        alone.fit(mapped, y, epochs=3, batch_size=10 * ranks, lr=0.1, chunk_size=chunk_size)
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)


def test_refused_arguments_on_one_rank_raise_on_every_rank():
    X, y = data(60)
    w = np.ones(len(X))
    if me == ranks - 1:
        w[0] = -1  # only the last rank's weights are bad
    error = ValueError if me == ranks - 1 else RuntimeError
    with pytest.raises(error, match="sample_weight" if error is ValueError else "refused"):
        dist.fit(make_net(), X, y, sample_weight=w, lr=0.1, timeout=30)
    with pytest.raises(ValueError, match="X is empty"):
        dist.fit(make_net(), X[:0], y[:0], lr=0.1)


def test_an_iterable_of_batches_is_refused_on_every_rank():
    # It has no rows to share out: refused by name (not a TypeError from
    # gathering its unknown row count), and the other ranks raise too.
    X, y = data(60)
    batches = [(X[:30], y[:30]), (X[30:], y[30:])]
    last = me == ranks - 1
    error, match = (ValueError, "y is missing") if last else (RuntimeError, "refused")
    with pytest.raises(error, match=match):
        dist.fit(make_net(), *((batches, None) if last else (X, y)), lr=0.1, timeout=30)


def test_every_argument_of_fit_passes_through_but_validation_split():
    X, y = data()
    net, alone = make_net(), make_net()
    dist.fit(net, X, y, epochs=2, batch_size=10, lr=0.1, class_weight="balanced")
    alone.fit(X, y, epochs=2, batch_size=10 * ranks, lr=0.1, class_weight="balanced")
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="validation_split: give validation_data"):
        dist.fit(make_net(), X, y, validation_split=0.2, timeout=30)


@pytest.mark.parametrize("differs", ["sizes", "dtype", "activation"])
def test_ranks_must_train_the_same_network(differs):
    if ranks == 1:
        pytest.skip("needs ranks with different networks")
    X, y = data(60)
    other = me != 0
    hidden = 17 if other and differs == "sizes" else 16
    dtype = "float32" if other and differs == "dtype" else "float64"
    act = "relu" if other and differs == "activation" else "tanh"
    net = bp.Sequential(
        bp.Dense(8, hidden, activation=act),
        bp.Dense(hidden, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
    )
    with pytest.raises(ValueError, match="net: every rank must train the same network"):
        dist.fit(net, X, y, lr=0.1, timeout=30)


class _StopAt(bp.callbacks.Callback):
    """Interrupts training once epoch `at` is over (and saved)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, net, epoch, logs):
        if epoch == self.at + 1:
            raise KeyboardInterrupt


def test_a_checkpointed_run_resumes_on_every_rank_from_rank_0s_file():
    X, y = data()
    folder = comm.bcast(tempfile.mkdtemp() if me == 0 else None)  # one file for the job
    path = os.path.join(folder, "run.npz")
    whole = make_net()
    dist.fit(whole, X, y, epochs=4, batch_size=10, optimizer="adam")
    with pytest.raises(KeyboardInterrupt):
        dist.fit(
            make_net(),
            X,
            y,
            epochs=4,
            batch_size=10,
            optimizer="adam",
            callbacks=[_StopAt(2)],
            checkpoint=path,
        )
    comm.Barrier()
    resumed = make_net()
    history = dist.fit(resumed, X, y, epochs=4, batch_size=10, optimizer="adam", checkpoint=path)
    assert history.epoch == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.params, whole.params)


def test_sparse_rows_train_like_one_process_with_their_joint_batch():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = data()
    X[np.abs(X) < 1.2] = 0  # about a quarter of the entries left
    Xs = sparse.csr_matrix(X)
    net = make_net()
    history = dist.fit(
        net, Xs, y, epochs=3, batch_size=10, validation_data=(sparse.coo_matrix(X[:101]), y[:101])
    )
    alone = make_net()  # (each rank's shares are densified: the products are dense ones)
    expected = alone.fit(X, y, epochs=3, batch_size=10 * ranks, validation_data=(X[:101], y[:101]))
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-10, atol=1e-12)


def dropout_net(seed=0, dtype="float64"):
    return bp.Sequential(
        bp.Dense(8, 16, activation="relu"),
        bp.Dropout(0.5),
        bp.Dense(16, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ranks_with_dropout_train_like_one_process_mask_for_mask(optimizer):
    """Each rank draws its rows of the global batch's masks: together the
    masks of one process with the joint batch (991 rows: the last batch is
    shared unevenly; under 3 ranks it is one row, and two ranks get none)."""
    X, y = data(991)
    net = dropout_net(seed=me)  # rank 0's weights and masks' stream win
    dist.fit(net, X, y, epochs=3, batch_size=10, optimizer=optimizer)
    alone = dropout_net()
    alone.fit(X, y, epochs=3, batch_size=10 * ranks, optimizer=optimizer)
    np.testing.assert_allclose(net.params, alone.params, rtol=1e-10, atol=1e-12)
    assert comm.allgather(net.dropout_steps) == [alone.dropout_steps] * ranks
    plain = make_net()  # (a network without dropout trains otherwise)
    assert comm.allgather(plain.dropout) == [(0.0, 0.0)] * ranks


@pytest.mark.skipif(ranks == 1, reason="needs two ranks")
def test_ranks_with_other_dropout_are_refused():
    X, y = data(64)
    net = dropout_net() if me == 0 else make_net()
    with pytest.raises((ValueError, RuntimeError), match="same network|refused"):
        dist.fit(net, X, y, epochs=1, batch_size=8)
