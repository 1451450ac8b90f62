/* The per-instruction-set builds of the kernels in this folder (see
 * kernels.h): each kernel source is included once per element type and
 * instruction set, inside a `#pragma GCC target` block, with NAME giving its
 * functions distinct names; the tables at the end collect them. */
#include <string.h>
#include <math.h>
#include <immintrin.h>   /* (lanes.h: the masked loads and stores) */

#include "kernels.h"
#include "../fastexp.h"
#include "../finite.h"

#define JOIN3(a, b, c) a##_##b##_##c
#define EXPAND3(a, b, c) JOIN3(a, b, c)


/* portable: the x86-64 baseline the rest of the core is compiled for */
#define ISA portable
#define VBYTES 16
#include "build.h"
#undef VBYTES
#undef ISA

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA avx2
#define VBYTES 32
#include "build.h"
#undef VBYTES
#undef ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")
#define ISA avx512
#define VBYTES 64
#include "build.h"
#undef VBYTES
#undef ISA
#pragma GCC pop_options

#define KERNEL_SET(isa, vbytes, ...) \
    { #isa, update_f32_##isa, update_f64_##isa, gemm_f32_##isa, gemm_f64_##isa, \
      softmax_f32_##isa, softmax_f64_##isa, softmax_ce_f32_##isa, softmax_ce_f64_##isa, \
      all_finite_f32_##isa, all_finite_f64_##isa, col_sums_f32_##isa, col_sums_f64_##isa, \
      argmax_rows_f32_##isa, argmax_rows_f64_##isa, argmax_agree_f32_##isa, \
      argmax_agree_f64_##isa, \
      vbytes, __VA_ARGS__ }

/* Where the small products (gemm.h) beat OpenBLAS: products of at most this
 * many multiply-adds m·n·k, per build, element type and kind (A @ B, Aᵀ @ B,
 * A @ Bᵀ), and of at least this many columns of C (float32, float64), as
 * `python -m bench.kernels` measured them on one thread over m, n, k ∈ {8 …
 * 512} (docs/performance.md, Small products: the tables, and the machines).
 * Each bound is where the median ratio of the shapes around it crosses 1.
 * `small` stops at 2^20: the core hands products past 2·10^6 multiply-adds
 * to BLAS's threads (threads.pxd), which a kernel on one thread does not
 * beat.  `alone`, for a product on one thread whatever takes it (a cut
 * step's part), goes further (0: no further): to 2^24, where the median
 * ratio on Zen 5 reaches 0.93 (float32) and 1.0 (float64) on one thread;
 * past it, with both cores busy with their parts, the kernels, which do not
 * pack their operands for the caches, lost to OpenBLAS's packed ones (W4's
 * cut fit: 10.4–15.6 ms a step against 6.8–8.3 with BLAS's parts).  AVX2 and portable:
 * an AMD EPYC with AVX2 (Zen 3), against OpenBLAS's Haswell kernels; the
 * portable build loses to OpenBLAS, which takes AVX2 itself, at all but the
 * tiniest products.  AVX-512: an AMD EPYC with AVX-512 (Zen 4), against
 * OpenBLAS's SkylakeX kernels, whose small-matrix paths are faster: the
 * kernels keep A @ B (0.68–0.88 of BLAS's time up to 512³, the sweep's
 * largest) and A @ Bᵀ of results at least 16 columns wide, and BLAS takes
 * every Aᵀ @ B (weight gradients, 1.3–1.8× slower in the kernels below 2^19)
 * and every narrower result (10 columns: 1.2–2.4× slower). */
const bp_kernel_set bp_kernel_sets[BP_N_ISA] = {
    /*                   float32: NN    TN    NT       float64: NN    TN   NT */
    KERNEL_SET(portable, 16, {{4096, 1024, 512}, {512, 0, 0}}, {{0}}, {0, 0}),
    KERNEL_SET(avx2, 32, {{1 << 20, 1 << 20, 1 << 19}, {1 << 20, 1 << 19, 1 << 13}}, {{0}},
               {0, 0}),
    KERNEL_SET(avx512, 64, {{1 << 20, 0, 1 << 20}, {1 << 20, 0, 1 << 20}},
               {{1 << 24, 0, 1 << 20}, {1 << 24, 0, 1 << 24}}, {16, 16}),
};

int bp_small_gemm_mode = BP_SMALL_GEMM_RULE;

int bp_small_gemm(int f32, int kind, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int alone)
{
    const int t = f32 ? 0 : 1;
    double bound = bp_kernels->small[t][kind];
    if (bp_small_gemm_mode != BP_SMALL_GEMM_RULE)
        return bp_small_gemm_mode == BP_SMALL_GEMM_ALWAYS;
    if (alone && bp_kernels->alone[t][kind] > bound)
        bound = bp_kernels->alone[t][kind];
    return (double)m * n * k <= bound && n >= bp_kernels->narrow[t];
}

int bp_small_gemm_takes(int f32, int kind, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int alone)
{
    /* (gemm.h: B is copied into its 32 kB buffer, a vector of columns at
     * least, when read transposed or narrower than a vector) */
    const ptrdiff_t lanes = bp_kernels->vbytes / (f32 ? 4 : 8);
    const int copied = kind == BP_GEMM_NT || n < lanes;
    return bp_small_gemm(f32, kind, m, n, k, alone)
        && (!copied || k <= 32768 / bp_kernels->vbytes);
}

const bp_kernel_set *bp_kernels = &bp_kernel_sets[BP_ISA_PORTABLE];

int bp_cpu_runs(int isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case BP_ISA_PORTABLE:
        return 1;
    case BP_ISA_AVX2:   /* the OS saves the YMM registers when CPUID says AVX */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BP_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
    }
    return 0;
}

int bp_choose_kernels(const char *request)
{
    int isa;
    if (request == NULL || request[0] == '\0' || strcmp(request, "auto") == 0) {
        for (isa = BP_N_ISA - 1; !bp_cpu_runs(isa); isa--)
            ;
    } else {
        for (isa = 0; isa < BP_N_ISA; isa++)
            if (strcmp(request, bp_kernel_sets[isa].name) == 0)
                break;
        if (isa == BP_N_ISA)
            return -1;
        if (!bp_cpu_runs(isa))
            return -2;
    }
    bp_kernels = &bp_kernel_sets[isa];
    return isa;
}

/* ---- the optimizer update, cut into chunks for bp_team_run ---- */

/* Chunks of 2^16 parameters (256 kB of float32), a multiple of any vector
 * width from the start of w; a pass shorter than two chunks runs alone. */
#define UPDATE_CHUNK ((ptrdiff_t)1 << 16)

typedef struct {
    int rule, f32;
    void *w, *s1, *s2;
    void *g;
    ptrdiff_t n;
    const bp_rule *k;
} update_job;

static void update_chunk(void *arg, int c, int chunks)
{
    const update_job *j = arg;
    ptrdiff_t lo = c * UPDATE_CHUNK, hi = c + 1 == chunks ? j->n : lo + UPDATE_CHUNK;
    if (j->f32)
        bp_kernels->update_f32(j->rule, (float *)j->w + lo, (float *)j->g + lo,
                               j->s1 ? (float *)j->s1 + lo : NULL,
                               j->s2 ? (float *)j->s2 + lo : NULL, hi - lo, j->k);
    else
        bp_kernels->update_f64(j->rule, (double *)j->w + lo, (double *)j->g + lo,
                               j->s1 ? (double *)j->s1 + lo : NULL,
                               j->s2 ? (double *)j->s2 + lo : NULL, hi - lo, j->k);
}

static void update(int f32, int rule, void *w, void *g, void *s1, void *s2,
                   ptrdiff_t n, const bp_rule *k, int threads)
{
    update_job job = {rule, f32, w, s1, s2, g, n, k};
    ptrdiff_t chunks = n / UPDATE_CHUNK;
    if (chunks < 2 || threads < 2) {
        update_chunk(&job, 0, 1);
        return;
    }
    bp_team_run(update_chunk, &job, chunks > 1 << 20 ? 1 << 20 : (int)chunks, threads);
}

void bp_update_f32(int rule, float *w, float *g, float *s1, float *s2,
                   ptrdiff_t n, const bp_rule *k, int threads)
{
    update(1, rule, w, g, s1, s2, n, k, threads);
}

void bp_update_f64(int rule, double *w, double *g, double *s1, double *s2,
                   ptrdiff_t n, const bp_rule *k, int threads)
{
    update(0, rule, w, g, s1, s2, n, k, threads);
}
