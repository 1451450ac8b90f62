"""Data larger than memory: memory-mapped arrays read in chunks, and
iterables of (X, y) batches, through fit and partial_fit."""

import tracemalloc

import numpy as np
import pytest

import backprop as bp
from backprop import _sources


def make_net(seed=0, dtype="float32"):
    return bp.Sequential(
        bp.Dense(8, 16, activation="tanh"),
        bp.Dense(16, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 8))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, y


@pytest.fixture
def on_disk(tmp_path, data):
    X, y = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return (np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"))


def test_memory_mapped_data_trains_as_the_same_array_in_memory(data, on_disk):
    a, b = make_net(), make_net()
    ha = a.fit(*on_disk, epochs=10, batch_size=32, lr=0.3, chunk_size=256)
    hb = b.fit(*data, epochs=10, batch_size=32, lr=0.3, chunk_size=256)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history["accuracy"][-1] > 0.9


def test_memory_mapped_data_is_chunked_by_default(data, on_disk, monkeypatch):
    monkeypatch.setattr(_sources, "CHUNK_BYTES", 300 * 8 * 4)  # 300 rows → 288
    a, b = make_net(), make_net()
    a.fit(*on_disk, epochs=3, batch_size=32, lr=0.1)
    b.fit(*data, epochs=3, batch_size=32, lr=0.1, chunk_size=288)
    np.testing.assert_array_equal(a.params, b.params)
    c = make_net()
    c.fit(*data, epochs=3, batch_size=32, lr=0.1)  # a whole-array shuffle differs
    assert not np.array_equal(a.params, c.params)


def test_chunks_in_order_give_the_batches_of_the_whole_array(data):
    a, b = make_net(), make_net()
    a.fit(*data, epochs=2, batch_size=32, lr=0.1, shuffle=False, chunk_size=320)
    b.fit(*data, epochs=2, batch_size=32, lr=0.1, shuffle=False)
    np.testing.assert_array_equal(a.params, b.params)


def test_chunk_size_is_rounded_down_to_whole_batches():
    assert _sources.chunk_rows(100, 32, 8, 4) == 96
    assert _sources.chunk_rows(10, 32, 8, 4) == 32
    assert _sources.chunk_rows(None, 32, 1024, 4) == 16384
    with pytest.raises(ValueError, match="chunk_size"):
        _sources.chunk_rows(0, 32, 8, 4)


def test_a_memory_mapped_file_is_not_loaded_whole(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40_000, 64))  # 20 MB of float64 on disk
    y = rng.integers(0, 3, size=40_000)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    net = bp.Sequential(
        bp.Dense(64, 16, activation="relu"),
        bp.Dense(16, 3, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    net.fit(Xm[:64], y[:64], epochs=1, batch_size=32, lr=0.1)  # engine sized, warm
    tracemalloc.start()
    net.fit(Xm, y, epochs=1, batch_size=32, lr=0.1, chunk_size=1024)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < X.nbytes / 20, peak  # a chunk (256 kB) and its targets


def test_an_iterable_of_batches_trains_like_the_concatenated_arrays(data):
    X, y = data
    batches = [(X[i : i + 200], y[i : i + 200]) for i in range(0, 1000, 200)]
    a, b = make_net(), make_net()
    a.fit(batches, epochs=3, batch_size=40, lr=0.1, shuffle=False)
    b.fit(X, y, epochs=3, batch_size=40, lr=0.1, shuffle=False)
    np.testing.assert_array_equal(a.params, b.params)
    c, d = make_net(), make_net()  # shuffled: seeded, repeatable
    c.fit(batches, epochs=3, batch_size=40, lr=0.1)
    d.fit(batches, epochs=3, batch_size=40, lr=0.1)
    np.testing.assert_array_equal(c.params, d.params)
    assert not np.array_equal(a.params, c.params)


def test_batches_with_sample_weights(data):
    rng = np.random.default_rng(2)
    X, y = data
    w = rng.uniform(0, 2, size=len(X))
    batches = [(X[i : i + 250], y[i : i + 250], w[i : i + 250]) for i in range(0, 1000, 250)]
    a, b = make_net(), make_net()
    a.fit(batches, epochs=2, batch_size=50, lr=0.1, shuffle=False)
    b.fit(X, y, epochs=2, batch_size=50, lr=0.1, shuffle=False, sample_weight=w)
    np.testing.assert_array_equal(a.params, b.params)


def test_a_generator_feeds_one_epoch(data):
    X, y = data
    net = make_net()
    loss = net.partial_fit((X[i : i + 100], y[i : i + 100]) for i in range(0, 1000, 100))
    assert np.isfinite(loss)
    with pytest.raises(ValueError, match="X: a one-shot iterator"):
        net.fit((b for b in [(X, y)]), epochs=2)
    with pytest.raises(ValueError, match="no rows"):
        net.fit(iter([]))


def test_partial_fit_reads_a_memory_map_in_chunks(data, on_disk):
    a, b = make_net(), make_net()
    for _ in range(3):
        a.partial_fit(*on_disk, chunk_size=128)
        b.partial_fit(*data, chunk_size=128)
    np.testing.assert_array_equal(a.params, b.params)


def test_balanced_class_weights_count_every_chunk(data):
    X, y = data
    counts = np.bincount(y, minlength=3)
    w = (len(y) / (3 * counts))[y]
    a, b = make_net(), make_net()
    a.fit(X, y, epochs=2, lr=0.1, chunk_size=256, class_weight="balanced")
    b.fit(X, y, epochs=2, lr=0.1, chunk_size=256, sample_weight=w)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_validation_data_with_chunks(data, on_disk):
    X, y = data
    history = make_net().fit(*on_disk, epochs=2, lr=0.1, validation_data=(X[:100], y[:100]))
    assert len(history.history["val_loss"]) == 2


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda n, X, y: n.fit(X, y, validation_split=0.2, chunk_size=64),
            ValueError,
            "validation_split",
        ),
        (lambda n, X, y: n.fit([(X, y)], class_weight="balanced"), ValueError, "balanced"),
        (
            lambda n, X, y: n.fit([(X, y)], sample_weight=np.ones(len(X))),
            ValueError,
            "sample_weight",
        ),
        (lambda n, X, y: n.fit([X]), TypeError, "batch 0 is a ndarray"),
        (lambda n, X, y: n.fit([(X, y), (X[:, :3], y)]), ValueError, "batch 1: X"),
        (lambda n, X, y: n.fit([(X, y[:-1])]), ValueError, "batch 0: y"),
        (lambda n, X, y: n.fit(5), TypeError, "iterable of"),
        (lambda n, X, y: n.fit(X), TypeError, "y is missing"),
        (lambda n, X, y: n.fit(X[:, :3], y, chunk_size=64), ValueError, "8 columns"),
        (lambda n, X, y: n.fit(X, y[:-1], chunk_size=64), ValueError, "y must have one row"),
        (lambda n, X, y: n.fit(X, y, chunk_size=-1), ValueError, "chunk_size"),
    ],
)
def test_bad_streams_are_refused_naming_the_argument(data, call, error, message):
    with pytest.raises(error, match=message):
        call(make_net(), *data)


def test_a_bad_chunk_undoes_its_epoch(data):
    X, y = data
    X = X.copy()
    X[900, 3] = np.nan
    net = make_net()
    before = net.params.copy()
    with pytest.raises(ValueError, match="X rows 896:1000 contains NaN"):
        net.fit(X, y, epochs=1, lr=0.1, chunk_size=128, shuffle=False)
    np.testing.assert_array_equal(net.params, before)


def test_predict_and_evaluate_read_a_memory_map_in_chunks(data, on_disk, monkeypatch):
    """Chunks of 100 rows give the answers of the whole array in memory, to
    float32's rounding: BLAS may sum a product over another number of rows in
    another order, so the last bits may differ, and with them a label where
    two classes are that close."""
    monkeypatch.setattr(_sources, "CHUNK_BYTES", 100 * 8 * 4)  # 100-row chunks
    net = make_net()
    net.fit(*data, epochs=3, lr=0.3)
    proba = net.predict_proba(data[0])
    np.testing.assert_allclose(net.predict_proba(on_disk[0]), proba, rtol=1e-5, atol=1e-6)
    top_two = np.sort(proba, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-5  # no near-tie for the label
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(net.predict(on_disk[0])[clear], net.predict(data[0])[clear])
    mapped, whole = net.evaluate(*on_disk), net.evaluate(*data)
    assert mapped.keys() == whole.keys() == {"loss", "accuracy"}
    assert mapped["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-12 + np.mean(~clear))
    assert mapped["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_a_batch_that_fails_to_load_undoes_its_epoch(data):
    X, y = data
    net = make_net()
    net.optimizer = bp.Adam(0.01)
    net.fit(X, y, epochs=1)
    params, state, steps = (
        net.params.copy(),
        [s.copy() for s in net._opt_state],
        net.optimizer_steps,
    )

    def shards():
        yield X[:200], y[:200]
        yield X[200:400], y[200:400]
        raise OSError("a shard could not be read")

    ended = []

    class Ended(bp.callbacks.Callback):
        def on_train_end(self, net, logs):
            ended.append(True)

    with pytest.raises(OSError, match="shard"):
        net.fit(shards(), callbacks=[Ended()])
    np.testing.assert_array_equal(net.params, params)
    for before, after in zip(state, net._opt_state):
        np.testing.assert_array_equal(before, after)
    assert net.optimizer_steps == steps
    assert ended == [True]  # callbacks hear that training ended


def test_empty_memory_maps_are_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8)))
    empty = np.load(tmp_path / "empty.npy", mmap_mode="r")
    net = make_net()
    with pytest.raises(ValueError, match="X is empty"):
        net.fit(empty, np.zeros(0, int))
    with pytest.raises(ValueError, match="X is empty"):
        net.predict(empty)
    with pytest.raises(ValueError, match="X is empty"):
        net.evaluate(empty, np.zeros(0, int))


def test_memory_mapped_validation_data_is_read_in_chunks(tmp_path, data, monkeypatch):
    X, y = data
    big = np.random.default_rng(3).normal(size=(40_000, 8))  # 2.5 MB of float64
    np.save(tmp_path / "V.npy", big)
    Xv = np.load(tmp_path / "V.npy", mmap_mode="r")
    yv = (big[:, 0] > 0).astype(int)
    monkeypatch.setattr(_sources, "CHUNK_BYTES", 1000 * 8 * 4)  # 1,000-row chunks
    net = make_net()
    net.fit(X, y, epochs=1, lr=0.3, validation_data=(Xv, yv))  # sized and warm
    tracemalloc.start()
    net.fit(X, y, epochs=1, lr=0.3, validation_data=(Xv, yv))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < big.nbytes / 4, peak
    a, b = make_net(), make_net()  # the figures of the whole array
    ha = a.fit(X, y, epochs=2, lr=0.3, validation_data=(Xv, yv))
    hb = b.fit(X, y, epochs=2, lr=0.3, validation_data=(big, yv))
    np.testing.assert_allclose(ha.history["val_loss"], hb.history["val_loss"], rtol=1e-5)
    assert ha.history["val_accuracy"] == pytest.approx(hb.history["val_accuracy"], abs=1e-12)
    for chunk_size in (None, 256):
        with pytest.raises(ValueError, match="validation_data"):
            net.fit(X, y, validation_data=(Xv, yv[:-1]), chunk_size=chunk_size)


def test_a_stream_reserves_for_the_batches_it_gives(data):
    X, y = data
    net = make_net()
    net.fit([(X[:50], y[:50])], batch_size=100_000)
    assert net._engine.capacity == 50


def test_chunk_size_with_lists(data):
    X, y = data
    a, b = make_net(), make_net()
    a.fit(X.tolist(), y.tolist(), epochs=2, lr=0.1, chunk_size=256)
    b.fit(X, y, epochs=2, lr=0.1, chunk_size=256)
    np.testing.assert_array_equal(a.params, b.params)
