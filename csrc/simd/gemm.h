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
 * panels, a VL × VL block at a time in registers.  Every element of C is the same sum in the same order wherever its
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

/* The transpose of a VL × VL block in registers: the rows v[0 … VL) become
 * its columns.  log₂ VL stages; stage h (VL/2, …, 2, 1) pairs the rows r
 * and r + h (r without the bit h) and swaps the h × h blocks between them,
 * a two-vector shuffle a row (vpermt2ps under AVX-512), so that a block
 * costs about a shuffle per row and stage rather than a load and a store
 * per element. */
#define LANES (VBYTES * 8 / REAL_BITS)
#if LANES == 16
#define LO_8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO_4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO_2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO_1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#elif LANES == 8
#define LO_4 0, 1, 2, 3, 8, 9, 10, 11
#define HI_4 4, 5, 6, 7, 12, 13, 14, 15
#define LO_2 0, 1, 8, 9, 4, 5, 12, 13
#define HI_2 2, 3, 10, 11, 6, 7, 14, 15
#define LO_1 0, 8, 2, 10, 4, 12, 6, 14
#define HI_1 1, 9, 3, 11, 5, 13, 7, 15
#elif LANES == 4
#define LO_2 0, 1, 4, 5
#define HI_2 2, 3, 6, 7
#define LO_1 0, 4, 2, 6
#define HI_1 1, 5, 3, 7
#elif LANES == 2
#define LO_1 0, 2
#define HI_1 1, 3
#endif
#define STAGE(h)                                                              \
    for (r = 0; r < VL; r++)                                                  \
        if (!(r & (h))) {                                                     \
            const VEC a = v[r], b = v[r + (h)];                               \
            v[r] = __builtin_shufflevector(a, b, LO_##h);                     \
            v[r + (h)] = __builtin_shufflevector(a, b, HI_##h);               \
        }

static inline void NAME(transpose)(VEC *v)
{
    int r;
#if LANES >= 16
    STAGE(8)
#endif
#if LANES >= 8
    STAGE(4)
#endif
#if LANES >= 4
    STAGE(2)
#endif
    STAGE(1)
}
#undef STAGE
#undef LO_8
#undef HI_8
#undef LO_4
#undef HI_4
#undef LO_2
#undef HI_2
#undef LO_1
#undef HI_1
#undef LANES

/* dst (k, np) ← src (k, n) read as src[p·sp + j·sj], columns n … np of dst
 * 0: B copied (sj = 1) or transposed (sp = 1) into the buffer.  Transposed,
 * the whole VL × VL blocks go through registers (transpose), the edges
 * element by element. */
static void NAME(pack)(REAL *dst, ptrdiff_t np, const REAL *src, ptrdiff_t sp,
                       ptrdiff_t sj, ptrdiff_t k, ptrdiff_t n)
{
    ptrdiff_t p, j, p0 = 0, j0 = 0;
    if (sp == 1 && sj != 1) {
        VEC v[VL];
        int t;
        for (j0 = 0; j0 + VL <= n; j0 += VL)
            for (p0 = 0; p0 + VL <= k; p0 += VL) {
                for (t = 0; t < VL; t++)
                    v[t] = NAME(load)(src + p0 + (j0 + t) * sj);
                NAME(transpose)(v);
                for (t = 0; t < VL; t++)
                    NAME(store)(dst + (p0 + t) * np + j0, v[t]);
            }
        p0 = k - k % VL;    /* the blocks covered p < p0 for j < j0 */
    }
    for (p = 0; p < k; p++) {
        for (j = p < p0 ? j0 : 0; j < n; j++)
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
