/* The vectors of one build, for the element type REAL: VEC, VBYTES wide,
 * holds VL elements; MASKV is the integer vector of the same lanes (each 0
 * or −1).  Included by build.h first, before the kernels that use them.
 *
 * A row shorter than a vector (the 10 logits of a classifier, a layer of 10
 * units) is read and written through its first lanes alone: load_part reads
 * the lanes [0, n) and fills the rest, store_part writes the lanes [lo, hi)
 * and leaves the others in memory untouched.  AVX-512 and AVX2 do each in
 * one masked instruction, which reads or writes nothing outside the lanes
 * it keeps (so no read past the end of an array); the portable build goes
 * lane by lane.  A masked store holds up any later read of the bytes around
 * it until it reaches the cache (on an AMD Zen 5, a softmax written a row at
 * a time this way ran 3× slower than its scalar loops), so the kernels take
 * it only for a block's last columns, not row after row of one pass.
 */

typedef REAL NAME(vec) __attribute__((vector_size(VBYTES)));
typedef IREAL NAME(maskv) __attribute__((vector_size(VBYTES)));
#define VEC NAME(vec)
#define MASKV NAME(maskv)
#define VL ((int)(VBYTES / sizeof(REAL)))  /* elements per vector */

/* The vector at p, whole. */
static inline VEC NAME(load)(const REAL *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void NAME(store)(REAL *p, VEC v)
{
    memcpy(p, &v, sizeof v);
}

/* The lanes lo ≤ t < hi, as a vector of −1 there and 0 elsewhere. */
static inline MASKV NAME(lanes)(int lo, int hi)
{
    MASKV at;
    int t;
    for (t = 0; t < VL; t++)
        at[t] = t;
    return (at >= (MASKV){0} + lo) & (at < (MASKV){0} + hi);
}

/* The lanes [0, n) of the vector at p (0 ≤ n ≤ VL), the rest `fill`;
 * nothing past p + n is read. */
static inline VEC NAME(load_part)(const REAL *p, int n, REAL fill)
{
#if VBYTES == 64 && REAL_BITS == 32
    return (VEC)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1), p);
#elif VBYTES == 64
    return (VEC)_mm512_mask_loadu_pd(_mm512_set1_pd(fill), (__mmask8)((1u << n) - 1), p);
#elif VBYTES == 32
    const MASKV keep = NAME(lanes)(0, n);
    VEC v;
#if REAL_BITS == 32
    v = (VEC)_mm256_maskload_ps(p, (__m256i)keep);
#else
    v = (VEC)_mm256_maskload_pd(p, (__m256i)keep);
#endif
    return (VEC)(((MASKV)v & keep) | ((MASKV)((VEC){0} + fill) & ~keep));
#else
    VEC v = (VEC){0} + fill;
    int t;
    for (t = 0; t < VL; t++)    /* (not t < n: GCC would call memcpy) */
        if (t < n)
            v[t] = p[t];
    return v;
#endif
}

/* p[t] ← v[t] for the lanes lo ≤ t < hi (0 ≤ lo ≤ hi ≤ VL); nothing else
 * at p is read or written. */
static inline void NAME(store_part)(REAL *p, VEC v, int lo, int hi)
{
#if VBYTES == 64 && REAL_BITS == 32
    _mm512_mask_storeu_ps(p, (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)), (__m512)v);
#elif VBYTES == 64
    _mm512_mask_storeu_pd(p, (__mmask8)(((1u << hi) - 1) & ~((1u << lo) - 1)), (__m512d)v);
#elif VBYTES == 32 && REAL_BITS == 32
    _mm256_maskstore_ps(p, (__m256i)NAME(lanes)(lo, hi), (__m256)v);
#elif VBYTES == 32
    _mm256_maskstore_pd(p, (__m256i)NAME(lanes)(lo, hi), (__m256d)v);
#else
    int t;
    for (t = 0; t < VL; t++)
        if (t >= lo && t < hi)
            p[t] = v[t];
#endif
}

/* Lane by lane the larger of a and b (b where b > a, so a where either is
 * NaN): C's `b > a ? b : a`, which C's vectors do not take. */
static inline VEC NAME(vmax)(VEC a, VEC b)
{
    const MASKV gt = b > a;
    return (VEC)(((MASKV)b & gt) | ((MASKV)a & ~gt));
}

/* The largest of v's lanes, halves folded onto each other (log₂ VL steps,
 * not a chain of VL − 1): NaN when a lane is NaN, in lanes where it meets
 * one, so a row with a NaN has a NaN or another of its values. */
static inline REAL NAME(hmax)(VEC v)
{
#if VBYTES == 64 && REAL_BITS == 32
    return _mm512_reduce_max_ps((__m512)v);
#elif VBYTES == 64
    return _mm512_reduce_max_pd((__m512d)v);
#elif VBYTES == 32 && REAL_BITS == 32
    __m128 h = _mm_max_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
#elif VBYTES == 32
    __m128d h = _mm_max_pd(_mm256_castpd256_pd128((__m256d)v), _mm256_extractf128_pd((__m256d)v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(h, _mm_unpackhi_pd(h, h)));
#else
    REAL m = v[0];
    int t;
    for (t = 1; t < VL; t++)
        m = v[t] > m ? v[t] : m;
    return m;
#endif
}

/* The first lane where a is b, of the lanes [0, n); −1 if none is. */
static inline int NAME(first_equal)(VEC a, VEC b, int n)
{
    unsigned bits;
#if VBYTES == 64 && REAL_BITS == 32
    bits = _mm512_cmpeq_ps_mask((__m512)a, (__m512)b);
#elif VBYTES == 64
    bits = _mm512_cmpeq_pd_mask((__m512d)a, (__m512d)b);
#elif VBYTES == 32 && REAL_BITS == 32
    bits = (unsigned)_mm256_movemask_ps((__m256)(a == b));
#elif VBYTES == 32
    bits = (unsigned)_mm256_movemask_pd((__m256d)(a == b));
#elif REAL_BITS == 32
    bits = (unsigned)_mm_movemask_ps((__m128)(a == b));
#else
    bits = (unsigned)_mm_movemask_pd((__m128d)(a == b));
#endif
    bits &= (1u << n) - 1;
    return bits ? __builtin_ctz(bits) : -1;
}
