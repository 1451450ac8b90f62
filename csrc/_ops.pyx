# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# backprop._ops: the kernels of kernels.pxd, one call each, for the layer API
# (Dense.forward / Dense.backward), the standalone activations and losses, and
# the tests that hold every kernel against a plain numpy formula.
#
# Callers pass C-contiguous 2-D arrays of one float dtype (the Python layer
# converts and validates, and names what is wrong); each function re-checks
# that the shapes fit together, so that no call can read or write past a
# buffer.  The GIL is released around every kernel.

from kernels cimport (
    real, r_exp, all_finite as k_all_finite, BP_SELU_SCALE, BP_SELU_ALPHA,
    BP_GELU_CUBIC,
    act_forward as k_act_forward, act_backward as k_act_backward,
    loss_forward_backward as k_loss_forward_backward,
    output_delta as k_output_delta, regression_loss, regression_error as k_regression_error,
    loss_value as k_loss_value, loss_gradient as k_loss_gradient,
    act_keeps_z as k_act_keeps_z,
    dense_forward as k_dense_forward,
    dense_backward as k_dense_backward, class_labels as k_class_labels,
    input_gradient as k_input_gradient, weight_gradient as k_weight_gradient,
    bp_gemm, bp_kernels, bp_small_gemm, BP_GEMM_NN, BP_GEMM_TN, BP_GEMM_NT,
    Optimizer, optimizer_update as k_optimizer_update,
    dropout_forward as k_dropout_forward, dropout_backward as k_dropout_backward,
)
from shuffle cimport dropout_mask as k_dropout_mask
from libc.math cimport isfinite
from libc.string cimport memset

from backprop._codes cimport RELU, SELU, MSE, CROSS_ENTROPY, POISSON, MAE, HUBER, SGD, ADAGRAD

import numpy as np

include "choose.pxi"

# The constants of the smooth units, as the kernels take them (for their ONNX
# forms): selu's λ and α, and the tanh form of gelu's cubic coefficient.
SELU_SCALE = BP_SELU_SCALE
SELU_ALPHA = BP_SELU_ALPHA
GELU_CUBIC = BP_GELU_CUBIC


cdef int known(str name, int code, int last) except -1:
    # Raise unless `code` is one of the core's codes 0 … last for `name`.
    if code < 0 or code > last:
        raise ValueError(f"unknown {name} code {code} (the core's are 0 … {last})")
    return 0


cdef int fits(str name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t want_rows,
              Py_ssize_t want_cols) except -1:
    # Raise unless an array named `name` of shape (rows, cols) has the shape
    # (want_rows, want_cols) and is not empty (cols = want_cols = 1 for 1-D).
    if rows != want_rows or cols != want_cols:
        raise ValueError(f"{name} must have shape ({want_rows}, {want_cols}), "
                         f"got ({rows}, {cols})")
    if rows == 0 or cols == 0:
        raise ValueError(f"{name} is empty")
    return 0


cdef int loss_known(int loss, double huber_delta) except -1:
    # Raise unless `loss` is one of the core's loss codes and, for huber,
    # huber_delta (its δ) a finite number > 0 (the other losses leave it unread).
    known("loss", loss, HUBER)
    if loss == HUBER and not (isfinite(huber_delta) and huber_delta > 0):
        raise ValueError(f"huber_delta must be a finite number > 0, got {huber_delta}")
    return 0


cdef real* pre_activation(int act, object z, const real[:, ::1] a) except? NULL:
    # The data of z, a C-contiguous array of a's dtype and shape, for an
    # activation whose derivative takes z (act_keeps_z); NULL for the others,
    # which leave it unread.
    cdef const real[:, ::1] zv
    if not k_act_keeps_z(act):
        return NULL
    if z is None:
        raise ValueError(f"z: the derivative of activation {act} is taken from the "
                         "pre-activation z, not from the outputs: pass z")
    zv = z
    fits("z", zv.shape[0], zv.shape[1], a.shape[0], a.shape[1])
    return <real*>&zv[0, 0]


def act_keeps_z(int act):
    """Whether the derivative of activation `act` is taken from z rather
    than from the outputs a (gelu, gelu_tanh, silu), so that z is kept."""
    known("act", act, SELU)
    return k_act_keeps_z(act)


def all_finite(const real[::1] x):
    """True when no entry of x is NaN or ±inf (without a temporary array)."""
    cdef bint finite
    with nogil:
        finite = k_all_finite(&x[0], x.shape[0]) if x.shape[0] else True
    return finite


def exp(real[::1] x):
    """x ← e^x in place, by the core's own exponential (fastexp.h for float32)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            x[i] = r_exp(x[i])


def act_forward(real[:, ::1] a, int act, double slope=0.0, const real[::1] b=None,
                real[:, ::1] z=None):
    """a (rows, cols) ← f(a + b) in place; b (cols,) or None; z (rows, cols),
    if given, ← a + b, the pre-activation."""
    known("act", act, SELU)
    cdef const real* bp = NULL if b is None else &b[0]
    cdef real* zp = NULL
    fits("a", a.shape[0], a.shape[1], a.shape[0], a.shape[1])
    if b is not None:
        fits("b", b.shape[0], 1, a.shape[1], 1)
    if z is not None:
        fits("z", z.shape[0], z.shape[1], a.shape[0], a.shape[1])
        zp = &z[0, 0]
    with nogil:
        k_act_forward(&a[0, 0], bp, a.shape[0], a.shape[1], act, <real>slope, zp)


def act_backward(real[:, ::1] delta, const real[:, ::1] g, const real[:, ::1] a,
                 int act, double slope=0.0, z=None):
    """delta (rows, cols) ← g ⊙ f′(z), the derivative taken from a = f(z), or
    from z (rows, cols) for the activations that need it (act_keeps_z)."""
    known("act", act, SELU)
    fits("delta", delta.shape[0], delta.shape[1], a.shape[0], a.shape[1])
    fits("g", g.shape[0], g.shape[1], a.shape[0], a.shape[1])
    cdef const real* zp = pre_activation(act, z, a)
    with nogil:
        k_act_backward(&delta[0, 0], &g[0, 0], &a[0, 0], zp, a.shape[0], a.shape[1],
                       act, <real>slope)


def loss_forward_backward(int loss, int act, double slope, real[:, ::1] a,
                          real[:, ::1] delta, const real[:, ::1] y,
                          const real[::1] w=None, double huber_delta=1.0):
    """a: z → f(z) in place; delta ← ∂L/∂z; returns the mean loss, weighted
    by the sample weights w (rows,) if given; huber_delta: huber's δ."""
    loss_known(loss, huber_delta)
    known("act", act, SELU)
    cdef double value
    cdef const real* wp = NULL if w is None else &w[0]
    fits("delta", delta.shape[0], delta.shape[1], a.shape[0], a.shape[1])
    fits("y", y.shape[0], y.shape[1], a.shape[0], a.shape[1])
    if w is not None:
        fits("w", w.shape[0], 1, a.shape[0], 1)
    z = np.empty_like(a) if k_act_keeps_z(act) else None     # (room for z)
    cdef real* zp = pre_activation(act, z, a)
    with nogil:
        value = k_loss_forward_backward(loss, huber_delta, act, <real>slope, &a[0, 0], zp,
                                        &delta[0, 0], &y[0, 0], wp, a.shape[0],
                                        a.shape[1])
    return value


def output_delta(int loss, int act, double slope, real[:, ::1] delta,
                 const real[:, ::1] a, const real[:, ::1] y, z=None,
                 double huber_delta=1.0):
    """delta ← ∂L/∂z of the output layer, from its outputs a and targets y
    (and its pre-activation z, for an activation that needs it)."""
    loss_known(loss, huber_delta)
    known("act", act, SELU)
    fits("delta", delta.shape[0], delta.shape[1], a.shape[0], a.shape[1])
    fits("y", y.shape[0], y.shape[1], a.shape[0], a.shape[1])
    cdef const real* zp = (pre_activation(act, z, a)
                           if regression_loss(loss) else NULL)
    with nogil:
        k_output_delta(loss, huber_delta, act, <real>slope, &delta[0, 0], &a[0, 0], zp,
                       &y[0, 0], a.shape[0], a.shape[1])


def loss_value(int loss, const real[:, ::1] p, const real[:, ::1] y, double eps,
               double huber_delta=1.0):
    """The mean loss of predictions p against targets y (huber_delta: huber's δ)."""
    loss_known(loss, huber_delta)
    cdef double value
    cdef real[:, ::1] g
    fits("y", y.shape[0], y.shape[1], p.shape[0], p.shape[1])
    if regression_loss(loss):   # regression_error's value; its gradient goes unread
        g = np.empty((p.shape[0], p.shape[1]), np.float32 if real is float else np.float64)
        with nogil:
            value = k_regression_error(loss, huber_delta, &g[0, 0], &p[0, 0], &y[0, 0],
                                       <real*>NULL, p.shape[0], p.shape[1])
        return value
    with nogil:
        value = k_loss_value(loss, &p[0, 0], &y[0, 0], p.shape[0], p.shape[1],
                             <real>eps)
    return value


def loss_gradient(int loss, real[:, ::1] g, const real[:, ::1] p,
                  const real[:, ::1] y, double eps, double huber_delta=1.0):
    """g ← ∂L/∂p of loss_value."""
    loss_known(loss, huber_delta)
    fits("g", g.shape[0], g.shape[1], p.shape[0], p.shape[1])
    fits("y", y.shape[0], y.shape[1], p.shape[0], p.shape[1])
    with nogil:
        if regression_loss(loss):   # regression_error's gradient; its value goes unread
            k_regression_error(loss, huber_delta, &g[0, 0], &p[0, 0], &y[0, 0],
                               <real*>NULL, p.shape[0], p.shape[1])
        else:
            k_loss_gradient(loss, &g[0, 0], &p[0, 0], &y[0, 0], p.shape[0],
                            p.shape[1], <real>eps)


def labels(int loss, const real[:, ::1] A):
    """The label rule of a classifier for its outputs or targets A (rows, k),
    as int64: for cross-entropy the argmax of each row (the first of equal
    maxima), (rows,); for binary cross-entropy [a ≥ ½] per output, (rows, k),
    or (rows,) for k = 1."""
    known("loss", loss, HUBER)
    if regression_loss(loss) or loss == POISSON:
        names = {MSE: "mse", POISSON: "poisson", MAE: "mae", HUBER: "huber"}
        raise ValueError(f"{names[loss]} has no label rule "
                         "(labels are cross_entropy's or binary_cross_entropy's)")
    cdef Py_ssize_t rows = A.shape[0], k = A.shape[1]
    if k == 0:
        raise ValueError("A has no columns")
    cdef bint per_row = loss == CROSS_ENTROPY or k == 1
    out = np.empty(rows if per_row else rows * k, np.int64)
    cdef long long[::1] flat = out
    if rows > 0:
        with nogil:
            k_class_labels(loss, &flat[0], &A[0, 0], rows, k)
    return out if per_row else out.reshape(rows, k)


def dense_forward(real[:, ::1] out, const real[:, ::1] x, const real[:, ::1] W,
                  const real[::1] b, int act, double slope=0.0, real[:, ::1] z=None):
    """out (rows, n_out) ← f(x @ W + b); z (rows, n_out), if given, ← x @ W + b."""
    known("act", act, SELU)
    cdef real* zp = NULL
    fits("x", x.shape[0], x.shape[1], x.shape[0], W.shape[0])
    fits("out", out.shape[0], out.shape[1], x.shape[0], W.shape[1])
    fits("b", b.shape[0], 1, W.shape[1], 1)
    if z is not None:
        fits("z", z.shape[0], z.shape[1], x.shape[0], W.shape[1])
        zp = &z[0, 0]
    with nogil:
        k_dense_forward(&out[0, 0], &x[0, 0], &W[0, 0], &b[0], x.shape[0],
                        W.shape[0], W.shape[1], act, <real>slope, zp)


def dense_backward(real[:, ::1] dW, real[::1] db, const real[:, ::1] delta,
                   const real[:, ::1] x, const real[:, ::1] W,
                   real[:, ::1] dx=None):
    """dW ← xᵀ δ; db ← Σ_rows δ; dx ← δ Wᵀ unless dx is None."""
    cdef real* dxp = NULL if dx is None else &dx[0, 0]
    cdef Py_ssize_t rows = x.shape[0], n_in = W.shape[0], n_out = W.shape[1]
    fits("x", rows, x.shape[1], rows, n_in)
    fits("dW", dW.shape[0], dW.shape[1], n_in, n_out)
    fits("db", db.shape[0], 1, n_out, 1)
    fits("delta", delta.shape[0], delta.shape[1], rows, n_out)
    if dx is not None:
        fits("dx", dx.shape[0], dx.shape[1], rows, n_in)
    with nogil:
        k_dense_backward(dxp, &dW[0, 0], &db[0], &delta[0, 0], &x[0, 0],
                         &W[0, 0], x.shape[0], W.shape[0], W.shape[1], <real*>NULL)


_GEMM_KINDS = {"nn": BP_GEMM_NN, "tn": BP_GEMM_TN, "nt": BP_GEMM_NT}


def small_gemm(str kind, real[:, ::1] C, const real[:, ::1] A, const real[:, ::1] B,
               double alpha=1, double beta=0, const real[::1] bias=None,
               real[:, ::1] z=None, const real[:, ::1] mask=None, bint relu=False):
    """C ← the chosen build's small kernel (csrc/simd/gemm.h) for kind "nn"
    (A @ B), "tn" (Aᵀ @ B) or "nt" (A @ Bᵀ), whatever the shape, with its
    epilogue: alpha · product + beta · C, + bias, z ← that, ReLU, ⊙ [mask > 0].
    Returns False when the kernel declined the shape (C untouched)."""
    if kind not in _GEMM_KINDS:
        raise ValueError(f"kind must be one of nn, tn, nt; got {kind!r}")
    cdef bp_gemm g
    cdef int done
    cdef Py_ssize_t m = A.shape[1] if kind == "tn" else A.shape[0]
    cdef Py_ssize_t k = A.shape[0] if kind == "tn" else A.shape[1]
    cdef Py_ssize_t n = B.shape[0] if kind == "nt" else B.shape[1]
    fits("B", B.shape[0], B.shape[1], n if kind == "nt" else k, k if kind == "nt" else n)
    fits("C", C.shape[0], C.shape[1], m, n)
    if bias is not None:
        fits("bias", bias.shape[0], 1, n, 1)
    if z is not None:
        fits("z", z.shape[0], z.shape[1], m, n)
    if mask is not None:
        fits("mask", mask.shape[0], mask.shape[1], m, n)
    g.kind, g.m, g.n, g.k = _GEMM_KINDS[kind], m, n, k
    g.a, g.lda, g.b, g.ldb = &A[0, 0], A.shape[1], &B[0, 0], B.shape[1]
    g.c, g.ldc, g.alpha, g.beta, g.relu = &C[0, 0], n, alpha, beta, relu
    g.bias = NULL if bias is None else &bias[0]
    g.z = NULL if z is None else &z[0, 0]
    g.mask = NULL if mask is None else &mask[0, 0]
    with nogil:
        done = bp_kernels.gemm_f32(&g) if real is float else bp_kernels.gemm_f64(&g)
    return bool(done)


def small_gemm_rule(bint f32, str kind, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                    bint alone=False):
    """Whether a product of kind "nn", "tn" or "nt" (as small_gemm) and
    shape m, n, k takes the small kernel in the build in use (bp_small_gemm:
    its bounds, or the mode small_products set); `alone`: a product that
    runs on one thread in any case (a cut step's part)."""
    if kind not in _GEMM_KINDS:
        raise ValueError(f"kind must be one of nn, tn, nt; got {kind!r}")
    return bool(bp_small_gemm(f32, _GEMM_KINDS[kind], m, n, k, alone))


def repeat_product(str kind, long calls, real[:, ::1] C, const real[:, ::1] A,
                   const real[:, ::1] B, const real[::1] bias):
    """One product of a dense layer, `calls` times over, the way the layer
    takes it (small kernel or BLAS, by small_products): "forward" C (m, n) =
    relu(A (m, k) @ B (k, n) + bias) (dense_forward); "input" C (m, n) =
    A (m, k) @ Bᵀ ⊙ [C > 0], B (n, k) (input_gradient); "weight" C (m, n) =
    Aᵀ @ B, A (k, m) (dense_backward's); "sgd" C ← C − 1e-9 · Aᵀ @ B
    (dense_sgd_part's).  For bench.kernels: the loop runs without
    Python, so that the timing is the product's."""
    cdef long _call
    cdef int which = ("forward", "input", "weight", "sgd").index(kind)
    cdef Py_ssize_t m = C.shape[0], n = C.shape[1]
    cdef Py_ssize_t k = A.shape[0] if which >= 2 else A.shape[1]
    fits("A", A.shape[0], A.shape[1], k if which >= 2 else m, m if which >= 2 else k)
    fits("B", B.shape[0], B.shape[1], n if which == 1 else k, k if which == 1 else n)
    fits("bias", bias.shape[0], 1, n, 1)
    with nogil:
        for _call in range(calls):
            if which == 0:
                k_dense_forward(&C[0, 0], &A[0, 0], &B[0, 0], &bias[0], m, k, n, RELU,
                                0, <real*>NULL)
            elif which == 1:
                k_input_gradient(&C[0, 0], &A[0, 0], &B[0, 0], m, n, k, &C[0, 0])
            else:
                k_weight_gradient(&C[0, 0], 1 if which == 2 else <real>-1e-9,
                                  0 if which == 2 else 1, &A[0, 0], &B[0, 0], k, m, n)


def sgd_update(real[::1] w, const real[::1] g, double lr):
    """w ← w − lr · g over a flat buffer: optimizer_update's SGD, with every
    other setting 0 (no momentum, so no state; ×1 and +0 leave w − lr · g
    exact for finite w: an infinite weight becomes NaN, 0·∞, as in
    train_step)."""
    cdef Optimizer o
    fits("g", g.shape[0], 1, w.shape[0], 1)
    memset(&o, 0, sizeof(o))
    o.kind, o.lr = SGD, lr
    with nogil:
        k_optimizer_update(&o, &w[0], &g[0], <real*>NULL, <real*>NULL, w.shape[0],
                           NULL, NULL, 0)


def optimizer_update(real[::1] w, const real[::1] g, real[::1] s1, real[::1] s2,
                     int kind, double lr, double momentum=0, bint nesterov=False,
                     double beta1=0.9, double beta2=0.999, double rho=0.9,
                     double eps=1e-8, double l2=0, double weight_decay=0,
                     double clip_norm=0, long long steps=0, bint decay_biases=True,
                     biases=(), int threads=1):
    """One optimizer update of w from g with state s1, s2 (arrays of w's
    shape; unused ones may be any such array); returns the new step count.
    `biases`: where w holds biases, as (offset, length) pairs in increasing
    order, apart; with decay_biases False they take no l2 and no decay.
    `threads`: how many threads a long w may be updated on."""
    known("kind", kind, ADAGRAD)
    cdef Optimizer o
    memset(&o, 0, sizeof(o))
    o.kind, o.lr, o.momentum, o.nesterov = kind, lr, momentum, nesterov
    o.beta1, o.beta2, o.rho, o.eps = beta1, beta2, rho, eps
    o.l2, o.weight_decay, o.clip_norm, o.t = l2, weight_decay, clip_norm, steps
    o.decay_biases, o.threads = decay_biases, threads
    if g.shape[0] != w.shape[0] or s1.shape[0] != w.shape[0] or s2.shape[0] != w.shape[0]:
        raise ValueError("w, g, s1 and s2 must have the same length")
    cdef Py_ssize_t k, end = 0
    try:
        pairs = np.array(biases, np.intp).reshape(len(biases), 2)
    except ValueError:
        pairs = None
    for k in range(0 if pairs is None else len(pairs)):
        if pairs[k, 0] < end or pairs[k, 1] < 0 or pairs[k, 0] + pairs[k, 1] > w.shape[0]:
            pairs = None
            break
        end = pairs[k, 0] + pairs[k, 1]
    if pairs is None:
        raise ValueError("biases must be (offset, length) pairs within w, "
                         "in increasing order, apart")
    cdef Py_ssize_t[::1] b_off = pairs[:, 0].copy(), b_len = pairs[:, 1].copy()
    cdef Py_ssize_t n_b = len(pairs)
    with nogil:
        k_optimizer_update(&o, &w[0], &g[0], &s1[0], &s2[0], w.shape[0],
                           &b_off[0] if n_b else NULL, &b_len[0] if n_b else NULL, n_b)
    return o.t


# ---------------------------------------------------------------- dropout ---
cdef int dropout_rate(double rate) except -1:
    # Raise unless rate lies in [0, 1).
    if not 0 <= rate < 1:
        raise ValueError(f"rate must lie in [0, 1), got {rate}")
    return 0


def dropout_mask(unsigned char[:, ::1] mask, unsigned long long seed,
                 unsigned long long step, Py_ssize_t layer, double rate,
                 Py_ssize_t first_row=0):
    """mask (rows, cols) ← 1 for each unit kept, 0 for each dropped, in the
    rows first_row … of training pass `step` through the dropout after layer
    `layer`, from the stream `seed`: the engine's mask of that pass."""
    dropout_rate(rate)
    if layer < 0 or first_row < 0:
        raise ValueError(f"layer and first_row must be ≥ 0, got {layer} and {first_row}")
    fits("mask", mask.shape[0], mask.shape[1], mask.shape[0], mask.shape[1])
    with nogil:
        k_dropout_mask(&mask[0, 0], mask.shape[0], mask.shape[1], seed, step, layer,
                       first_row, rate)


def dropout_forward(real[:, ::1] d, const real[:, ::1] a, const unsigned char[:, ::1] mask,
                    double rate):
    """d (rows, cols) ← a ⊙ mask / (1 − rate)."""
    dropout_rate(rate)
    fits("a", a.shape[0], a.shape[1], a.shape[0], a.shape[1])
    fits("d", d.shape[0], d.shape[1], a.shape[0], a.shape[1])
    fits("mask", mask.shape[0], mask.shape[1], a.shape[0], a.shape[1])
    with nogil:
        k_dropout_forward(&d[0, 0], &a[0, 0], &mask[0, 0], a.shape[0] * a.shape[1], rate)


def dropout_backward(real[:, ::1] g_a, const real[:, ::1] g_d,
                     const unsigned char[:, ::1] mask, double rate):
    """g_a (rows, cols) ← ∂L/∂a = g_d ⊙ mask / (1 − rate), g_d = ∂L/∂d."""
    dropout_rate(rate)
    fits("g_d", g_d.shape[0], g_d.shape[1], g_d.shape[0], g_d.shape[1])
    fits("g_a", g_a.shape[0], g_a.shape[1], g_d.shape[0], g_d.shape[1])
    fits("mask", mask.shape[0], mask.shape[1], g_d.shape[0], g_d.shape[1])
    with nogil:
        k_dropout_backward(&g_a[0, 0], &g_d[0, 0], &mask[0, 0],
                           g_d.shape[0] * g_d.shape[1], rate)
