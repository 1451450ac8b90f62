# cython: language_level=3, cdivision=True
#
# The kernels of the compiled core: every formula of a dense network has its
# one home here, as a small `nogil` function over raw row-major buffers; or,
# for the loops compiled once per instruction set, in csrc/simd/, which the
# function here calls (the optimizers' rules, the small products, softmax and
# its cross-entropy, the finiteness check).
#
#   forward:   z = x @ W + b ;  a = f(z)          dense_forward, act_forward
#                                                 (z kept where f′ needs it: act_keeps_z)
#   loss:      L(a, y), δ_out = ∂L/∂z_out         mse: squared_error, then act_backward
#                                                 mae, huber: robust_error, then act_backward
#                                                 bce (sigmoid), poisson (exp):
#                                                      canonical_forward_backward
#                                                 ce:  softmax_ce_forward_backward
#                                                 (loss_forward_backward, output_delta)
#   standalone L(p, y), ∂L/∂p                     mse, mae, huber: regression_error
#                                                 bce, ce of clipped p, poisson of
#                                                 p > 0: loss_value, loss_gradient
#                                                 (poisson: poisson_deviance, shared)
#   backward:  δ = g ⊙ f′(z)                      act_backward (f′ from a, or from z)
#              dW = xᵀ @ δ ; db = Σ_rows δ ;
#              dx = δ @ Wᵀ                        dense_backward
#   sparse x:  the first layer's z and dW          sparse_forward, sparse_backward(_sgd)
#   labels:    ce: argmax_j a_j ; bce: [a ≥ ½]    row_argmax, threshold_label
#                                                 (class_labels, count_correct)
#   update:    w ← w − η · ∂L/∂w (SGD), Adam,     optimizer_update: every rule (fit,
#              RMSProp, AdaGrad                   train_step, net.step's plain SGD)
#   fused:     dense_backward, then plain SGD     dense_sgd_part, the fast twin
#                                                 that fit runs for plain SGD
#   dropout:   d = a ⊙ m / (1 − rate) ;           dropout_forward (training only;
#              ∂L/∂a = ∂L/∂d ⊙ m / (1 − rate)     the mask m: shuffle.pxd),
#                                                 dropout_backward
#   products:  small ones in the register-blocked  small_gemm (csrc/simd/gemm.h,
#              kernels of the chosen build, with   where bp_small_gemm's measured
#              bias, ReLU or its derivative fused  bounds say), else BLAS: gemm
#
# Conventions.  Every buffer is C-contiguous and row-major; shapes are in the
# one-line comment of each function as (rows, cols).  `# IN` buffers are read,
# `# OUT` buffers are written.  The functions assume valid input: the Python
# layer has checked shapes, dtypes, contiguity and finiteness before any of
# them runs.  Nothing here allocates, raises or touches Python objects.
# float32 and float64 come from the same source through the fused type `real`;
# sums that feed a loss value are accumulated in double.

from libc.math cimport (
    exp, log, log1p, log1pf, tanh, tanhf, fabs, sqrt, sqrtf, pow, erfc, erfcf, expm1, expm1f,
)
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

from backprop._codes cimport (
    IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX, STEP, EXP,
    GELU, GELU_TANH, SILU, SOFTPLUS, ELU, SELU,
    MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, POISSON, MAE, HUBER,
    SGD, ADAM, RMSPROP, ADAGRAD,
)

cdef extern from "fastexp.h":
    float bp_expf(float x) noexcept nogil

cdef extern from "simd/kernels.h":
    # The kernels compiled once per instruction set (csrc/simd/), in the
    # build chosen at import.
    enum:
        BP_RULE_SGD, BP_RULE_MOMENTUM, BP_RULE_NESTEROV,
        BP_RULE_ADAM, BP_RULE_RMSPROP, BP_RULE_ADAGRAD
    ctypedef struct bp_rule:
        double lr, l2, keep, scale, eps, mu, b1, b2, a1, a2, c1, c2, rho, a_rho
        int clear
    enum: BP_GEMM_NN, BP_GEMM_TN, BP_GEMM_NT
    ctypedef struct bp_gemm:
        int kind
        Py_ssize_t m, n, k
        const void* a
        Py_ssize_t lda
        const void* b
        Py_ssize_t ldb
        void* c
        Py_ssize_t ldc
        double alpha, beta
        const void* bias
        void* z
        const void* mask
        int relu
    ctypedef struct bp_kernel_set:
        const char* name
        void (*update_f32)(int rule, float* w, float* g, float* s1, float* s2,
                           Py_ssize_t n, const bp_rule* k) noexcept nogil
        void (*update_f64)(int rule, double* w, double* g, double* s1, double* s2,
                           Py_ssize_t n, const bp_rule* k) noexcept nogil
        int (*gemm_f32)(const bp_gemm* g) noexcept nogil
        int (*gemm_f64)(const bp_gemm* g) noexcept nogil
        void (*softmax_f32)(float* a, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
        void (*softmax_f64)(double* a, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
        double (*softmax_ce_f32)(float* a, float* delta, const float* y, const float* w,
                                 Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n) noexcept nogil
        double (*softmax_ce_f64)(double* a, double* delta, const double* y, const double* w,
                                 Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n) noexcept nogil
        bint (*all_finite_f32)(const float* x, Py_ssize_t n) noexcept nogil
        bint (*all_finite_f64)(const double* x, Py_ssize_t n) noexcept nogil
        void (*col_sums_f32)(float* db, const float* delta, Py_ssize_t rows, Py_ssize_t n,
                             Py_ssize_t ld) noexcept nogil
        void (*col_sums_f64)(double* db, const double* delta, Py_ssize_t rows, Py_ssize_t n,
                             Py_ssize_t ld) noexcept nogil
        void (*argmax_rows_f32)(long long* labels, const float* a, Py_ssize_t rows,
                                Py_ssize_t cols) noexcept nogil
        void (*argmax_rows_f64)(long long* labels, const double* a, Py_ssize_t rows,
                                Py_ssize_t cols) noexcept nogil
        Py_ssize_t (*argmax_agree_f32)(const float* a, const float* y, Py_ssize_t rows,
                                       Py_ssize_t cols) noexcept nogil
        Py_ssize_t (*argmax_agree_f64)(const double* a, const double* y, Py_ssize_t rows,
                                       Py_ssize_t cols) noexcept nogil
        int vbytes
    int bp_small_gemm(int f32, int kind, Py_ssize_t m, Py_ssize_t n,
                      Py_ssize_t k, int alone) noexcept nogil
    int bp_small_gemm_takes(int f32, int kind, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, int alone) noexcept nogil
    int bp_small_gemm_mode
    enum: BP_SMALL_GEMM_RULE, BP_SMALL_GEMM_NEVER, BP_SMALL_GEMM_ALWAYS
    void bp_update_f32(int rule, float* w, float* g, float* s1, float* s2,
                       Py_ssize_t n, const bp_rule* k, int threads) noexcept nogil
    void bp_update_f64(int rule, double* w, double* g, double* s1, double* s2,
                       Py_ssize_t n, const bp_rule* k, int threads) noexcept nogil
    const bp_kernel_set* bp_kernels
    const bp_kernel_set bp_kernel_sets[]
    ctypedef void (*bp_task)(void* arg, int chunk, int chunks) noexcept nogil
    void bp_team_run(bp_task task, void* arg, int chunks, int threads) noexcept nogil
    int bp_team_hold(int threads) noexcept nogil
    void bp_team_release() noexcept nogil
    enum: BP_N_ISA
    int bp_cpu_runs(int isa) noexcept nogil
    int bp_choose_kernels(const char* request) noexcept nogil

cdef extern from "float.h":
    const float FLT_MIN
    const double DBL_MIN


ctypedef fused real:
    float
    double

cdef struct Optimizer:
    int kind              # an OptimizerKind
    double lr             # η
    double momentum       # SGD: v ← μ·v + g
    bint nesterov         # SGD: step along g + μ·v rather than v
    double beta1, beta2   # Adam: decay of the first and second moments
    double rho            # RMSProp: decay of the mean square
    double eps            # Adam, RMSProp, AdaGrad: added to the root
    double l2             # g ← g + l2·w, the gradient of ½·l2·‖w‖² (coupled)
    double weight_decay   # w ← w − η·wd·w before the step (decoupled: AdamW)
    bint decay_biases     # l2 and weight_decay reach the biases too (else weights only)
    double clip_norm      # > 0: g ← g · min(1, clip_norm / ‖g‖), ‖·‖ over all parameters
    long long t           # updates taken so far (Adam's bias correction)
    int threads           # the update may run on this many threads (0, 1: one)


# ---------------------------------------------------------------- scalars ---

ctypedef float (*float_function)(float) noexcept nogil
ctypedef double (*double_function)(double) noexcept nogil


cdef inline real by_precision(float_function f, double_function d,
                              real x) noexcept nogil:
    # f(x) for float, d(x) for double: the one choice of a scalar function's
    # float32 or float64 version.  Each call below passes constants, so the
    # compiler calls (and inlines) the function itself: nothing is indirect.
    if real is float:
        return f(x)
    else:
        return d(x)


# The core's scalar functions, each as its float32 and float64 version: libm's,
# but for e^x in float32, fastexp.h's branch-free one that vectorises.
cdef inline real r_exp(real x) noexcept nogil: return by_precision(bp_expf, exp, x)
cdef inline real r_log1p(real x) noexcept nogil: return by_precision(log1pf, log1p, x)
cdef inline real r_sqrt(real x) noexcept nogil: return by_precision(sqrtf, sqrt, x)
cdef inline real r_tanh(real x) noexcept nogil: return by_precision(tanhf, tanh, x)
cdef inline real r_erfc(real x) noexcept nogil: return by_precision(erfcf, erfc, x)
cdef inline real r_expm1(real x) noexcept nogil: return by_precision(expm1f, expm1, x)


cdef inline bint all_finite(const real* x, Py_ssize_t n) noexcept nogil:
    # No NaN and no ±inf among x[0 … n) (finite.h: a vectorised bit test, in
    # the chosen build).
    if real is float:
        return bp_kernels.all_finite_f32(x, n)
    else:
        return bp_kernels.all_finite_f64(x, n)


cdef inline real sigmoid(real z) noexcept nogil:
    # σ(z) = 1 / (1 + e^−z) = e^z / (1 + e^z).  Only e = e^−|z| is formed,
    # which lies in (0, 1], so nothing overflows for any finite z; choosing
    # between the two forms by a select, not a branch, lets loops vectorise.
    cdef real e = r_exp(-fabs(z))
    return (1 if z >= 0 else e) / (1 + e)


# ------------------------------------------------------------------- BLAS ---

cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      real alpha, const real* A, int lda,
                      const real* B, int ldb,
                      real beta, real* C, int ldc) noexcept nogil:
    # C (m, n) = alpha · op(A) (m, k) @ op(B) (k, n) + beta · C, row-major.
    # BLAS is column-major, where a row-major matrix reads as its transpose,
    # so ask it for Cᵀ = op(B)ᵀ @ op(A)ᵀ: swap the operands and m with n.
    # One row of A (a single sample) is a matrix-vector product, which BLAS's
    # gemv does without packing B, as gemm would (see gemv_row).
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 1 and not trans_a:
        gemv_row(trans_b, n, k, alpha, A, B, ldb, beta, C)
        return
    if real is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)


cdef inline bint small_gemm(int kind, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            real alpha, const real* A, Py_ssize_t lda,
                            const real* B, Py_ssize_t ldb, real beta, real* C,
                            const real* bias, bint relu, real* z,
                            const real* mask, Py_ssize_t ldc=0,
                            bint alone=False) noexcept nogil:
    # C (m, n) = alpha · op(A) @ op(B) + beta · C as gemm, with the epilogue
    # of csrc/simd/gemm.h: + bias (n,), z (m, n) ← that, ReLU, ⊙ [mask > 0]
    # (each unless NULL or False), in the chosen build's small kernel, when
    # bp_small_gemm picks it for this kind (BP_GEMM_NN: A @ B, _TN: Aᵀ @ B,
    # _NT: A @ Bᵀ) and shape (`alone`: a product that runs on one thread in
    # any case, a cut step's part).  C, z and mask have row stride ldc (0: n).
    # Returns whether it ran; if not, nothing is written, and the caller
    # takes gemm and its own passes.
    cdef bp_gemm g
    if not bp_small_gemm(real is float, kind, m, n, k, alone):
        return False
    g.kind, g.m, g.n, g.k = kind, m, n, k
    g.a, g.lda, g.b, g.ldb, g.c, g.ldc = A, lda, B, ldb, C, ldc if ldc > 0 else n
    g.alpha, g.beta = alpha, beta
    g.bias, g.z, g.mask, g.relu = bias, z, mask, relu
    if real is float:
        return bp_kernels.gemm_f32(&g)
    else:
        return bp_kernels.gemm_f64(&g)


cdef inline void gemv_row(bint trans_b, int n, int k, real alpha, const real* x,
                          const real* B, int ldb, real beta, real* c) noexcept nogil:
    # c (1, n) = alpha · x (1, k) @ op(B) (k, n) + beta · c, row-major: gemm
    # for one row.  In BLAS's column-major view B (k, n) is a matrix (n, k)
    # with leading dimension ldb, and c = that matrix times x; Bᵀ (B stored
    # as (n, k)) is a matrix (k, n), and c = its transpose times x.
    cdef int one = 1
    cdef char t = b'T' if trans_b else b'N'
    cdef int rows = k if trans_b else n
    cdef int cols = n if trans_b else k
    if real is float:
        sgemv(&t, &rows, &cols, &alpha, <float*>B, &ldb, <float*>x, &one, &beta, c, &one)
    else:
        dgemv(&t, &rows, &cols, &alpha, <double*>B, &ldb, <double*>x, &one, &beta, c, &one)


# ------------------------------------------------------------ activations ---

cdef inline void softmax_rows(real* a, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # a (rows, cols): z → softmax(z) = e^(z − m) / Σ e^(z − m), m = max z, row
    # by row in place: csrc/simd/softmax.h, in the chosen build.
    if real is float:
        bp_kernels.softmax_f32(a, rows, cols)
    else:
        bp_kernels.softmax_f64(a, rows, cols)


# The smooth units of modern networks, each f(z) and f′(z) as a scalar.
# Their constants (SELU's from Klambauer et al. 2017, as PyTorch and Keras
# take them):
cdef extern from *:
    """
    #define BP_SQRT_HALF 0.70710678118654752440        /* 1/√2 */
    #define BP_INV_SQRT_2PI 0.39894228040143267794     /* 1/√(2π) */
    #define BP_SQRT_8_OVER_PI 1.59576912160573071176   /* 2√(2/π) */
    #define BP_GELU_CUBIC 0.044715
    #define BP_SELU_SCALE 1.0507009873554804934193349852946   /* λ */
    #define BP_SELU_ALPHA 1.6732632423543772848170429916717   /* α */
    """
    const double BP_SQRT_HALF, BP_INV_SQRT_2PI, BP_SQRT_8_OVER_PI, BP_GELU_CUBIC
    const double BP_SELU_SCALE, BP_SELU_ALPHA


cdef inline real sigmoid_and_slope(real x, real* slope) noexcept nogil:
    # σ(x), and OUT slope = σ′(x) = σ(x) (1 − σ(x)) = e / (1 + e)² unless
    # slope is NULL, from one e = e^−|x| ∈ (0, 1] (as sigmoid): no overflow,
    # and no cancellation in 1 − σ(x) for x ≫ 0.  (fabs is libm's double
    # one: cast back to real, so that float32 takes fastexp.h's e^x, which
    # vectorises.)
    cdef real e = r_exp(-<real>fabs(x))
    cdef real inv = 1 / (1 + e)
    if slope != NULL:
        slope[0] = e * inv * inv
    return (1 if x >= 0 else e) * inv


cdef inline real gelu(real z) noexcept nogil:
    # z Φ(z), Φ(z) = ½ erfc(−z/√2) the standard normal distribution function.
    # erfc, not 1 + erf(z/√2): for z ≪ 0 that sum cancels (every digit of
    # Φ(−5) is lost in float32), while erfc keeps Φ's relative precision.
    return <real>0.5 * z * r_erfc(-z * <real>BP_SQRT_HALF)


cdef inline real gelu_derivative(real z, real a) noexcept nogil:
    # Φ(z) + z φ(z), φ(z) = e^(−z²/2)/√(2π), given a = gelu(z): Φ(z) = a/z
    # to a few ulp wherever z and a are normal numbers, which saves a second
    # erfc (the costly part); for |z| ≤ 1e-30, Φ(z) = ½ in both float types.
    # z² may overflow to inf, and e^−inf = 0, so z φ(z) stays 0 for any
    # finite z.
    cdef real phi = (a / z) if fabs(z) > <real>1e-30 else <real>0.5
    return phi + z * <real>BP_INV_SQRT_2PI * r_exp(<real>-0.5 * z * z)


cdef inline real gelu_tanh_v(real z) noexcept nogil:
    # v = 2u, u = √(2/π) (z + 0.044715 z³): the tanh form is
    # ½ z (1 + tanh u) = z σ(2u), taken as σ so that it does not cancel for
    # z ≪ 0.  z³ may overflow to ±inf, where σ is 1 or 0, as it should be.
    return <real>BP_SQRT_8_OVER_PI * (z + <real>BP_GELU_CUBIC * z * z * z)


cdef inline real gelu_tanh_derivative(real z) noexcept nogil:
    # d/dz z σ(v) = σ(v) + z v′ σ′(v),  v′ = 2√(2/π) (1 + 3·0.044715 z²).
    # Where σ′(v) underflows to 0 (|z| beyond about 5 in float32, 20 in
    # float64), the term is 0: v′ may have overflowed there (|z| > 1.8e19 in
    # float32), and 0·inf would be NaN.
    cdef real q
    cdef real s = sigmoid_and_slope(gelu_tanh_v(z), &q)
    cdef real dv = <real>BP_SQRT_8_OVER_PI * (1 + <real>(3 * BP_GELU_CUBIC) * z * z)
    return s + (z * dv * q if q > 0 else 0)


cdef inline real silu_derivative(real z) noexcept nogil:
    # d/dz z σ(z) = σ(z) + z σ′(z).
    cdef real q
    cdef real s = sigmoid_and_slope(z, &q)
    return s + z * q


cdef inline real softplus(real z) noexcept nogil:
    # log(1 + e^z) = max(z, 0) + log1p(e^−|z|): e^−|z| ∈ (0, 1] never
    # overflows, and log1p keeps the small values of z ≪ 0 (≈ e^z).  (The
    # form of binary cross-entropy's log(1 + e^−|z|), canonical_forward_backward.)
    return (z if z > 0 else 0) + r_log1p(r_exp(-fabs(z)))


cdef inline real elu(real z, real alpha) noexcept nogil:
    # z for z > 0, else α (e^z − 1), by expm1: no cancellation near 0.
    return z if z > 0 else alpha * r_expm1(z)


cdef inline bint act_keeps_z(int act) noexcept nogil:
    # Whether f′ needs z itself: gelu, gelu_tanh and silu are not monotonic,
    # so their outputs a do not tell z.  Every other derivative is taken from
    # a (act_backward), and z is kept only for these (the engine's Plan.z,
    # the Python layer's Dense).
    return act == GELU or act == GELU_TANH or act == SILU


cdef inline void act_forward(real* a, const real* b, Py_ssize_t rows,
                             Py_ssize_t cols, int act, real slope,
                             real* z) noexcept nogil:
    # a (rows, cols): z → f(z + b) in place; b (cols,) or NULL for no bias;
    # OUT z (rows, cols) = z + b, or NULL to keep nothing.  slope is the
    # activation's parameter: leaky_relu's negative slope, elu's α.
    # Bias and activation share one sweep: each row is still in cache when
    # the activation reads it.
    cdef Py_ssize_t i, j
    cdef real* r
    for i in range(rows):
        r = a + i * cols
        if b != NULL:
            for j in range(cols):
                r[j] += b[j]
        if z != NULL:
            for j in range(cols):
                z[i * cols + j] = r[j]
        if act == SIGMOID:
            for j in range(cols):
                r[j] = sigmoid(r[j])
        elif act == TANH:
            for j in range(cols):
                r[j] = r_tanh(r[j])
        elif act == RELU:
            for j in range(cols):
                r[j] = r[j] if r[j] > 0 else 0
        elif act == LEAKY_RELU:
            for j in range(cols):
                r[j] = r[j] if r[j] > 0 else slope * r[j]
        elif act == SOFTMAX:
            pass                # (the whole block at once, below)
        elif act == STEP:
            # The perceptron's threshold unit: 1 for z ≥ 0, else 0.
            for j in range(cols):
                r[j] = 1 if r[j] >= 0 else 0
        elif act == EXP:
            # e^z, the mean of a Poisson count: +inf where it overflows `real`
            # (z > ln FLT_MAX ≈ 88.72, or ln DBL_MAX ≈ 709.78), which the
            # Python layer reports (predict, evaluate) or undoes (fit).
            for j in range(cols):
                r[j] = r_exp(r[j])
        elif act == GELU:
            for j in range(cols):
                r[j] = gelu(r[j])
        elif act == GELU_TANH:
            for j in range(cols):
                r[j] = r[j] * sigmoid_and_slope(gelu_tanh_v(r[j]), NULL)
        elif act == SILU:
            for j in range(cols):
                r[j] = r[j] * sigmoid_and_slope(r[j], NULL)
        elif act == SOFTPLUS:
            for j in range(cols):
                r[j] = softplus(r[j])
        elif act == ELU:
            for j in range(cols):
                r[j] = elu(r[j], slope)
        elif act == SELU:
            for j in range(cols):
                r[j] = <real>BP_SELU_SCALE * elu(r[j], <real>BP_SELU_ALPHA)
    if act == SOFTMAX:
        # one call over the block: softmax.h's flat pass of e^(z − m) fills
        # whole vectors however few the columns (a row's result does not
        # depend on the rows beside it)
        softmax_rows(a, rows, cols)


cdef inline void act_backward(real* delta, const real* g, const real* a,
                              const real* z, Py_ssize_t rows, Py_ssize_t cols,
                              int act, real slope) noexcept nogil:
    # delta (rows, cols) = g ⊙ f′(z), with f′ taken from the outputs a = f(z):
    #   sigmoid  f′ = a (1 − a)        tanh   f′ = 1 − a²
    #   relu     f′ = [a > 0]          leaky  f′ = 1 if a > 0 else slope
    #   exp      f′ = a                softplus  f′ = σ(z) = 1 − e^−a
    #   elu      f′ = 1 if a > 0 else a + α          (α e^z = a + α)
    #   selu     f′ = λ if a > 0 else a + λα
    #   softmax  δ = a ⊙ (g − Σ_j g_j a_j)   (the Jacobian-vector product)
    # or, for the units whose a does not tell z (act_keeps_z), from z (rows,
    # cols), which may be NULL for every other unit:
    #   gelu       f′ = Φ(z) + z φ(z)         (gelu_derivative, Φ(z) = a/z)
    #   gelu_tanh  f′ = σ(v) + z v′ σ′(v)     (gelu_tanh_derivative)
    #   silu       f′ = σ(z) + z σ′(z)        (silu_derivative)
    # delta may be g itself (in place).  STEP's derivative is 0 wherever it
    # exists, so nothing can be learned through it: the Python layer refuses
    # to train through it, and here it gives δ = 0.
    cdef Py_ssize_t i, j, n = rows * cols
    cdef double s
    if act == IDENTITY:
        if delta != g:
            for i in range(n):
                delta[i] = g[i]
    elif act == SIGMOID:
        for i in range(n):
            delta[i] = g[i] * a[i] * (1 - a[i])
    elif act == TANH:
        for i in range(n):
            delta[i] = g[i] * (1 - a[i] * a[i])
    elif act == RELU:
        for i in range(n):
            delta[i] = g[i] if a[i] > 0 else 0
    elif act == LEAKY_RELU:
        for i in range(n):
            delta[i] = g[i] * (1 if a[i] > 0 else slope)
    elif act == STEP:
        for i in range(n):
            delta[i] = 0
    elif act == EXP:
        for i in range(n):
            delta[i] = g[i] * a[i]
    elif act == GELU:
        for i in range(n):
            delta[i] = g[i] * gelu_derivative(z[i], a[i])
    elif act == GELU_TANH:
        for i in range(n):
            delta[i] = g[i] * gelu_tanh_derivative(z[i])
    elif act == SILU:
        for i in range(n):
            delta[i] = g[i] * silu_derivative(z[i])
    elif act == SOFTPLUS:
        # 1 − e^−a by expm1, which keeps σ(z) ≈ a for z ≪ 0 (a ≈ e^z).
        for i in range(n):
            delta[i] = -g[i] * r_expm1(-a[i])
    elif act == ELU:
        for i in range(n):
            delta[i] = g[i] * (1 if a[i] > 0 else a[i] + slope)
    elif act == SELU:
        for i in range(n):
            delta[i] = g[i] * (<real>BP_SELU_SCALE if a[i] > 0
                               else a[i] + <real>(BP_SELU_SCALE * BP_SELU_ALPHA))
    elif act == SOFTMAX:
        for i in range(rows):
            s = 0
            for j in range(cols):
                s += g[i * cols + j] * a[i * cols + j]
            for j in range(cols):
                delta[i * cols + j] = a[i * cols + j] * (g[i * cols + j] - <real>s)


# ----------------------------------------------------------------- losses ---
# Every loss is summed over the outputs of a row and averaged over the rows,
# so δ_out carries the factor 1/rows (1/n with n > 0: the rows of the whole
# batch these rows are a share of).  Each returns the mean over its rows.

cdef inline double squared_error(real* g, const real* p, const real* y,
                                 const real* w, Py_ssize_t rows,
                                 Py_ssize_t cols, Py_ssize_t n=0) noexcept nogil:
    # IN p (rows, cols) predictions, y (rows, cols) targets, w (rows,) sample
    # weights or NULL; OUT g (rows, cols) = ∂C/∂p
    # C = 1/(2n) Σ_i w_i ‖y_i − p_i‖² ;  ∂C/∂p_i = w_i (p_i − y_i)/n ;  returns C.
    # The squared error's one home: the fused pass (loss_forward_backward,
    # output_delta) follows it with act_backward for δ = ∂C/∂a ⊙ f′(z), and
    # the standalone loss (losses.mse) takes it as it is.
    cdef Py_ssize_t i, j
    cdef double d, row, total = 0
    cdef real scale, inv_rows = <real>(1.0 / (n if n > 0 else rows))
    for i in range(rows):
        scale = inv_rows if w == NULL else w[i] * inv_rows
        row = 0
        for j in range(cols):
            d = <double>p[i * cols + j] - <double>y[i * cols + j]
            row += d * d
            g[i * cols + j] = <real>d * scale
        total += row if w == NULL else w[i] * row
    return total / (2.0 * rows)


cdef inline double robust_error(int loss, double huber_delta, real* g, const real* p,
                                const real* y, const real* w, Py_ssize_t rows,
                                Py_ssize_t cols, Py_ssize_t n=0) noexcept nogil:
    # IN p (rows, cols) predictions, y (rows, cols) targets, w (rows,) sample
    # weights or NULL; OUT g (rows, cols) = ∂C/∂p.  The losses that grow
    # linearly in the residual r = p − y, and so are not led by outliers:
    #   mae    ℓ = |r|                                  ∂ℓ/∂r = sign r (0 at r = 0)
    #   huber  ℓ = ½r² for |r| ≤ δ, else δ(|r| − ½δ)   ∂ℓ/∂r = clip(r, −δ, δ)
    # C = 1/n Σ_i w_i Σ_j ℓ_ij ;  ∂C/∂p_ij = w_i ∂ℓ/∂r_ij / n ;  returns C.
    # With m = clip(r, −δ, δ), huber's ℓ is m (r − ½m) on both sides of δ.
    # Like squared_error, the fused pass follows it with act_backward.
    cdef Py_ssize_t i, k
    cdef double r, m, row, total = 0
    cdef real scale, inv_rows = <real>(1.0 / (n if n > 0 else rows))
    for i in range(rows):
        scale = inv_rows if w == NULL else w[i] * inv_rows
        row = 0
        for k in range(i * cols, (i + 1) * cols):
            r = <double>p[k] - <double>y[k]
            if loss == MAE:
                row += fabs(r)
                g[k] = <real>((r > 0) - (r < 0)) * scale
            else:
                m = min(max(r, -huber_delta), huber_delta)
                row += m * (r - 0.5 * m)
                g[k] = <real>m * scale
        total += row if w == NULL else w[i] * row
    return total / rows


cdef inline bint regression_loss(int loss) noexcept nogil:
    # The losses of a residual, taken from any output activation a = f(z)
    # and then ⊙ f′(z) (regression_error): mse, mae and huber.
    return loss == MSE or loss == MAE or loss == HUBER


cdef inline double regression_error(int loss, double huber_delta, real* g, const real* p,
                                    const real* y, const real* w, Py_ssize_t rows,
                                    Py_ssize_t cols, Py_ssize_t n=0) noexcept nogil:
    # squared_error for mse, robust_error for mae and huber: the value and
    # ∂C/∂p of a regression_loss, for the fused pass and the standalone loss.
    if loss == MSE:
        return squared_error(g, p, y, w, rows, cols, n)
    return robust_error(loss, huber_delta, g, p, y, w, rows, cols, n)


cdef inline double softmax_ce_forward_backward(real* a, real* delta,
                                               const real* y, const real* w,
                                               Py_ssize_t rows, Py_ssize_t cols,
                                               Py_ssize_t n=0) noexcept nogil:
    # IN a: z (rows, cols), the logits; y (rows, cols), rows summing to 1;
    # w (rows,) sample weights or NULL
    # OUT a = softmax(z); OUT delta = w (a − y)/n (n 0: rows); returns the
    # rows' mean loss −(1/rows) Σ_i w_i Σ_j y_ij log softmax(z_i)_j.  The
    # formula's home is csrc/simd/softmax.h, compiled per instruction set.
    if real is float:
        return bp_kernels.softmax_ce_f32(a, delta, y, w, rows, cols, n)
    else:
        return bp_kernels.softmax_ce_f64(a, delta, y, w, rows, cols, n)


cdef inline double poisson_deviance(double a, double log_a, double y) noexcept nogil:
    # The half Poisson deviance of one output: the mean a > 0 (its log given)
    # against the count y ≥ 0,
    #   y log(y/a) − y + a = a − y log a + (y log y − y),  0 log 0 = 0,
    # 0 where a = y.  Its one home: the fused pass gives log a = z (a = e^z),
    # so that it takes no logarithm of a, and the standalone loss log p.
    return a - y * log_a + (y * log(y) - y if y > 0 else 0)


cdef inline double canonical_forward_backward(int loss, real* a, real* delta,
                                              const real* y, const real* w,
                                              Py_ssize_t rows, Py_ssize_t cols,
                                              Py_ssize_t n=0) noexcept nogil:
    # A loss fused with its canonical link, output by output: sigmoid with
    # binary cross-entropy, exp with the Poisson deviance.
    # IN a: z (rows, cols), the logits; y (rows, cols); w (rows,) sample
    # weights or NULL
    # OUT a = f(z); OUT delta = w (f(z) − y)/n, which is ∂C/∂z of either pair.
    # Per element, from z:
    #   bce      −[y log σ(z) + (1 − y) log(1 − σ(z))] = max(z, 0) − z·y + log(1 + e^−|z|),
    #            which forms no log(0) and no overflow for any finite z;
    #   poisson  poisson_deviance(e^z, z, y) = e^z − y·z + (y log y − y), one
    #            exponential for the value and the gradient: for z ≪ 0, e^z
    #            underflows to 0 and the value stays finite (−y·z); past the
    #            log of the largest `real`, e^z is +inf, and so are the value
    #            and δ (fit undoes that epoch, evaluate reports the overflow).
    cdef Py_ssize_t i, j, k
    cdef double row, total = 0
    cdef real z, scale, inv_rows = <real>(1.0 / (n if n > 0 else rows))
    for i in range(rows):
        scale = inv_rows if w == NULL else w[i] * inv_rows
        row = 0
        for j in range(cols):
            k = i * cols + j
            z = a[k]
            if loss == POISSON:
                a[k] = r_exp(z)
                row += poisson_deviance(a[k], z, y[k])
            else:
                row += (z if z > 0 else 0) - <double>z * y[k] + r_log1p(r_exp(-fabs(z)))
                a[k] = sigmoid(z)
            delta[k] = (a[k] - y[k]) * scale
        total += row if w == NULL else w[i] * row
    return total / rows


cdef inline double loss_forward_backward(int loss, double huber_delta, int act,
                                         real slope, real* a, real* z, real* delta,
                                         const real* y, const real* w, Py_ssize_t rows,
                                         Py_ssize_t cols, Py_ssize_t n=0) noexcept nogil:
    # IN a: z (rows, cols) of the output layer, bias added; y (rows, cols);
    # w (rows,) sample weights, or NULL for none
    # OUT a = f(z); OUT delta = ∂L/∂z; returns the mean (weighted) loss
    # 1/n Σ_i w_i ℓ_i.  z (rows, cols): room for z when act_keeps_z(act)
    # (else it may be NULL); huber_delta: huber's δ.
    # Cross-entropy comes with softmax, binary cross-entropy with sigmoid and
    # the Poisson deviance with exp (the Python layer sees to it), each fused
    # into one stable pass; mse, mae and huber are regression_error's ∂C/∂a,
    # then ⊙ f′(z) by act_backward.
    # n > 0: these rows are a share of a batch of n rows (a step split across
    # threads), so δ takes the batch's factor 1/n; the value is still the
    # mean over these rows.
    cdef double value
    if loss == CROSS_ENTROPY:
        return softmax_ce_forward_backward(a, delta, y, w, rows, cols, n)
    if loss == BINARY_CROSS_ENTROPY or loss == POISSON:
        return canonical_forward_backward(loss, a, delta, y, w, rows, cols, n)
    act_forward(a, <real*>NULL, rows, cols, act, slope,
                z if act_keeps_z(act) else <real*>NULL)
    value = regression_error(loss, huber_delta, delta, a, y, w, rows, cols, n)
    act_backward(delta, delta, a, z, rows, cols, act, slope)
    return value


cdef inline void output_delta(int loss, double huber_delta, int act, real slope,
                              real* delta, const real* a, const real* z, const real* y,
                              Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # IN a (rows, cols) = f(z) of the output layer, y (rows, cols); z (rows,
    # cols) its pre-activation when act_keeps_z(act) (else it may be NULL)
    # OUT delta = ∂L/∂z, from the outputs alone: (a − y)/n for the fused pairs
    # (softmax with cross-entropy, sigmoid with binary cross-entropy, exp with
    # the Poisson deviance: each loss's canonical link), and ∂C/∂a ⊙ f′(z)
    # for mse, mae and huber (regression_error).
    cdef Py_ssize_t i
    cdef real inv_rows = <real>(1.0 / rows)
    if regression_loss(loss):
        regression_error(loss, huber_delta, delta, a, y, <real*>NULL, rows, cols)
        act_backward(delta, delta, a, z, rows, cols, act, slope)
        return
    for i in range(rows * cols):
        delta[i] = (a[i] - y[i]) * inv_rows


cdef inline double loss_value(int loss, const real* p, const real* y,
                              Py_ssize_t rows, Py_ssize_t cols,
                              real eps) noexcept nogil:
    # IN p (rows, cols) probabilities (means > 0 for poisson), y (rows, cols)
    # targets; returns the mean loss of the standalone (unfused) losses:
    #   binary_cross_entropy  −1/n Σ [y log p + (1 − y) log(1 − p)]
    #   cross_entropy         −1/n Σ y log p
    #   poisson               1/n Σ [y log(y/p) − y + p]   (poisson_deviance)
    # Probabilities are clipped to [eps, 1 − eps] so that log never sees 0;
    # the Python layer refuses means p ≤ 0.  (mse, mae and huber are
    # regression_error's.)
    cdef Py_ssize_t i
    cdef double q, total = 0
    if loss == POISSON:
        for i in range(rows * cols):
            total += poisson_deviance(p[i], log(p[i]), y[i])
        return total / rows
    for i in range(rows * cols):
        q = min(max(<double>p[i], <double>eps), 1.0 - eps)
        if y[i] != 0:
            total -= y[i] * log(q)
        if loss == BINARY_CROSS_ENTROPY and y[i] != 1:
            total -= (1.0 - y[i]) * log(1.0 - q)
    return total / rows


cdef inline void loss_gradient(int loss, real* g, const real* p, const real* y,
                               Py_ssize_t rows, Py_ssize_t cols,
                               real eps) noexcept nogil:
    # IN p (rows, cols), y (rows, cols); OUT g = ∂L/∂p of loss_value:
    #   bce (p − y) / (p (1 − p) n) ;  ce −y / (p n) ;  poisson (1 − y/p) / n
    # with probabilities clipped as in loss_value (the unclipped formula,
    # evaluated at the clipped p, so the gradient still points the right way
    # at 0 or 1).
    cdef Py_ssize_t i
    cdef double q
    if loss == POISSON:
        for i in range(rows * cols):
            g[i] = <real>((1.0 - <double>y[i] / p[i]) / rows)
        return
    for i in range(rows * cols):
        q = min(max(<double>p[i], <double>eps), 1.0 - eps)
        if loss == BINARY_CROSS_ENTROPY:
            g[i] = <real>((q - y[i]) / (q * (1.0 - q) * rows))
        else:
            g[i] = <real>(-y[i] / (q * rows))


# ----------------------------------------------------------------- labels ---
# The label rule of a classifier, its one home: for cross-entropy (softmax
# outputs) the row's argmax, the first of equal maxima as numpy's argmax;
# for binary cross-entropy (sigmoid outputs) [a ≥ ½] per output.

cdef inline Py_ssize_t row_argmax(const real* a, Py_ssize_t cols) noexcept nogil:
    # IN a (cols,); the index of its largest value, the first of equals, a
    # NaN never the largest (csrc/simd/rows.h, argmax, in the chosen build).
    cdef long long label
    if real is float:
        bp_kernels.argmax_rows_f32(&label, a, 1, cols)
    else:
        bp_kernels.argmax_rows_f64(&label, a, 1, cols)
    return label


cdef inline int threshold_label(real a) noexcept nogil:
    # The label of one sigmoid output a: 1 if a ≥ ½, else 0.
    return a >= 0.5


cdef inline void class_labels(int loss, long long* labels, const real* a,
                              Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # IN a (rows, cols) outputs or targets; OUT labels: for cross-entropy
    # (rows,), row_argmax of each row; else (rows, cols), threshold_label of
    # each output.
    cdef Py_ssize_t i
    if loss == CROSS_ENTROPY:   # (csrc/simd/rows.h: row_argmax's rule, vectorised)
        if real is float:
            bp_kernels.argmax_rows_f32(labels, a, rows, cols)
        else:
            bp_kernels.argmax_rows_f64(labels, a, rows, cols)
    else:
        for i in range(rows * cols):
            labels[i] = threshold_label(a[i])


cdef inline Py_ssize_t count_correct(int loss, const real* a, const real* y,
                                     Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    # IN a (rows, cols) outputs, y (rows, cols) targets; the number of rows
    # (cross-entropy) or of outputs (binary cross-entropy) whose label
    # (class_labels' rule) a gives right; 0 for mse.
    cdef Py_ssize_t i, right = 0
    if loss == CROSS_ENTROPY:   # (as class_labels)
        if real is float:
            right = bp_kernels.argmax_agree_f32(a, y, rows, cols)
        else:
            right = bp_kernels.argmax_agree_f64(a, y, rows, cols)
    elif loss == BINARY_CROSS_ENTROPY:
        for i in range(rows * cols):
            right += threshold_label(a[i]) == threshold_label(y[i])
    return right


# ------------------------------------------------------------ dense layer ---

cdef inline Py_ssize_t part_end(Py_ssize_t end, Py_ssize_t n) noexcept nogil:
    # The end of a part of n things given as `end`, −1 meaning n (the whole).
    return n if end < 0 else end


cdef inline void dense_forward(real* out, const real* x, const real* W,
                               const real* b, Py_ssize_t rows, Py_ssize_t n_in,
                               Py_ssize_t n_out, int act, real slope,
                               real* z, Py_ssize_t j0=0, Py_ssize_t j1=-1,
                               bint alone=False) noexcept nogil:
    # out (rows, n_out) = f(x (rows, n_in) @ W (n_in, n_out) + b (n_out,));
    # OUT z (rows, n_out) = x @ W + b, or NULL to keep nothing.  A small
    # product adds b (and takes identity or ReLU) in its kernel's epilogue;
    # any other f follows as its own pass.  With j0, j1: only the columns
    # j0 … j1 of out and z (a thread's part: epoch.pxi, cut steps), for an
    # f of one unit at a time (not softmax); `alone`: as small_gemm.
    cdef bint fused = act == IDENTITY or act == RELU
    cdef Py_ssize_t i, width = part_end(j1, n_out) - j0
    if z != NULL:
        z += j0
    if b != NULL:
        b += j0
    if small_gemm(BP_GEMM_NN, rows, width, n_in, 1, x, n_in, W + j0, n_out, 0, out + j0,
                  b, act == RELU, z if fused else NULL, <real*>NULL, n_out, alone):
        b = NULL
    else:
        gemm(False, False, <int>rows, <int>width, <int>n_in,
             1, x, <int>n_in, W + j0, <int>n_out, 0, out + j0, <int>n_out)
        fused = False
    if fused:
        return
    if width == n_out:
        act_forward(out, b, rows, n_out, act, slope, z)
        return
    for i in range(rows):
        act_forward(out + i * n_out + j0, b, 1, width, act, slope,
                    NULL if z == NULL else z + i * n_out)


cdef inline void bias_gradient(real* db, const real* delta, Py_ssize_t rows,
                               Py_ssize_t n_out, Py_ssize_t lo=0,
                               Py_ssize_t hi=-1) noexcept nogil:
    # OUT db (n_out,) = Σ_rows δ, from delta (rows, n_out); only its entries
    # lo … hi when given (a thread's part: dense_gradient_part).  Each sum in
    # row order (csrc/simd/rows.h, in the chosen build).
    hi = part_end(hi, n_out)
    if hi <= lo:
        return
    if real is float:
        bp_kernels.col_sums_f32(db + lo, delta + lo, rows, hi - lo, n_out)
    else:
        bp_kernels.col_sums_f64(db + lo, delta + lo, rows, hi - lo, n_out)


cdef inline void input_gradient(real* dx, const real* delta, const real* W,
                                Py_ssize_t rows, Py_ssize_t n_in,
                                Py_ssize_t n_out, const real* relu_of, Py_ssize_t r0=0,
                                Py_ssize_t r1=-1, bint alone=False) noexcept nogil:
    # OUT dx (rows, n_in) = δ @ Wᵀ, from delta (rows, n_out), W (n_in, n_out);
    # then ⊙ [relu_of > 0] unless relu_of is NULL: relu_of (rows, n_in) the
    # outputs of a ReLU layer below, whose derivative a small product takes
    # in its epilogue (else act_backward's pass).  With r0, r1: only the
    # columns r0 … r1 of dx, from the rows r0 … r1 of W (a thread's part);
    # `alone`: as small_gemm.
    cdef Py_ssize_t i, width = part_end(r1, n_in) - r0
    if relu_of != NULL:
        relu_of += r0
    if small_gemm(BP_GEMM_NT, rows, width, n_out, 1, delta, n_out, W + r0 * n_out, n_out, 0,
                  dx + r0, <real*>NULL, False, <real*>NULL, relu_of, n_in, alone):
        return
    gemm(False, True, <int>rows, <int>width, <int>n_out,
         1, delta, <int>n_out, W + r0 * n_out, <int>n_out, 0, dx + r0, <int>n_in)
    if relu_of == NULL:
        return
    if width == n_in:
        act_backward(dx, dx, relu_of, <real*>NULL, rows, n_in, RELU, 0)
        return
    for i in range(rows):
        act_backward(dx + i * n_in + r0, dx + i * n_in + r0, relu_of + i * n_in, <real*>NULL,
                     1, width, RELU, 0)


cdef inline void weight_gradient(real* dW, real alpha, real beta, const real* x,
                                 const real* delta, Py_ssize_t rows, Py_ssize_t n_in,
                                 Py_ssize_t n_out, Py_ssize_t ldx=0) noexcept nogil:
    # dW (n_in, n_out) = alpha · xᵀ @ δ + beta · dW, from x (rows, n_in), of
    # row stride ldx (0: n_in), and delta (rows, n_out): the weight gradient
    # (beta 0) or a step along it straight into the weights (beta 1, alpha −η).
    if ldx == 0:
        ldx = n_in
    if small_gemm(BP_GEMM_TN, n_in, n_out, rows, alpha, x, ldx, delta, n_out, beta,
                  dW, <real*>NULL, False, <real*>NULL, <real*>NULL):
        return
    gemm(True, False, <int>n_in, <int>n_out, <int>rows,
         alpha, x, <int>ldx, delta, <int>n_out, beta, dW, <int>n_out)


# A layer's parameter gradient, or plain SGD's step along it, can be cut
# into parts among threads that each hold the whole batch's x and δ (a step
# split across threads: epoch.pxi): a part is the rows r0 … r1 of W (n_in,
# n_out), whose gradient x[:, r0 … r1]ᵀ @ δ is one product, and the entries
# j0 … j1 of b.  The whole layer is the part (0, n_in, 0, n_out).

cdef inline void dense_gradient_part(real* dW, real* db, const real* delta,
                                     const real* x, Py_ssize_t rows, Py_ssize_t n_in,
                                     Py_ssize_t n_out, bint accumulate, Py_ssize_t r0,
                                     Py_ssize_t r1, Py_ssize_t j0,
                                     Py_ssize_t j1) noexcept nogil:
    # OUT dW[r0 … r1] = x[:, r0 … r1]ᵀ @ δ (with `accumulate`: += into what
    # the caller zeroed, which spares BLAS its own pass zeroing it);
    # OUT db[j0 … j1] = Σ_rows δ[:, j0 … j1]; IN delta (rows, n_out) = ∂L/∂z,
    # x (rows, n_in).
    weight_gradient(dW + r0 * n_out, 1, 1 if accumulate else 0, x + r0, delta, rows,
                    r1 - r0, n_out, n_in)
    bias_gradient(db, delta, rows, n_out, j0, j1)


cdef inline void dense_sgd_part(real* W, real* b, real* db, const real* delta,
                                const real* x, Py_ssize_t rows, Py_ssize_t n_in,
                                Py_ssize_t n_out, real lr, Py_ssize_t r0, Py_ssize_t r1,
                                Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    # The fast twin of dense_gradient_part followed by optimizer_update's
    # plain SGD (no momentum, l2, decay or clipping), equal to them up to
    # rounding (tests/test_kernels.py:
    # test_fused_sgd_is_dense_backward_then_optimizer_update), which fit runs
    # for plain SGD after the layer's dx (taken with W as it was).
    # Plain SGD's step on the part: W[r0 … r1] ← W − η · x[:, r0 … r1]ᵀ @ δ as
    # one product into W (β = 1), so the weight gradient is never stored,
    # zeroed or read back; db[j0 … j1] holds Σ_rows δ for b ← b − η · db.
    cdef Py_ssize_t j
    weight_gradient(W + r0 * n_out, -lr, 1, x + r0, delta, rows, r1 - r0, n_out, n_in)
    bias_gradient(db, delta, rows, n_out, j0, j1)
    for j in range(j0, j1):
        b[j] -= lr * db[j]


cdef inline void dense_backward(real* dx, real* dW, real* db,
                                const real* delta, const real* x,
                                const real* W, Py_ssize_t rows,
                                Py_ssize_t n_in, Py_ssize_t n_out,
                                const real* relu_of, bint accumulate=False) noexcept nogil:
    # IN delta (rows, n_out) = ∂L/∂z, x (rows, n_in), W (n_in, n_out)
    # OUT dW (n_in, n_out) = xᵀ @ δ, db (n_out,) = Σ_rows δ (the whole
    # dense_gradient_part, accumulating as it says);
    # OUT dx (rows, n_in) = δ @ Wᵀ, skipped when dx is NULL (the first layer),
    # ⊙ [relu_of > 0] unless relu_of is NULL (input_gradient).
    dense_gradient_part(dW, db, delta, x, rows, n_in, n_out, accumulate, 0, n_in, 0, n_out)
    if dx != NULL:
        input_gradient(dx, delta, W, rows, n_in, n_out, relu_of)


# ---------------------------------------------------- sparse input rows ---
# The first layer of a network trained on a CSR matrix, whose batch x is
# given by its nonzeros: z = x @ W + b is a sum of the rows of W that the
# nonzeros pick, and dW = xᵀ @ δ adds into those rows alone, so a batch at
# density d costs d times the products of dense_forward and dense_backward
# (docs/performance.md measures when this beats gathering the rows dense).

cdef struct CsrBatch:
    const void* data             # (nnz,) the nonzero values, of type real
    const Py_ssize_t* indices    # (nnz,) the column of each (any order; repeats add up)
    const Py_ssize_t* indptr     # (n + 1,) row r holds data[indptr[r]:indptr[r + 1]]
    const Py_ssize_t* order      # (rows,) the batch's rows, or NULL: first, first + 1, …
    Py_ssize_t first


cdef inline Py_ssize_t batch_row(const CsrBatch* x, Py_ssize_t i) noexcept nogil:
    # The matrix row that is row i of the batch x.
    return x.order[i] if x.order != NULL else x.first + i


cdef inline void axpy(real* y, real alpha, const real* x, Py_ssize_t n) noexcept nogil:
    # y (n,) += alpha · x (n,)
    cdef Py_ssize_t j
    for j in range(n):
        y[j] += alpha * x[j]


cdef inline void sparse_forward(real* out, const CsrBatch* x, const real* W,
                                const real* b, Py_ssize_t rows, Py_ssize_t n_out,
                                int act, real slope, real* z) noexcept nogil:
    # out (rows, n_out) = f(x (rows, n_in) @ W (n_in, n_out) + b (n_out,)),
    # each row of x @ W being Σ x_rc · W[c] over the row's nonzeros x_rc;
    # OUT z = x @ W + b, or NULL (as dense_forward).
    cdef const real* data = <const real*>x.data
    cdef Py_ssize_t i, k, r
    for i in range(rows * n_out):
        out[i] = 0
    for i in range(rows):
        r = batch_row(x, i)
        for k in range(x.indptr[r], x.indptr[r + 1]):
            axpy(out + i * n_out, data[k], W + x.indices[k] * n_out, n_out)
    act_forward(out, b, rows, n_out, act, slope, z)


cdef inline void sparse_weight_gradient(real* dW, real alpha, const real* delta,
                                        const CsrBatch* x, Py_ssize_t rows,
                                        Py_ssize_t n_out) noexcept nogil:
    # dW (n_in, n_out) += alpha · xᵀ @ δ, from delta (rows, n_out): row c of
    # dW takes alpha · x_rc · δ_r for each nonzero x_rc; other rows are left.
    cdef const real* data = <const real*>x.data
    cdef Py_ssize_t i, k, r
    for i in range(rows):
        r = batch_row(x, i)
        for k in range(x.indptr[r], x.indptr[r + 1]):
            axpy(dW + x.indices[k] * n_out, alpha * data[k], delta + i * n_out, n_out)


cdef inline void sparse_backward(real* dW, real* db, const real* delta,
                                 const CsrBatch* x, Py_ssize_t rows, Py_ssize_t n_in,
                                 Py_ssize_t n_out) noexcept nogil:
    # dense_backward of a first layer (no dx) whose input x is sparse:
    # OUT dW (n_in, n_out) = xᵀ @ δ ;  db (n_out,) = Σ_rows δ.
    cdef Py_ssize_t j
    for j in range(n_in * n_out):
        dW[j] = 0
    sparse_weight_gradient(dW, 1, delta, x, rows, n_out)
    bias_gradient(db, delta, rows, n_out)


cdef inline void sparse_backward_sgd(real* W, real* b, real* db, const real* delta,
                                     const CsrBatch* x, Py_ssize_t rows,
                                     Py_ssize_t n_out, real lr) noexcept nogil:
    # dense_sgd_part of a whole first layer whose input x is sparse: W ← W −
    # η · xᵀ @ δ straight into the rows of W the nonzeros pick (equal to
    # sparse_backward, then plain SGD, up to rounding); db holds Σ_rows δ
    # for b ← b − η · db.
    cdef Py_ssize_t j
    sparse_weight_gradient(W, -lr, delta, x, rows, n_out)
    bias_gradient(db, delta, rows, n_out)
    for j in range(n_out):
        b[j] -= lr * db[j]


# ------------------------------------------------------------- optimizers ---
# The flat parameters w[0 … n) hold n_b bias vectors, bias k at
# w[b_off[k] … b_off[k] + b_len[k]) (in increasing order, apart).  Unless
# o.decay_biases, they take no l2 and no weight decay: the update then runs
# over the 2·n_b + 1 pieces that the biases cut w into, each piece with its
# own l2 and decay, and otherwise (or for n_b = 0) over one piece, [0, n).

cdef inline bint piece(Py_ssize_t j, Py_ssize_t n, const Py_ssize_t* b_off,
                       const Py_ssize_t* b_len, Py_ssize_t n_b,
                       Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # Piece j of 0 … 2·n_b: [lo, hi) is bias (j − 1)/2 for odd j, else what
    # lies before bias j/2 (after the last, for j = 2·n_b).  Returns whether
    # it takes l2 and decay (True but for a bias).
    cdef Py_ssize_t k = j // 2
    if j % 2:
        lo[0], hi[0] = b_off[k], b_off[k] + b_len[k]
        return False
    lo[0] = b_off[k - 1] + b_len[k - 1] if k > 0 else 0
    hi[0] = b_off[k] if k < n_b else n
    return True


cdef inline double clip_scale(const Optimizer* o, const real* w, const real* g,
                              Py_ssize_t n, const Py_ssize_t* b_off,
                              const Py_ssize_t* b_len, Py_ssize_t n_b) noexcept nogil:
    # The factor min(1, clip_norm / ‖g + l2·w‖) of gradient clipping (1: off),
    # the norm over every piece, each with its own l2.
    cdef Py_ssize_t i, j, lo, hi
    cdef double l2, gi, total = 0
    if o.clip_norm <= 0:
        return 1
    for j in range(2 * n_b + 1):
        l2 = o.l2 if piece(j, n, b_off, b_len, n_b, &lo, &hi) else 0
        for i in range(lo, hi):
            gi = <double>g[i] + l2 * w[i]
            total += gi * gi
    total = sqrt(total)
    return o.clip_norm / total if total > o.clip_norm else 1


cdef inline void update_piece(const Optimizer* o, real* w, const real* g,
                              real* s1, real* s2, Py_ssize_t lo, Py_ssize_t hi,
                              real scale, bint decayed, bint clear=False) noexcept nogil:
    # optimizer_update's rule on w[lo … hi), with the clipping factor
    # `scale`; l2 and weight decay only where `decayed`; with `clear`, g[lo … hi)
    # is set to 0 as it is read.  The loops are the chosen build's
    # (csrc/simd/update.h), on o.threads threads for a long piece
    # (csrc/simd/team.c); here the rule and its constants.
    cdef bp_rule k
    cdef int rule
    k.clear = clear
    k.lr, k.scale, k.mu = o.lr, scale, o.momentum
    k.l2 = o.l2 if decayed else 0
    k.keep = (1 - o.lr * o.weight_decay) if decayed else 1
    k.b1, k.b2, k.a1, k.a2 = o.beta1, o.beta2, 1 - o.beta1, 1 - o.beta2
    k.rho, k.a_rho = o.rho, 1 - o.rho
    k.eps = max(o.eps, FLT_MIN) if real is float else max(o.eps, DBL_MIN)
    k.c1 = k.c2 = 0
    if o.kind == SGD:
        rule = (BP_RULE_SGD if o.momentum == 0 else
                BP_RULE_NESTEROV if o.nesterov else BP_RULE_MOMENTUM)
    elif o.kind == ADAM:
        rule = BP_RULE_ADAM
        k.c1 = o.lr / (1 - pow(o.beta1, <double>o.t))      # η / (1 − β₁ᵗ)
        k.c2 = 1 / (1 - pow(o.beta2, <double>o.t))         # 1 / (1 − β₂ᵗ)
    elif o.kind == RMSPROP:
        rule = BP_RULE_RMSPROP
    else:
        rule = BP_RULE_ADAGRAD
    if real is float:
        bp_update_f32(rule, w + lo, <real*>g + lo, s1 + lo if s1 != NULL else NULL,
                      s2 + lo if s2 != NULL else NULL, hi - lo, &k, o.threads)
    else:
        bp_update_f64(rule, w + lo, <real*>g + lo, s1 + lo if s1 != NULL else NULL,
                      s2 + lo if s2 != NULL else NULL, hi - lo, &k, o.threads)


cdef inline void optimizer_update(Optimizer* o, real* w, const real* g,
                                  real* s1, real* s2, Py_ssize_t n,
                                  const Py_ssize_t* b_off, const Py_ssize_t* b_len,
                                  Py_ssize_t n_b) noexcept nogil:
    # One update of the flat parameters w (n,) from their gradient g, with the
    # optimizer's state s1, s2 (n,) each (velocity; first and second moments;
    # mean square; sum of squares), and its n_b biases where b_off and b_len
    # say (see above; n_b = 0: none).  Every rule is one pass over each
    # piece (one piece unless the biases go undecayed); gradient clipping
    # needs one more, before it, for the norm.  The step is counted once
    # (o.t).  Per parameter, with ĝ = (g + l2·w) · clip and w first decayed
    # by η·wd (l2 = wd = 0 for a bias when o.decay_biases is False):
    #   SGD      v ← μv + ĝ ;  w ← w − η·(ĝ + μv if nesterov else v)
    #            (μ = 0: w ← w − ηĝ, reading no state: s1, s2 may be NULL)
    #   Adam     m ← β₁m + (1 − β₁)ĝ ;  v ← β₂v + (1 − β₂)ĝ² ;
    #            w ← w − η·(m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
    #   RMSProp  s ← ρs + (1 − ρ)ĝ² ;  w ← w − ηĝ / (√s + ε)
    #   AdaGrad  s ← s + ĝ² ;  w ← w − ηĝ / (√s + ε)
    #
    # The settings are doubles, rounded once to `real` (update_piece).
    # 1 − β and 1 − ρ are taken in double before rounding: in float32 a β
    # of 0.99999999 rounds to 1, and 1 − β then to 0 (moments that never
    # grow: steps of NaN, or none); rounded after, 1 − β keeps its value and
    # β's own rounding errs by less than float32 resolves.  ε is at least
    # the smallest normal number of `real`, so that a value that underflows
    # (1e-50 in float32) cannot leave 0 / 0 where a gradient was always 0.
    cdef Py_ssize_t j, lo, hi
    cdef bint decayed
    cdef real scale
    if o.decay_biases:
        n_b = 0
    scale = <real>clip_scale(o, w, g, n, b_off, b_len, n_b)
    o.t += 1
    for j in range(2 * n_b + 1):
        decayed = piece(j, n, b_off, b_len, n_b, &lo, &hi)
        update_piece(o, w, g, s1, s2, lo, hi, scale, decayed)


cdef inline void optimizer_update_stretch(const Optimizer* o, real* w, real* g,
                                          real* s1, real* s2, Py_ssize_t lo,
                                          Py_ssize_t hi, bint bias) noexcept nogil:
    # optimizer_update's rule on the stretch w[lo … hi) alone, one layer's
    # weights or its bias (`bias`: no l2 or decay unless o.decay_biases),
    # without clipping, in a step the caller has counted (o.t += 1 first);
    # g[lo … hi) is left 0, for the next step's products to add into
    # (dense_backward's `accumulate`).  Each parameter's update reads only its
    # own gradient and state, so the stretches of a step, taken as their
    # gradients are found, give what one optimizer_update after them gives.
    update_piece(o, w, g, s1, s2, lo, hi, 1, o.decay_biases or not bias, True)


# ---------------------------------------------------------------- dropout ---
# Inverted dropout after a layer's activation (Srivastava et al., 2014): in
# a training pass each unit is kept (m = 1) with probability 1 − rate and
# scaled by 1/(1 − rate), so that d has the expectation of a; at inference
# it is the identity, and nothing runs.  The backward pass takes the
# forward's mask.  The scale is rounded once to `real`, and m · scale is
# exactly 0 or the scale, so either pass is one product per unit.

cdef inline void dropout_forward(real* d, const real* a, const unsigned char* m,
                                 Py_ssize_t n, double rate) noexcept nogil:
    # OUT d (n,) ← a ⊙ m / (1 − rate); IN a (n,), the mask m (n,) of 0 and 1
    cdef real scale = <real>(1.0 / (1.0 - rate))
    cdef Py_ssize_t i
    for i in range(n):
        d[i] = a[i] * (m[i] * scale)


cdef inline void dropout_backward(real* g_a, const real* g_d, const unsigned char* m,
                                  Py_ssize_t n, double rate) noexcept nogil:
    # OUT g_a (n,) ← ∂L/∂a = g_d ⊙ m / (1 − rate); IN g_d = ∂L/∂d (n,), m (n,)
    # (g_a may be g_d)
    dropout_forward(g_a, g_d, m, n, rate)
