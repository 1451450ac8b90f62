import numpy as np
import pytest

import backprop as bp
from backprop import datasets


def test_digits_are_the_uci_digits():
    X, y = datasets.load_digits(scale=None)
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    unit, _ = datasets.load_digits(scale="unit", dtype="float32")
    assert unit.dtype == np.float32 and unit.max() == 1
    std, _ = datasets.load_digits()
    used = X.std(0) > 0
    np.testing.assert_allclose(std.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(std.std(0)[used], 1)


def test_digits_split_is_stratified_fixed_and_leak_free():
    X_train, X_test, y_train, y_test = datasets.load_digits(return_split=True, seed=0)
    assert len(X_train) + len(X_test) == 1797
    assert len(X_test) == pytest.approx(0.2 * 1797, abs=10)
    counts = np.bincount(y_test)
    assert counts.min() >= 34 and counts.max() <= 37
    again = datasets.load_digits(return_split=True, seed=0)
    np.testing.assert_array_equal(again[1], X_test)
    np.testing.assert_allclose(X_train.mean(0), 0, atol=1e-12)  # training statistics only
    assert np.abs(X_test.mean(0)).max() > 1e-3
    raw_train, raw_test, _, _ = datasets.load_digits(return_split=True, seed=0, scale=None)
    assert not (raw_train[:, None, :] == raw_test[None, :, :]).all(-1).any(1).all()


def test_truth_tables():
    for gate, expect in [
        ("and", [0, 0, 0, 1]),
        ("or", [0, 1, 1, 1]),
        ("nand", [1, 1, 1, 0]),
        ("xor", [0, 1, 1, 0]),
    ]:
        X, y = datasets.truth_table(gate)
        assert X.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert y.tolist() == expect
    with pytest.raises(ValueError, match="gate"):
        datasets.truth_table("implies")


def test_spirals_are_seeded_and_balanced():
    X, y = datasets.make_spirals(201, seed=3)
    assert X.shape == (201, 2) and np.bincount(y).tolist() == [101, 100]
    np.testing.assert_array_equal(datasets.make_spirals(201, seed=3)[0], X)
    assert not np.array_equal(datasets.make_spirals(201, seed=4)[0], X)
    # the two arms are point reflections of each other (before noise)
    X0, y0 = datasets.make_spirals(400, noise=0.0, seed=0)
    assert np.abs(X0).max() <= 1 + 1e-12
    with pytest.raises(ValueError, match="n_samples"):
        datasets.make_spirals(1)


def test_split_checks_arguments():
    with pytest.raises(ValueError, match="test_size"):
        datasets.train_test_split(np.ones((4, 1)), np.ones(4), test_size=1.5)
    with pytest.raises(ValueError, match="same number of rows"):
        datasets.train_test_split(np.ones((4, 1)), np.ones(3))
    with pytest.raises(ValueError, match="scale"):
        bp.datasets.load_digits(scale="minmax")
