/* Two reductions of a block's rows, for the element type REAL: the sums down
 * its columns (a dense layer's bias gradient, Σ_rows δ) and the label of
 * each row (a classifier's argmax).  Included by build.h once per element
 * type and instruction set, after lanes.h.  Both run on rows of a few tens
 * of values, where a scalar loop waits on each addition or comparison in
 * turn; here a vector holds a row's columns (the 10 outputs of a classifier
 * under one AVX-512 vector), read in its first lanes alone at a row's end.
 */

/* db[0 … nv·VL) (its last vector's lanes [0, hi) alone) = Σ_i delta[i·ld + j]
 * for the nv ≤ 4 vectors of columns at delta: the sums in registers. */
static inline __attribute__((always_inline)) void
NAME(col_block)(REAL *db, const REAL *delta, ptrdiff_t rows, ptrdiff_t ld, const int nv,
                const int hi)
{
    VEC acc[4];
    ptrdiff_t i;
    int v;
    for (v = 0; v < nv; v++)
        acc[v] = (VEC){0};
    for (i = 0; i < rows; i++)
        for (v = 0; v < nv; v++)
            acc[v] += v + 1 < nv || hi == VL ? NAME(load)(delta + i * ld + v * VL)
                                             : NAME(load_part)(delta + i * ld + v * VL, hi, 0);
    for (v = 0; v < nv; v++)
        NAME(store_part)(db + v * VL, acc[v], 0, v + 1 < nv ? VL : hi);
}

/* db (n,) = Σ_i delta[i, ·] over the rows of delta (rows, n), row stride ld:
 * each column summed in row order, as a scalar loop would. */
static void NAME(col_sums)(REAL *restrict db, const REAL *restrict delta, ptrdiff_t rows,
                           ptrdiff_t n, ptrdiff_t ld)
{
    ptrdiff_t j = 0;
    for (; n - j >= 4 * VL; j += 4 * VL)
        NAME(col_block)(db + j, delta + j, rows, ld, 4, VL);
    for (; n - j >= VL; j += VL)
        NAME(col_block)(db + j, delta + j, rows, ld, 1, VL);
    if (j < n)
        NAME(col_block)(db + j, delta + j, rows, ld, 1, (int)(n - j));
}

/* The index of the largest of r[0 … cols) (cols ≥ 1), the first of equals,
 * as numpy's argmax, by the scalar rule `r[j] > r[best]` from best = 0
 * (kernels.pxd, row_argmax): a NaN is never larger, so the maximum is that
 * of the other values, and a NaN first gives 0. */
static inline ptrdiff_t NAME(argmax)(const REAL *r, ptrdiff_t cols)
{
    const REAL low = -INFINITY;
    VEC m = (VEC){0} + low;     /* (a NaN lane never replaces what is here) */
    ptrdiff_t j;
    REAL top;
    if (r[0] != r[0])
        return 0;
    if (cols <= VL) {           /* (the common case: one vector, read once) */
        const VEC x = NAME(load_part)(r, (int)cols, low);
        const int at = NAME(first_equal)(x, (VEC){0} + NAME(hmax)(NAME(vmax)(m, x)), (int)cols);
        return at >= 0 ? at : 0;
    }
    for (j = 0; j < cols; j += VL)
        m = NAME(vmax)(m, NAME(load_part)(r + j, cols - j < VL ? (int)(cols - j) : VL, low));
    top = NAME(hmax)(m);
    for (j = 0; j < cols; j += VL) {
        const int n = cols - j < VL ? (int)(cols - j) : VL;
        const int at = NAME(first_equal)(NAME(load_part)(r + j, n, low), (VEC){0} + top, n);
        if (at >= 0)
            return j + at;
    }
    return 0;   /* (not reached: top is one of the values, or all are −inf) */
}

/* labels[i] = argmax of row i of a (rows, cols). */
static void NAME(argmax_rows)(long long *labels, const REAL *a, ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t i;
    for (i = 0; i < rows; i++)
        labels[i] = NAME(argmax)(a + i * cols, cols);
}

/* The rows i of a (rows, cols) whose argmax is that of y's row i. */
static ptrdiff_t NAME(argmax_agree)(const REAL *a, const REAL *y, ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t i, right = 0;
    for (i = 0; i < rows; i++)
        right += NAME(argmax)(a + i * cols, cols) == NAME(argmax)(y + i * cols, cols);
    return right;
}
