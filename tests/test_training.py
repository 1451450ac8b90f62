"""The trainer's parts that other code plugs into: the row order of an
epoch (backprop._sources.Order), epoch runners, and the optimizer's state
as the network shows it."""

import copy
import pickle

import numpy as np
import pytest

import backprop as bp
from backprop._engine import shuffled
from backprop._sources import Order
from backprop.training import EpochRunner


def net(seed=0):
    return bp.Sequential(
        bp.Dense(4, 8, "tanh"), bp.Dense(8, 3, "softmax"), loss="cross_entropy", seed=seed
    )


def data(n=50):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def test_one_chunk_is_a_permutation_drawn_by_the_epochs_seed_alone():
    order = Order(10)
    for seed in (5, 6, 5):  # (the same seed, the same order, whatever came before)
        expected = np.arange(10)
        shuffled(expected, seed)  # the core's shuffle
        ((rows, got),) = order.epoch(seed)
        assert rows == slice(0, 10)
        np.testing.assert_array_equal(got, expected)
    ((_, kept),) = order.epoch(-1)
    assert kept is None


def test_chunks_visit_every_row_once_and_whole_chunks_together():
    order = Order(23, chunk_rows=5)
    for seed in (1, 2):
        chunks = list(order.rows_of(seed))
        assert sorted(len(c) for c in chunks) == [3, 5, 5, 5, 5]
        assert all(c.max() - c.min() < 5 and (c.min() % 5 == 0 or len(c) == 3) for c in chunks)
        np.testing.assert_array_equal(np.sort(np.concatenate(chunks)), np.arange(23))
    assert [c.tolist() for c in order.rows_of(-1)] == [
        list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)
    ]


class Counting(EpochRunner):
    """A runner that trains as fit does and records what it was given."""

    def __init__(self):
        self.calls = []

    def start(self, net, plan):
        self.calls.append(("start", plan.batch_size, plan.source.rows))
        self.seed = plan.seed
        return plan

    def epoch(self, net, plan, epoch, lr):
        self.calls.append(("epoch", epoch, lr))
        return super().epoch(net, plan, epoch, lr)


def test_fit_visits_rows_in_the_order_it_describes():
    # An epoch of SGD with batch 1, by hand with train_step in the order
    # Order gives for fit's seed, is what fit does.
    X, y = data(12)
    a, b = net(), net()
    runner = Counting()
    a.fit(X, y, epochs=1, batch_size=1, lr=0.1, runner=runner)
    b.optimizer = bp.SGD(0.1)
    ((_, rows),) = Order(12).epoch(runner.seed + 1)
    for i in rows:
        b.train_step(X[i : i + 1], y[i : i + 1])
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)


def test_a_runner_of_ones_own_runs_every_epoch_of_fit():
    X, y = data()
    a, b = net(), net()
    runner = Counting()
    history = a.fit(X, y, epochs=3, batch_size=8, lr=0.05, runner=runner)
    expected = b.fit(X, y, epochs=3, batch_size=8, lr=0.05)
    assert runner.calls == [
        ("start", 8, 50),
        ("epoch", 1, 0.05),
        ("epoch", 2, 0.05),
        ("epoch", 3, 0.05),
    ]
    np.testing.assert_array_equal(a.params, b.params)
    assert history.history == expected.history


def test_a_runner_that_is_not_an_epoch_runner_is_refused_by_name():
    X, y = data()
    a = net()
    before = a.params.copy()
    with pytest.raises(TypeError, match="runner must be a backprop.training.EpochRunner"):
        a.fit(X, y, lr=0.1, runner="mpi")
    np.testing.assert_array_equal(a.params, before)


def test_optimizer_state_is_the_live_state_and_steps_can_be_set():
    X, y = data()
    a = net()
    assert a.optimizer_state == ()  # plain SGD keeps none
    a.optimizer = bp.Adam(1e-2)
    a.fit(X, y, epochs=1, batch_size=10)
    m, v = a.optimizer_state
    assert a.optimizer_steps == 5 and m.shape == v.shape == a.params.shape
    b = net()
    b.params = a.params
    b.optimizer = bp.Adam(1e-2)
    for mine, theirs in zip(b.optimizer_state, a.optimizer_state):
        mine[...] = theirs
    b.optimizer_steps = a.optimizer_steps
    a.fit(X, y, epochs=1, batch_size=10, shuffle=False)
    b.fit(X, y, epochs=1, batch_size=10, shuffle=False)
    np.testing.assert_array_equal(a.params, b.params)  # the same next updates
    assert b.optimizer_steps == 10


@pytest.mark.parametrize(
    "value, error",
    [(-1, ValueError), (1.5, TypeError), (2**62 + 1, ValueError), (2**63, ValueError)],
)
def test_bad_step_counts_are_refused(value, error):
    with pytest.raises(error, match="optimizer_steps"):
        net().optimizer_steps = value


def test_any_step_count_a_network_takes_survives_a_file_and_a_pickle(tmp_path):
    # The largest count the setter takes is one a model file holds: save,
    # pickle and deepcopy give it back rather than a file load refuses.
    a = net()
    a.optimizer = bp.Adam(1e-2)
    a.optimizer_steps = 2**62
    a.save(tmp_path / "a.npz")
    for b in (bp.load(tmp_path / "a.npz"), pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert b.optimizer_steps == 2**62
