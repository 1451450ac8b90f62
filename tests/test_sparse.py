"""scipy.sparse inputs: fit, predict, predict_proba, evaluate, loss_and_grad
and train_step take a sparse X.  fit keeps it sparse: a matrix with 10 % of
its entries stored or more has each batch gathered dense, and trains as on
X.toarray() bit for bit; a sparser one runs the first layer's products on
the nonzeros, and trains as on X.toarray() up to rounding (checked here
against plain numpy formulas too)."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import backprop as bp
from backprop import _sources
from backprop import callbacks as cb
from backprop._engine import csr_rows

DENSE_ENOUGH = 0.3  # gathered dense (≥ _sources.SPARSE_DENSITY)
SPARSE = 0.03  # the first layer's sparse products


def make_net(n_in=20, dtype="float64", seed=1, loss="cross_entropy"):
    out = bp.Dense(12, 3, "softmax") if loss == "cross_entropy" else bp.Dense(12, 2)
    return bp.Sequential(
        bp.Dense(n_in, 12, "tanh"), out, loss=loss, dtype=dtype, seed=seed, n_threads=1
    )


def sparse_data(n=150, n_in=20, density=DENSE_ENOUGH, seed=0, empty_rows=True):
    rng = np.random.default_rng(seed)
    X = sp.random(n, n_in, density=density, format="csr", random_state=seed, dtype=np.float64)
    X.data = rng.normal(size=X.data.shape)
    if empty_rows:  # rows with no entries at all
        X = X.tolil()
        X[3, :] = 0
        X[n - 1, :] = 0
        X = X.tocsr()
        X.eliminate_zeros()
    y = rng.integers(0, 3, n)
    return X, y


def test_the_two_densities_take_the_two_paths():
    assert sparse_data(density=DENSE_ENOUGH)[0].nnz / (150 * 20) >= _sources.SPARSE_DENSITY
    assert sparse_data(density=SPARSE)[0].nnz / (150 * 20) < _sources.SPARSE_DENSITY


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_on_a_csr_matrix_is_fit_on_its_dense_array_bit_for_bit(dtype, optimizer, shuffle):
    X, y = sparse_data()
    dense, sparse = make_net(dtype=dtype), make_net(dtype=dtype)
    args = dict(epochs=3, batch_size=16, optimizer=optimizer, shuffle=shuffle)
    expected = dense.fit(X.toarray(), y, **args)
    history = sparse.fit(X, y, **args)
    np.testing.assert_array_equal(sparse.params, dense.params)
    assert history.history == expected.history
    assert sparse.optimizer_steps == dense.optimizer_steps


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", bp.SGD(0.05, momentum=0.9), "adam", "rmsprop"])
def test_fit_with_sparse_products_is_fit_on_the_dense_array_up_to_rounding(dtype, optimizer):
    X, y = sparse_data(density=SPARSE)
    dense, sparse = make_net(dtype=dtype), make_net(dtype=dtype)
    args = dict(epochs=3, batch_size=16, optimizer=optimizer)
    expected = dense.fit(X.toarray(), y, **args)
    history = sparse.fit(X, y, **args)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sparse.params, dense.params, **tol)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, **tol)


@pytest.mark.parametrize(
    "layers, loss",
    [
        ([(20, 3, "softmax")], "cross_entropy"),  # the sparse layer is the output layer
        ([(20, 1, "sigmoid")], "binary_cross_entropy"),
        ([(20, 2, "identity")], "mse"),
        ([(20, 9, "relu"), (9, 7, "leaky_relu"), (7, 3, "softmax")], "cross_entropy"),
    ],
)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sparse_products_in_other_stacks(layers, loss, optimizer):
    X, y = sparse_data(density=SPARSE)
    target = y if loss == "cross_entropy" else (y % 2 if layers[-1][1] == 1 else np.ones((150, 2)))
    nets = [
        bp.Sequential(*[bp.Dense(*layer) for layer in layers], loss=loss, dtype="float64", seed=2)
        for _ in range(2)
    ]
    expected = nets[0].fit(X.toarray(), target, epochs=3, batch_size=16, optimizer=optimizer)
    history = nets[1].fit(X, target, epochs=3, batch_size=16, optimizer=optimizer)
    np.testing.assert_allclose(nets[1].params, nets[0].params, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-12)


def test_same_seed_same_training_on_either_path():
    for density in (SPARSE, DENSE_ENOUGH):
        X, y = sparse_data(density=density)
        a, b = make_net(), make_net()
        a.fit(X, y, epochs=2, batch_size=16, optimizer="adam")
        b.fit(X, y, epochs=2, batch_size=16, optimizer="adam")
        np.testing.assert_array_equal(a.params, b.params)


def numpy_step(net, X, Y, lr):
    """One full-batch SGD step of a tanh → identity mse network, in numpy."""
    (W1, b1), (W2, b2) = [(layer.W.copy(), layer.b.copy()) for layer in net.layers]
    a1 = np.tanh(X @ W1 + b1)
    a2 = a1 @ W2 + b2
    d2 = (a2 - Y) / len(X)
    d1 = (d2 @ W2.T) * (1 - a1**2)
    return [W1 - lr * X.T @ d1, b1 - lr * d1.sum(0), W2 - lr * a1.T @ d2, b2 - lr * d2.sum(0)]


@pytest.mark.parametrize("optimizer", [bp.SGD(0.1), bp.SGD(0.1, momentum=0.9)])
def test_sparse_products_against_numpy(optimizer):
    # Plain SGD steps inside the backward pass (sparse_backward_sgd); with
    # momentum the gradient is stored first (sparse_backward), and the first
    # step of momentum is a plain step.
    X, _ = sparse_data(n=40, density=SPARSE, seed=4)
    X.data = np.abs(X.data) + 0.5
    Y = np.random.default_rng(1).normal(size=(40, 2))
    net = make_net(loss="mse")
    expected = numpy_step(net, X.toarray(), Y, 0.1)
    net.fit(X, Y, epochs=1, batch_size=40, shuffle=False, optimizer=optimizer)
    for got, want in zip([p for layer in net.layers for p in (layer.W, layer.b)], expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
def test_unsorted_and_repeated_columns_add_up_as_in_scipy(density):
    X, y = sparse_data(density=density, empty_rows=False)
    rng = np.random.default_rng(2)
    indices, data = X.indices.copy(), X.data.copy()
    for r in range(X.shape[0]):  # each row's entries in a random order
        row = slice(X.indptr[r], X.indptr[r + 1])
        order = rng.permutation(row.stop - row.start)
        indices[row], data[row] = indices[row][order], data[row][order]
    # and row 0 holds its first column twice, once more with the value 2
    indices = np.insert(indices, 0, indices[0])
    data = np.insert(data, 0, 2.0)
    indptr = X.indptr.copy()
    indptr[1:] += 1
    messy = sp.csr_matrix((data, indices, indptr), shape=X.shape)
    assert not messy.has_sorted_indices and messy.toarray()[0, indices[0]] == data[1] + 2
    dense, sparse = make_net(), make_net()
    dense.fit(messy.toarray(), y, epochs=2, batch_size=16)
    sparse.fit(messy, y, epochs=2, batch_size=16)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(
        sparse.predict_proba(messy), sparse.predict_proba(messy.toarray())
    )


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
@pytest.mark.parametrize(
    "convert",
    [sp.csc_matrix, sp.coo_matrix, sp.lil_matrix, sp.csr_array, sp.coo_array, sp.dok_matrix],
)
def test_other_formats_are_converted_to_csr(density, convert):
    X, y = sparse_data(density=density)
    a, b = make_net(), make_net()
    a.fit(X, y, epochs=2, batch_size=16)
    b.fit(convert(X), y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(b.params, a.params)
    np.testing.assert_array_equal(b.predict(convert(X)), a.predict(X))


@pytest.mark.parametrize("seed", range(6))
def test_random_patterns_with_empty_rows(seed):
    rng = np.random.default_rng(seed)
    n, n_in = int(rng.integers(1, 60)), int(rng.integers(1, 30))
    dense = rng.normal(size=(n, n_in)) * (rng.random((n, n_in)) < rng.random() * 0.2)
    dense[rng.random(n) < 0.3] = 0  # empty rows
    X, y = sp.csr_matrix(dense), rng.integers(0, 3, n)
    a, b = make_net(n_in), make_net(n_in)
    batch = int(rng.integers(1, 20))
    a.fit(dense, y, epochs=2, batch_size=batch, optimizer="adam")
    b.fit(X, y, epochs=2, batch_size=batch, optimizer="adam")
    np.testing.assert_allclose(b.params, a.params, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(b.predict_proba(X), b.predict_proba(dense))


def test_an_all_zero_matrix_trains_as_zeros():
    X = sp.csr_matrix((40, 20))
    y = np.arange(40) % 3
    a, b = make_net(), make_net()
    a.fit(np.zeros((40, 20)), y, epochs=2, batch_size=8)
    b.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(b.params, a.params)
    assert b.evaluate(X, y) == a.evaluate(np.zeros((40, 20)), y)


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_inference_equals_the_dense_results(density, loss):
    X, y = sparse_data(density=density)
    net = make_net(loss=loss)
    target = y if loss == "cross_entropy" else np.random.default_rng(0).normal(size=(150, 2))
    net.fit(X.toarray(), target, epochs=2, batch_size=16)
    D = X.toarray()
    np.testing.assert_array_equal(net.predict_proba(X), net.predict_proba(D))
    np.testing.assert_array_equal(net.predict(X), net.predict(D))
    assert net.evaluate(X, target) == net.evaluate(D, target)
    np.testing.assert_array_equal(net.predict_proba(X[5]), net.predict_proba(D[5:6]))  # one row


def test_inference_densifies_a_chunk_at_a_time(monkeypatch):
    X, y = sparse_data(n=300)
    net = make_net()
    net.fit(X, y, epochs=1, batch_size=16)
    whole, scores = net.predict_proba(X), net.evaluate(X, y)
    monkeypatch.setattr(_sources, "CHUNK_BYTES", 7 * 20 * 8)  # chunks of 7 rows
    np.testing.assert_allclose(net.predict_proba(X), whole, rtol=1e-14, atol=1e-15)
    chunked = net.evaluate(X, y)
    assert chunked["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-12)
    assert chunked["loss"] == pytest.approx(scores["loss"], rel=1e-12)


def test_loss_and_grad_and_train_step_take_a_sparse_batch():
    X, y = sparse_data(n=16)
    a, b = make_net(), make_net()
    assert a.loss_and_grad(X, y) == b.loss_and_grad(X.toarray(), y)
    np.testing.assert_array_equal(a.grads, b.grads)
    assert a.train_step(sp.csc_matrix(X), y, lr=0.1) == b.train_step(X.toarray(), y, lr=0.1)
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
def test_validation_data_sample_weight_and_class_weight(density):
    X, y = sparse_data(density=density)
    Xv, yv = sparse_data(n=50, seed=3)
    w = np.random.default_rng(5).random(150)
    args = dict(epochs=3, batch_size=16, sample_weight=w, class_weight="balanced")
    a, b, c = make_net(), make_net(), make_net()
    expected = a.fit(X.toarray(), y, validation_data=(Xv.toarray(), yv), **args)
    history = b.fit(X, y, validation_data=(Xv, yv), **args)
    mixed = c.fit(X, y, validation_data=(Xv.toarray(), yv), **args)  # dense validation
    assert history.history == mixed.history
    np.testing.assert_allclose(b.params, a.params, rtol=1e-12, atol=1e-12)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-12, atol=1e-12)
    # dense training, sparse validation
    d = make_net()
    assert d.fit(X.toarray(), y, validation_data=(Xv, yv), **args).history == expected.history


def test_validation_split_holds_out_the_rows_of_the_dense_run():
    X, y = sparse_data()
    a, b = make_net(), make_net()
    expected = a.fit(X.toarray(), y, epochs=3, batch_size=16, validation_split=0.2)
    history = b.fit(X, y, epochs=3, batch_size=16, validation_split=0.2)
    np.testing.assert_array_equal(b.params, a.params)
    assert history.history == expected.history


def test_callbacks_and_early_stopping():
    X, y = sparse_data()
    runs = []
    for data in (X.toarray(), X):
        net = make_net()
        history = net.fit(
            data,
            y,
            epochs=30,
            batch_size=16,
            lr=0.5,
            early_stopping=True,
            patience=2,
            callbacks=[cb.StepDecay(2, 0.5)],
        )
        runs.append((net.params.copy(), history.history))
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    assert runs[1][1] == runs[0][1]


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
def test_chunk_size_and_batches_of_sparse_rows(density):
    X, y = sparse_data(density=density)
    a, b = make_net(), make_net()
    a.fit(X.toarray(), y, epochs=2, batch_size=8, chunk_size=40)
    b.fit(X, y, epochs=2, batch_size=8, chunk_size=40)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-12, atol=1e-12)
    batches = [(X[i : i + 50], y[i : i + 50]) for i in range(0, 150, 50)]  # (densified)
    c, d = make_net(), make_net()
    c.fit([(Xb.toarray(), yb) for Xb, yb in batches], epochs=2, batch_size=8)
    d.fit(batches, epochs=2, batch_size=8)
    np.testing.assert_array_equal(d.params, c.params)


class StopAt(cb.Callback):
    """Interrupts training once epoch `at` is over (and saved)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, net, epoch, logs):
        if epoch == self.at + 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("density", [SPARSE, DENSE_ENOUGH])
@pytest.mark.parametrize("every", [None, 3])
def test_a_checkpointed_run_on_sparse_data_resumes(tmp_path, density, every):
    X, y = sparse_data(density=density)
    args = dict(epochs=5, batch_size=16, optimizer="adam", validation_data=(X[:30], y[:30]))
    whole = make_net()  # (saving within epochs sums the loss by stretches of `every` batches)
    expected = whole.fit(X, y, checkpoint=tmp_path / "all.npz", checkpoint_every=every, **args)
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        make_net().fit(X, y, checkpoint=path, checkpoint_every=every, callbacks=[StopAt(2)], **args)
    again = make_net()
    history = again.fit(X, y, checkpoint=path, checkpoint_every=every, **args)
    np.testing.assert_array_equal(again.params, whole.params)
    assert history.history == expected.history


def test_integers_and_bools_become_the_networks_floats():
    X, y = sparse_data()
    X.data = np.round(X.data * 3)
    as_int, as_bool = X.astype(np.int32), (X != 0).astype(bool)
    for other, cast in ((as_int, X), (as_bool, (X != 0).astype(np.float64))):
        a, b = make_net(dtype="float32"), make_net(dtype="float32")
        a.fit(cast, y, epochs=2, batch_size=16)
        b.fit(other, y, epochs=2, batch_size=16)
        np.testing.assert_array_equal(b.params, a.params)


def broken(kind):
    X, y = sparse_data(n=30, density=DENSE_ENOUGH)
    if kind == "index too large":
        X.indices[5] = 20
    elif kind == "negative index":
        X.indices[5] = -1
    elif kind == "indptr falls":
        X.indptr[4], X.indptr[5] = X.indptr[5], X.indptr[4]
    elif kind == "indptr past the data":
        X.indptr[-1] = X.indptr[-1] + 5
    elif kind == "NaN":
        X.data[2] = np.nan
    elif kind == "infinity":
        X.data[2] = -np.inf
    return X, y


@pytest.mark.parametrize(
    "kind, message",
    [
        ("index too large", r"X: its column indices must lie in \[0, 20\)"),
        ("negative index", r"X: its column indices must lie in \[0, 20\)"),
        ("indptr falls", "X: its CSR structure is broken"),
        ("indptr past the data", "X: its CSR structure is broken"),
        ("NaN", "X contains NaN or infinity"),
        ("infinity", "X contains NaN or infinity"),
    ],
)
def test_bad_matrices_are_refused_naming_x(kind, message):
    X, y = broken(kind)
    net = make_net()
    before = net.params.copy()
    for call in (
        lambda: net.fit(X, y, epochs=1),
        lambda: net.predict(X),
        lambda: net.predict_proba(X),
        lambda: net.evaluate(X, y),
        lambda: net.train_step(X, y),
        lambda: net.loss_and_grad(X, y),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    np.testing.assert_array_equal(net.params, before)
    good, _ = sparse_data(n=30)
    with pytest.raises(ValueError, match=message.replace("X", r"validation_data\[0\]", 1)):
        net.fit(good, y, validation_data=(X, y))


def test_shapes_and_types_are_refused_naming_x():
    X, y = sparse_data()
    net = make_net()
    with pytest.raises(ValueError, match=r"X must have 20 columns \(features\), got shape"):
        net.fit(sp.csr_matrix((150, 21)), y)
    with pytest.raises(ValueError, match=r"X must have 20 columns"):
        net.predict(sp.csr_matrix((5, 19)))
    with pytest.raises(ValueError, match=r"X is empty \(shape \(0, 20\)\)"):
        net.fit(sp.csr_matrix((0, 20)), y[:0])
    with pytest.raises(ValueError, match=r"X is empty"):
        net.predict(sp.csr_matrix((0, 20)))
    with pytest.raises(TypeError, match="X must hold real numbers, got dtype complex128"):
        net.fit(X.astype(np.complex128), y)
    with pytest.raises(ValueError, match="X must be 2-D, got a 1-D sparse array"):
        net.predict(sp.coo_array(np.ones(20)))
    with pytest.raises(ValueError, match=r"y must have one row per sample|y"):
        net.fit(X, y[:-1])
    with pytest.raises(TypeError, match="y is missing"):
        net.fit(X)


def test_the_core_rechecks_the_rows_it_reads():
    X, _ = sparse_data(n=10)
    data, indices, indptr = X.data, X.indices.astype(np.intp), X.indptr.astype(np.intp)
    out = np.empty((10, 20))
    csr_rows(out, data, indices, indptr)
    np.testing.assert_array_equal(out, X.toarray())
    csr_rows(out[:4], data, indices, indptr, 6)
    np.testing.assert_array_equal(out[:4], X.toarray()[6:])
    bad = indices.copy()
    bad[-1] = 20
    with pytest.raises(ValueError, match="indptr and indices must describe rows"):
        csr_rows(out, data, bad, indptr)
    with pytest.raises(ValueError, match="first and out must pick rows"):
        csr_rows(out, data, indices, indptr, 1)
    net = make_net()
    engine = net._engine
    engine.reserve(4)
    Y = np.eye(3)[np.arange(10) % 3]
    for args in ((data, bad, indptr), (data, indices, indptr[::-1].copy())):
        with pytest.raises(ValueError, match="indptr and indices must describe rows"):
            engine.train_epoch_csr(*args, Y, np.arange(10), 4, 0.1)
    with pytest.raises(ValueError, match="indptr must have 11 entries"):
        engine.train_epoch_csr(data, indices, indptr[:-1], Y, None, 4, 0.1)


def test_sparse_arguments_elsewhere_are_refused_clearly():
    X, y = sparse_data()
    net = make_net()
    with pytest.raises(TypeError, match="sample_weight must be a dense array here"):
        net.fit(X, y, sample_weight=sp.csr_matrix(np.ones((150, 1))))
    with pytest.raises(TypeError, match="must be a dense array here, got a scipy.sparse"):
        net.forward(X)


def big_sparse(n, n_in, per_row):
    """An (n, n_in) CSR matrix of `per_row` random entries a row."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, n_in, n * per_row).astype(np.int32)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int32)
    return sp.csr_matrix((rng.normal(size=n * per_row), indices, indptr), shape=(n, n_in))


def test_training_never_densifies_the_matrix():
    # 20,000 × 5,000 float64 would take 800 MB dense; at 0.2 % it is 2.4 MB.
    n, n_in = 20_000, 5_000
    X = big_sparse(n, n_in, 10)
    assert X.nnz / (n * n_in) < _sources.SPARSE_DENSITY
    y = np.arange(n) % 3
    net = make_net(n_in)
    dense_bytes = n * n_in * 8
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=200)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        net.predict(X)  # densified 64 MiB at a time
        predict_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit_peak < dense_bytes / 40
    assert predict_peak < dense_bytes / 4


def test_gathered_training_never_densifies_the_matrix():
    n, n_in = 4_000, 5_000  # 160 MB dense; at 12 % it is gathered a batch at a time
    X = big_sparse(n, n_in, 600)
    assert X.nnz / (n * n_in) >= _sources.SPARSE_DENSITY
    y = np.arange(n) % 3
    net = make_net(n_in)
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * n_in * 8 / 4
