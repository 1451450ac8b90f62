/* Softmax, and the softmax cross-entropy's value and gradient, for the
 * element type REAL: the home of both formulas.  Included by build.h once
 * per element type and instruction set, with NAME(f) naming the functions
 * and EXP the exponential of REAL (fastexp.h's bp_expf for float, whose
 * loop the compiler vectorises; libm's exp for double).
 *
 * Per row of z (rows, cols): m = max_j z_j, e_j = e^(z_j − m) (every
 * exponent ≤ 0, so nothing overflows), s = Σ_j e_j ≥ 1 (summed in double),
 * softmax(z)_j = e_j / s.  The work is three passes over the block rather
 * than three short loops per row: the maxima, then every e^(z − m) in one
 * flat loop (vectors of the build's width whatever cols is: the 10 logits of
 * a classifier are under one AVX-512 vector), then each row's sum and scale.
 * A row's result does not depend on the rows beside it.
 */

/* The maximum of r (cols ≥ 1). */
static inline REAL NAME(row_max)(const REAL *r, ptrdiff_t cols)
{
    REAL m = r[0];
    ptrdiff_t j;
    for (j = 1; j < cols; j++)
        m = r[j] > m ? r[j] : m;
    return m;
}

/* Σ_j r_j, and Σ_j t_j (m − r_j), in double, each
 * in four interleaved partial sums: a row of a few logits is too short for
 * the vectors, and one chain of additions would wait on each in turn. */
static inline double NAME(row_sum)(const REAL *r, ptrdiff_t cols)
{
    double p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    ptrdiff_t j;
    for (j = 0; j + 4 <= cols; j += 4) {
        p0 += r[j], p1 += r[j + 1];
        p2 += r[j + 2], p3 += r[j + 3];
    }
    for (; j < cols; j++)
        p0 += r[j];
    return (p0 + p1) + (p2 + p3);
}

static inline double NAME(cross_row)(const REAL *r, const REAL *t, REAL m, ptrdiff_t cols)
{
    const double md = m;
    double p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    ptrdiff_t j;
    for (j = 0; j + 4 <= cols; j += 4) {
        p0 += t[j] * (md - r[j]), p1 += t[j + 1] * (md - r[j + 1]);
        p2 += t[j + 2] * (md - r[j + 2]), p3 += t[j + 3] * (md - r[j + 3]);
    }
    for (; j < cols; j++)
        p0 += t[j] * (md - r[j]);
    return (p0 + p1) + (p2 + p3);
}

/* a ← e^a over n elements: the pass that takes most of the time. */
static void NAME(exp_all)(REAL *restrict a, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        a[i] = EXP(a[i]);
}

/* a (rows, cols): z → softmax(z), row by row, in place. */
static void NAME(softmax)(REAL *a, ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t i, j;
    for (i = 0; i < rows; i++) {
        REAL *r = a + i * cols;
        const REAL m = NAME(row_max)(r, cols);
        for (j = 0; j < cols; j++)
            r[j] -= m;
    }
    NAME(exp_all)(a, rows * cols);
    for (i = 0; i < rows; i++) {
        REAL *r = a + i * cols;
        const REAL inv = (REAL)(1 / NAME(row_sum)(r, cols));
        for (j = 0; j < cols; j++)
            r[j] *= inv;
    }
}

/* The softmax cross-entropy of logits a: z (rows, cols) against targets y
 * (rows, cols), each row summing to 1, with sample weights w (rows,) or
 * NULL.  OUT a = softmax(z); OUT delta = w (a − y) / n (n ≤ 0: rows), the
 * gradient with respect to z of the loss summed over the batch's rows and
 * divided by n; returns (1/rows) Σ_i w_i ℓ_i, the mean loss of these rows.
 *
 * Per row ℓ = −Σ_j y_j log softmax(z)_j = Σ_j y_j (lse − z_j), lse = m + log s:
 * Σ_j y_j (m − z_j) is summed in double while z is still there, and as Σ y = 1
 * the rest is log s.  One exponential per element serves both s and a; and
 * unweighted, one logarithm per batch rather than per row: Σ_i log s_i is the
 * log of Π_i s_i, a product of numbers in [1, cols] kept below 1e300. */
static double NAME(softmax_ce)(REAL *restrict a, REAL *restrict delta,
                               const REAL *restrict y, const REAL *restrict w,
                               ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t n)
{
    const REAL inv_rows = (REAL)(1.0 / (double)(n > 0 ? n : rows));
    double total = 0, product = 1;
    ptrdiff_t i, j;
    for (i = 0; i < rows; i++) {
        REAL *r = a + i * cols;
        const REAL *t = y + i * cols;
        const REAL m = NAME(row_max)(r, cols);
        const double cross = NAME(cross_row)(r, t, m, cols);
        total += w ? w[i] * cross : cross;
        for (j = 0; j < cols; j++)
            r[j] -= m;
    }
    NAME(exp_all)(a, rows * cols);
    for (i = 0; i < rows; i++) {
        REAL *r = a + i * cols;
        const REAL *t = y + i * cols;
        const double s = NAME(row_sum)(r, cols);
        const REAL inv_s = (REAL)(1 / s);
        const REAL scale = w ? w[i] * inv_rows : inv_rows;
        if (w) {
            total += w[i] * log(s);
        } else {
            product *= s;
            if (product > 1e300) {
                total += log(product);
                product = 1;
            }
        }
        for (j = 0; j < cols; j++) {
            r[j] *= inv_s;
            delta[i * cols + j] = (r[j] - t[j]) * scale;
        }
    }
    total += log(product);
    return total / (double)rows;
}
