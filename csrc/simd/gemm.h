/* Small matrix products in registers, for the element type REAL: the three
 * products of a dense layer at the sizes where BLAS's fixed cost per call
 * (its interface, packing and thread checks) outweighs the arithmetic.
 * Included by build.h once per element type and instruction set, with NAME(f)
 * naming the functions and VBYTES the width of a vector (16, 32 or 64 bytes);
 * the code is plain C with GCC's vector extensions, which the compiler turns
 * into that build's instructions (FMA where the build has it).
 *
 * C (m, n) is cut into tiles of 6 rows by two vectors of columns (12 rows by
 * one vector where less than two vectors of columns are left); each tile
 * sums over the k products in 12 vector registers, broadcasting one element
 * of A per row and loading one vector of a row of B per column block, and
 * finishes (the epilogue) while the sums are still in registers:
 *
 *   C ← alpha · acc + beta · C ;  + bias (n,) ;  z (m, n) ← that, when z is
 *   given ;  ReLU max(·, 0) ;  ⊙ [mask > 0] for mask (m, n)
 *
 * (bp_gemm in kernels.h).  Columns past the last full vector: when n is at
 * least a vector, the last tile is the vector ending at column n (it overlaps
 * the one before and stores only its new columns); for a narrower C, B is
 * first copied into a vector-wide buffer padded with zeros (a masked load of
 * each of its rows, which cross cache lines, measured slower), and C is read
 * and written in its first lanes alone (lanes.h).  The operand read
 * as Bᵀ (BP_GEMM_NT) is likewise transposed into the buffer first, in column
 * panels.  Every element of C is the same sum in the same order wherever its
 * tile lies, so the result does not depend on how C was cut.
 */

#define MR 12                              /* rows of a tile of one vector */
#define ROWS(nv) ((nv) == 2 ? MR / 2 : MR)    /* … of nv vectors */
#define PACK (32768 / (int)sizeof(REAL))   /* the buffer for B: 32 kB on the stack */

/* One product, typed: A[i, p] = a[i·ai + p·ap], B[p, j] = b[p·ldb + j]. */
typedef struct {
    ptrdiff_t m, n, k;
    const REAL *a;
    ptrdiff_t ai, ap;
    const REAL *b;
    ptrdiff_t ldb;
    REAL *c;
    ptrdiff_t ldc;      /* the row stride of c, z and mask */
    REAL alpha, beta;
    const REAL *bias;
    REAL *z;
    const REAL *mask;
    int relu;
} NAME(job);

/* The lanes [lo, hi) of a vector at p, and their store.  The lanes below lo
 * of the last tile (hi = VL) lie in C, B's row and the bias as well, columns
 * of the tile before: they are read whole and written back as they were
 * (blended); a C narrower than a vector (hi < VL) is read and written in its
 * lanes alone (lanes.h). */
static inline VEC NAME(get)(const REAL *p, int lo, int hi)
{
    (void)lo;
    return hi == VL ? NAME(load)(p) : NAME(load_part)(p, hi, 0);
}

static inline void NAME(put)(REAL *p, VEC v, int lo, int hi)
{
    if (hi < VL) {
        NAME(store_part)(p, v, lo, hi);
        return;
    }
    if (lo > 0) {   /* (a whole store: a masked one would hold up the reads after it) */
        const MASKV keep = NAME(lanes)(lo, VL);
        v = (VEC)(((MASKV)v & keep) | ((MASKV)NAME(load)(p) & ~keep));
    }
    NAME(store)(p, v);
}

/* The epilogue of a tile (see tile), from its sums acc: kept out of line, so
 * that nothing it needs occupies a register during the products. */
static __attribute__((noinline)) void
NAME(finish)(const NAME(job) *J, ptrdiff_t i, ptrdiff_t j0, int lo, int hi, int mr,
             int nv, const VEC *acc)
{
    /* (J's fields read once: the stores to C could alias them, for all
     * the compiler knows) */
    REAL *c = J->c, *z = J->z;
    const REAL *bias = J->bias, *mask = J->mask;
    const REAL alpha = J->alpha, beta = J->beta;
    const ptrdiff_t ldc = J->ldc;
    const int relu = J->relu;
    const VEC zero = {0};
    int r, v;
    for (r = 0; r < mr; r++)
        for (v = 0; v < nv; v++) {
            ptrdiff_t at = (i + r) * ldc + j0 + v * VL;
            int l = nv == 1 ? lo : 0, h = nv == 1 ? hi : VL;
            VEC s = acc[r * nv + v];
            if (alpha != 1)
                s *= alpha;
            if (beta != 0)
                s += beta * NAME(get)(c + at, l, h);
            if (bias)
                s += NAME(get)(bias + j0 + v * VL, l, h);
            if (z)
                NAME(put)(z + at, s, l, h);
            if (relu)
                s = (VEC)((MASKV)s & (s > zero));
            if (mask)
                s = (VEC)((MASKV)s & (NAME(get)(mask + at, l, h) > zero));
            NAME(put)(c + at, s, l, h);
        }
}

/* The tile of C at rows i … i + mr, columns j0 … j0 + nv·VL (its lanes
 * [lo, hi) alone when nv = 1 and the tile is the last, partial one): the
 * sums over k, then finish; mr and nv are constants at every call, so that
 * the sums live in registers. */
static inline __attribute__((always_inline)) void
NAME(tile)(const NAME(job) *J, ptrdiff_t i, ptrdiff_t j0, int lo, int hi,
           const int mr, const int nv)
{
    VEC acc[MR];
    const REAL *a = J->a + i * J->ai, *b = J->b + j0;
    const ptrdiff_t ai = J->ai, ap = J->ap, ldb = J->ldb;
    ptrdiff_t p;
    int r, v;
    for (r = 0; r < mr; r++)
        for (v = 0; v < nv; v++)
            acc[r * nv + v] = (VEC){0};
    for (p = 0; p < J->k; p++) {
        VEC bv[2];
        for (v = 0; v < nv; v++)
            bv[v] = NAME(load)(b + p * ldb + v * VL);
        for (r = 0; r < mr; r++) {
            REAL x = a[r * ai + p * ap];
            for (v = 0; v < nv; v++)
                acc[r * nv + v] += x * bv[v];
        }
    }
    NAME(finish)(J, i, j0, lo, hi, mr, nv, acc);
}

/* The tiles of one column block, down the rows (B's panel stays in L1). */
#define ROW_TILES(nv)                                                         \
    for (i = 0; i < J->m; i += ROWS(nv))                                      \
        switch (J->m - i < ROWS(nv) ? J->m - i : ROWS(nv)) {                  \
        case 1: NAME(tile)(J, i, j0, lo, hi, 1, nv); break;                   \
        case 2: NAME(tile)(J, i, j0, lo, hi, 2, nv); break;                   \
        case 3: NAME(tile)(J, i, j0, lo, hi, 3, nv); break;                   \
        case 4: NAME(tile)(J, i, j0, lo, hi, 4, nv); break;                   \
        case 5: NAME(tile)(J, i, j0, lo, hi, 5, nv); break;                   \
        case 6: NAME(tile)(J, i, j0, lo, hi, 6, nv); break;                   \
        case 7: NAME(tile)(J, i, j0, lo, hi, 7, 1); break;                    \
        case 8: NAME(tile)(J, i, j0, lo, hi, 8, 1); break;                    \
        case 9: NAME(tile)(J, i, j0, lo, hi, 9, 1); break;                    \
        case 10: NAME(tile)(J, i, j0, lo, hi, 10, 1); break;                  \
        case 11: NAME(tile)(J, i, j0, lo, hi, 11, 1); break;                  \
        default: NAME(tile)(J, i, j0, lo, hi, MR, 1); break;                  \
        }

/* C (m, n) of a job whose B rows hold at least VL columns (n ≥ VL, or B
 * padded to VL): column blocks of two vectors, then one, then the last
 * partial vector. */
static void NAME(tiles)(const NAME(job) *J)
{
    ptrdiff_t i, j = 0, j0;
    int lo, hi;
    while (j < J->n) {
        ptrdiff_t left = J->n - j;
        lo = 0, hi = VL, j0 = j;
        if (left >= 2 * VL) {
            ROW_TILES(2)
            j += 2 * VL;
            continue;
        }
        if (left < VL) {            /* the last vector: overlap, or padding */
            if (J->n >= VL)
                j0 = J->n - VL, lo = VL - (int)left;
            else
                hi = (int)left;
        }
        ROW_TILES(1)
        j += left < VL ? left : VL;
    }
}
#undef ROW_TILES

/* dst (k, np) ← src (k, n) read as src[p·sp + j·sj], columns n … np of dst
 * 0: B copied (sj = 1) or transposed (sp = 1) into the buffer. */
static void NAME(pack)(REAL *dst, ptrdiff_t np, const REAL *src, ptrdiff_t sp,
                       ptrdiff_t sj, ptrdiff_t k, ptrdiff_t n)
{
    ptrdiff_t p, j;
    for (p = 0; p < k; p++) {
        for (j = 0; j < n; j++)
            dst[p * np + j] = src[p * sp + j * sj];
        for (; j < np; j++)
            dst[p * np + j] = 0;
    }
}

/* The product g describes (kernels.h, bp_gemm) in this build; returns 0,
 * computing nothing, when not even one vector of B's columns fits the buffer
 * (k > PACK / VL) where B must be copied: read transposed, or n < VL.  The
 * caller then takes BLAS, as for any product beyond the bounds. */
static int NAME(gemm)(const bp_gemm *g)
{
    REAL buf[PACK];
    NAME(job) J = {
        g->m, g->n, g->k, (const REAL *)g->a, g->lda, 1, (const REAL *)g->b, g->ldb,
        (REAL *)g->c, g->ldc, (REAL)g->alpha, (REAL)g->beta, (const REAL *)g->bias,
        (REAL *)g->z, (const REAL *)g->mask, g->relu,
    };
    ptrdiff_t j, width, panel;
    if (g->m <= 0 || g->n <= 0)
        return 1;
    if (g->kind == BP_GEMM_TN)
        J.ai = 1, J.ap = g->lda;
    if (g->kind != BP_GEMM_NT) {
        if (g->n >= VL) {
            NAME(tiles)(&J);
            return 1;
        }
        if (g->k > PACK / VL)
            return 0;
        NAME(pack)(buf, VL, J.b, g->ldb, 1, g->k, g->n);
        J.b = buf, J.ldb = VL;
        NAME(tiles)(&J);
        return 1;
    }
    /* B stored as (n, k): its transpose, a panel of columns at a time */
    panel = g->k > 0 ? PACK / g->k / VL * VL : g->n;
    if (panel < VL)
        return 0;
    for (j = 0; j < g->n; j += panel) {
        NAME(job) P = J;
        width = g->n - j < panel ? g->n - j : panel;
        P.n = width;
        P.ldb = width > VL ? width : VL;
        NAME(pack)(buf, P.ldb, (const REAL *)g->b + j * g->ldb, 1, g->ldb, g->k, width);
        P.b = buf;
        P.c += j;
        if (P.z)
            P.z += j;
        if (P.mask)
            P.mask += j;
        if (P.bias)
            P.bias += j;
        NAME(tiles)(&P);
    }
    return 1;
}

#undef PACK
#undef ROWS
#undef MR
