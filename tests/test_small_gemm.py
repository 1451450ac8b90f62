"""The small matrix-product kernels (csrc/simd/gemm.h): every build this CPU
runs, in float32 and float64, against the numpy formulas and against the
portable build, at edge sizes around each vector width; the dense layers
through them and through BLAS; gradients, and training bit for bit the same
from one run to the next, on every build."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp
from backprop import _kernels, _ops
from backprop._codes import ActivationCode

RUNNABLE = [name for name, runs in _kernels.kernel_builds().items() if runs]
DTYPES = [np.float32, np.float64]
# around the vector widths (4, 8, 16 floats; 2, 4, 8 doubles) and the tiles'
# 6 and 12 rows
EDGES = (1, 2, 7, 8, 9, 13, 31, 33)
DEPTHS = (1, 3, 8, 17, 70)
TOL = {np.float32: 2e-5, np.float64: 1e-13}


def operands(kind, m, n, k, dtype, rng):
    """A, B stored as the kind reads them, and their product in float64."""
    A = rng.standard_normal((k, m) if kind == "tn" else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if kind == "nt" else (k, n)).astype(dtype)
    a = A.T if kind == "tn" else A
    b = B.T if kind == "nt" else B
    return A, B, a.astype(np.float64) @ b.astype(np.float64)


def expected(product, C0, alpha=1.0, beta=0.0, bias=None, relu=False, mask=None):
    """The epilogue of bp_gemm, by numpy: (C, z)."""
    z = alpha * product + beta * C0.astype(np.float64)
    if bias is not None:
        z = z + bias
    c = np.maximum(z, 0) if relu else z
    if mask is not None:
        c = c * (mask > 0)
    return c, z


def assert_close(got, want, dtype, k):
    tol = TOL[dtype] * max(1, k) ** 0.5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


EPILOGUES = {
    "plain": {},
    "alpha-beta": dict(alpha=-0.25, beta=1.0),
    "bias-relu": dict(bias=True, relu=True),
    "bias-z": dict(bias=True, z=True),
    "mask": dict(mask=True),
}


def run(kind, C0, A, B, dtype, rng, epilogue):
    """C and z from the kernel in the build in use, and the options given."""
    opts = dict(EPILOGUES[epilogue])
    m, n = C0.shape
    if opts.pop("bias", False):
        opts["bias"] = rng.standard_normal(n).astype(dtype)
    if opts.pop("mask", False):
        opts["mask"] = rng.standard_normal((m, n)).astype(dtype)
    z = np.full((m, n), np.nan, dtype) if opts.pop("z", False) else None
    C = C0.copy()
    assert _ops.small_gemm(kind, C, A, B, z=z, **opts)
    return C, z, opts


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nn", "tn", "nt"])
def test_every_build_computes_the_products_and_epilogues_as_numpy(build, dtype, kind):
    rng = np.random.default_rng(0)
    with _kernels.use_kernels(build):
        for m, n, k in itertools.product(EDGES, EDGES, DEPTHS):
            A, B, product = operands(kind, m, n, k, dtype, rng)
            C0 = rng.standard_normal((m, n)).astype(dtype)
            for epilogue in EPILOGUES:
                C, z, opts = run(kind, C0, A, B, dtype, rng, epilogue)
                want, want_z = expected(product, C0, **opts)
                assert_close(C, want, dtype, k)
                if z is not None:
                    assert_close(z, want_z, dtype, k)


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nn", "tn", "nt"])
def test_every_build_agrees_with_the_portable_build(build, dtype, kind):
    rng = np.random.default_rng(1)
    for m, n, k in [(32, 10, 32), (64, 32, 64), (9, 33, 17), (1, 128, 64), (50, 3, 300)]:
        A, B, _ = operands(kind, m, n, k, dtype, rng)
        C0 = rng.standard_normal((m, n)).astype(dtype)
        results = []
        for name in ("portable", build):
            with _kernels.use_kernels(name):
                results.append(run(kind, C0, A, B, dtype, np.random.default_rng(2), "bias-relu")[0])
        assert_close(results[1], results[0], dtype, k)


@pytest.mark.parametrize("build", RUNNABLE)
def test_a_transposed_b_wider_than_the_buffer_is_done_in_panels(build):
    # B read as Bᵀ is transposed into a 32 kB buffer a panel of columns at a
    # time: k = 300 leaves room for fewer than 30 columns in float32
    rng = np.random.default_rng(3)
    with _kernels.use_kernels(build):
        for dtype in DTYPES:
            A, B, product = operands("nt", 20, 100, 300, dtype, rng)
            C0 = rng.standard_normal((20, 100)).astype(dtype)
            C, _, opts = run("nt", C0, A, B, dtype, rng, "mask")
            assert_close(C, expected(product, C0, **opts)[0], dtype, 300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_product_beyond_the_buffer_is_declined_and_the_layer_takes_blas(dtype):
    rng = np.random.default_rng(4)
    A, B, product = operands("nt", 3, 5, 20000, dtype, rng)  # Bᵀ: not one column fits
    C = np.zeros((3, 5), dtype)
    assert not _ops.small_gemm("nt", C, A, B)
    assert not C.any()  # untouched
    delta, W = A, B  # dx = δ @ Wᵀ, W (n_in, n_out) = (5, 20000)
    x = rng.standard_normal((3, 5)).astype(dtype)
    dW, db, dx = np.empty_like(W), np.empty(20000, dtype), np.empty((3, 5), dtype)
    with _kernels.small_products("always"):
        _ops.dense_backward(dW, db, delta, x, W, dx)
    assert_close(dx, product, dtype, 20000)
    assert_close(dW, x.T.astype(np.float64) @ delta, dtype, 3)
    # a result narrower than a vector with a deep k: B is padded into the
    # buffer, which k = 20000 overflows; the forward layer takes BLAS
    x, W = rng.standard_normal((4, 20000)).astype(dtype), np.ascontiguousarray(B.T[:, :1])
    assert not _ops.small_gemm("nn", np.zeros((4, 1), dtype), x, W)
    out = np.empty((4, 1), dtype)
    with _kernels.small_products("always"):
        _ops.dense_forward(out, x, W, np.zeros(1, dtype), int(ActivationCode.IDENTITY))
    assert_close(out, x.astype(np.float64) @ W, dtype, 20000)


def layer_case(rng, dtype, rows=13, n_in=9, n_out=17):
    x = rng.standard_normal((rows, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "relu", "tanh", "gelu", "softmax"])
def test_dense_forward_is_the_same_through_the_kernel_and_through_blas(build, dtype, act):
    rng = np.random.default_rng(5)
    x, W, b = layer_case(rng, dtype)
    code = int(ActivationCode[act.upper()])
    outs = {}
    with _kernels.use_kernels(build):
        for mode in ("always", "never"):
            out, z = np.empty((13, 17), dtype), np.full((13, 17), np.nan, dtype)
            with _kernels.small_products(mode):
                _ops.dense_forward(out, x, W, b, code, 0.0, z)
            outs[mode] = out, z
    z_want = x.astype(np.float64) @ W + b
    for _out, z in outs.values():
        assert_close(z, z_want, dtype, 9)
    assert_close(outs["always"][0], outs["never"][0], dtype, 9)
    if act == "relu":
        assert_close(outs["always"][0], np.maximum(z_want, 0), dtype, 9)


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_is_the_same_through_the_kernel_and_through_blas(build, dtype):
    rng = np.random.default_rng(6)
    x, W, _ = layer_case(rng, dtype)
    delta = rng.standard_normal((13, 17)).astype(dtype)
    with _kernels.use_kernels(build):
        for mode in ("always", "never"):
            dW, db, dx = np.empty_like(W), np.empty(17, dtype), np.empty_like(x)
            with _kernels.small_products(mode):
                _ops.dense_backward(dW, db, delta, x, W, dx)
            assert_close(dW, x.T.astype(np.float64) @ delta, dtype, 13)
            assert_close(db, delta.astype(np.float64).sum(axis=0), dtype, 13)
            assert_close(dx, delta.astype(np.float64) @ W.T, dtype, 17)


def network(dtype, hidden="relu", seed=0):
    return bp.Sequential(
        bp.Dense(12, 9, activation=hidden),
        bp.Dense(9, 7, activation=hidden),
        bp.Dense(7, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_gradients_through_the_kernels_match_finite_differences(build, hidden):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((10, 12)), rng.integers(0, 3, 10)
    with _kernels.use_kernels(build), _kernels.small_products("always"):
        result = bp.gradcheck(network("float64", hidden), X, y)
    assert result.max_rel_error < 1e-6, result


def digits_fit(mode, optimizer=None, dropout=0.0):
    X, y = bp.datasets.load_digits(return_split=True)[0::2]
    layers = [bp.Dense(64, 32, "relu")]
    if dropout:
        layers.append(bp.Dropout(dropout))
    net = bp.Sequential(*layers, bp.Dense(32, 10, "softmax"), loss="cross_entropy", seed=0)
    with _kernels.small_products(mode):
        net.fit(X, y, epochs=3, batch_size=32, optimizer=optimizer or bp.SGD(lr=0.05), verbose=0)
    return net


@pytest.mark.parametrize("build", RUNNABLE)
@pytest.mark.parametrize("mode", ["rule", "always"])
def test_fit_is_bit_for_bit_the_same_from_run_to_run_on_every_build(build, mode):
    with _kernels.use_kernels(build):
        for kw in ({}, dict(optimizer=bp.Adam(lr=0.01)), dict(dropout=0.2)):
            first, again = digits_fit(mode, **kw), digits_fit(mode, **kw)
            np.testing.assert_array_equal(first.params, again.params)


@pytest.mark.parametrize("build", RUNNABLE)
def test_fit_through_the_kernels_trains_as_through_blas(build):
    # the sums run in another order: the weights differ in rounding only
    with _kernels.use_kernels(build):
        kernels, blas = digits_fit("always", dropout=0.2), digits_fit("never", dropout=0.2)
    np.testing.assert_allclose(kernels.params, blas.params, rtol=1e-4, atol=1e-4)


def test_the_rule_sends_large_products_to_blas_and_the_modes_override_it():
    huge = (True, "nn", 1024, 1024, 1024)
    assert not _ops.small_gemm_rule(*huge)
    with _kernels.small_products("always"):
        assert _ops.small_gemm_rule(*huge)
    with _kernels.small_products("never"):
        assert not _ops.small_gemm_rule(True, "nn", 1, 1, 1)
    with pytest.raises(ValueError, match="mode must be one of rule, never, always"):
        with _kernels.small_products("sometimes"):
            pass


def test_the_portable_build_chosen_by_the_environment_runs_the_kernels():
    code = "\n".join(
        [
            "import numpy as np, backprop as bp",
            "from backprop import _kernels, _ops",
            "assert _kernels.kernels_in_use() == 'portable'",
            "rng = np.random.default_rng(0)",
            "A, B = rng.standard_normal((33, 9)), rng.standard_normal((9, 31))",
            "C = np.empty((33, 31))",
            "assert _ops.small_gemm('nn', C, A, B)",
            "np.testing.assert_allclose(C, A @ B, rtol=1e-13, atol=1e-13)",
            "X, y = bp.datasets.load_digits(return_split=True)[0::2]",
            "net = bp.Sequential(bp.Dense(64, 32, 'relu'), bp.Dense(32, 10, 'softmax'),",
            "                    loss='cross_entropy', seed=0)",
            "net.fit(X, y, epochs=5, batch_size=32, lr=0.1, verbose=0)",
            "print(net.evaluate(X, y)['accuracy'])",
        ]
    )
    env = dict(os.environ, BACKPROP_KERNELS="portable")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(bp.__file__))),
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0.9


@pytest.mark.parametrize("build", RUNNABLE)
def test_a_product_on_one_thread_in_any_case_takes_the_kernels_at_least_as_often(build):
    """The bounds of a product that runs on one thread whatever takes it (a
    cut step's part) are never below the others, and no build gives the
    kernels a product far beyond what bench.kernels measured (512³); a
    product past 2^20 multiply-adds, which may go to BLAS's threads, takes
    them only when alone."""
    sizes = (1, 8, 10, 16, 33, 64, 128, 256, 512, 784, 1024, 2048)
    with _kernels.use_kernels(build):
        for f32, kind in itertools.product((True, False), ("nn", "tn", "nt")):
            for m, n, k in itertools.product(sizes, repeat=3):
                small = _ops.small_gemm_rule(f32, kind, m, n, k)
                alone = _ops.small_gemm_rule(f32, kind, m, n, k, alone=True)
                assert alone or not small, (f32, kind, m, n, k)
                assert not (small and m * n * k > 2**20), (f32, kind, m, n, k)
                assert not (alone and m * n * k > 2**27), (f32, kind, m, n, k)
