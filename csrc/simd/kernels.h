/* The core's kernels that are compiled once per instruction set, and the
 * choice among those builds, made once when a module of the core is imported.
 *
 * kernels.c compiles each kernel for the portable x86-64 baseline (SSE2), for
 * AVX2 with FMA and for AVX-512, into the same module; bp_choose_kernels
 * picks the widest that the CPU has (CPUID), unless BACKPROP_KERNELS names
 * one: `portable` forces the baseline, for tests and bug reports.  Every
 * build computes the same formulas; they differ in rounding only (FMA fuses
 * a·b + c into one rounding), so a given machine and thread count trains
 * bit for bit the same each time.
 */
#ifndef BACKPROP_SIMD_KERNELS_H
#define BACKPROP_SIMD_KERNELS_H

#include <stddef.h>

enum { BP_ISA_PORTABLE, BP_ISA_AVX2, BP_ISA_AVX512, BP_N_ISA };

/* The optimizer rules of update.h, and their constants (doubles, rounded to
 * the element type once per call). */
enum {
    BP_RULE_SGD, BP_RULE_MOMENTUM, BP_RULE_NESTEROV,
    BP_RULE_ADAM, BP_RULE_RMSPROP, BP_RULE_ADAGRAD,
};

typedef struct {
    double lr;          /* η */
    double l2;          /* coupled L2: ĝ = (g + l2·w) · scale */
    double keep;        /* decoupled decay: w ← w · keep first (1 − η·wd) */
    double scale;       /* gradient clipping's factor (1: none) */
    double eps;         /* added to the root */
    double mu;          /* momentum */
    double b1, b2;      /* Adam's β₁, β₂ */
    double a1, a2;      /* 1 − β₁, 1 − β₂ (taken in double) */
    double c1, c2;      /* Adam's η/(1 − β₁ᵗ) and 1/(1 − β₂ᵗ) */
    double rho, a_rho;  /* RMSProp's ρ and 1 − ρ */
    int clear;          /* set each gradient to 0 once read */
} bp_rule;

typedef void (*bp_update_f32_fn)(int rule, float *w, float *g, float *s1,
                                 float *s2, ptrdiff_t n, const bp_rule *k);
typedef void (*bp_update_f64_fn)(int rule, double *w, double *g, double *s1,
                                 double *s2, ptrdiff_t n, const bp_rule *k);

/* A small matrix product with its epilogue (gemm.h), row-major:
 *   NN  C (m, n) = A (m, k) @ B (k, n)
 *   TN  C (m, n) = Aᵀ @ B,  A stored (k, m)
 *   NT  C (m, n) = A @ Bᵀ,  B stored (n, k)
 * then C ← alpha · product + beta · C (beta 0: C is not read) ; + bias (n,)
 * unless NULL ; z (m, n) ← that unless NULL ; max(·, 0) if relu ;
 * ⊙ [mask > 0] unless mask is NULL.  C, z and mask have row stride ldc; lda
 * and ldb are the row strides of A and B as stored.  The pointers are of
 * the function's element type. */
enum { BP_GEMM_NN, BP_GEMM_TN, BP_GEMM_NT };

typedef struct {
    int kind;                   /* BP_GEMM_* */
    ptrdiff_t m, n, k;
    const void *a;
    ptrdiff_t lda;
    const void *b;
    ptrdiff_t ldb;
    void *c;
    ptrdiff_t ldc;
    double alpha, beta;
    const void *bias;
    void *z;
    const void *mask;
    int relu;
} bp_gemm;

/* Returns 1 when done, 0 when the shape is beyond the kernel's buffer
 * (nothing written: the caller takes BLAS). */
typedef int (*bp_gemm_fn)(const bp_gemm *g);

/* Softmax in place of a (rows, cols), and the softmax cross-entropy of
 * logits a against targets y with weights w or NULL: a ← softmax, delta ←
 * w (a − y)/n, returns the rows' mean loss (softmax.h). */
typedef void (*bp_softmax_f32_fn)(float *a, ptrdiff_t rows, ptrdiff_t cols);
typedef void (*bp_softmax_f64_fn)(double *a, ptrdiff_t rows, ptrdiff_t cols);
typedef double (*bp_softmax_ce_f32_fn)(float *a, float *delta, const float *y,
                                       const float *w, ptrdiff_t rows, ptrdiff_t cols,
                                       ptrdiff_t n);
typedef double (*bp_softmax_ce_f64_fn)(double *a, double *delta, const double *y,
                                       const double *w, ptrdiff_t rows, ptrdiff_t cols,
                                       ptrdiff_t n);

/* The sums down the columns of delta (rows, n), row stride ld, into db (n,):
 * a bias gradient; the argmax of each row of a (rows, cols) into labels, and
 * the count of rows whose argmax in a is that in y (rows.h). */
typedef void (*bp_col_sums_f32_fn)(float *db, const float *delta, ptrdiff_t rows,
                                   ptrdiff_t n, ptrdiff_t ld);
typedef void (*bp_col_sums_f64_fn)(double *db, const double *delta, ptrdiff_t rows,
                                   ptrdiff_t n, ptrdiff_t ld);
typedef void (*bp_argmax_rows_f32_fn)(long long *labels, const float *a, ptrdiff_t rows,
                                      ptrdiff_t cols);
typedef void (*bp_argmax_rows_f64_fn)(long long *labels, const double *a, ptrdiff_t rows,
                                      ptrdiff_t cols);
typedef ptrdiff_t (*bp_argmax_agree_f32_fn)(const float *a, const float *y, ptrdiff_t rows,
                                            ptrdiff_t cols);
typedef ptrdiff_t (*bp_argmax_agree_f64_fn)(const double *a, const double *y, ptrdiff_t rows,
                                            ptrdiff_t cols);

/* One build of the kernels. */
typedef struct {
    const char *name;           /* "portable", "avx2", "avx512" */
    bp_update_f32_fn update_f32;
    bp_update_f64_fn update_f64;
    bp_gemm_fn gemm_f32;
    bp_gemm_fn gemm_f64;
    bp_softmax_f32_fn softmax_f32;
    bp_softmax_f64_fn softmax_f64;
    bp_softmax_ce_f32_fn softmax_ce_f32;
    bp_softmax_ce_f64_fn softmax_ce_f64;
    int (*all_finite_f32)(const float *x, ptrdiff_t n);   /* no NaN, no ±inf */
    int (*all_finite_f64)(const double *x, ptrdiff_t n);  /* (../finite.h) */
    bp_col_sums_f32_fn col_sums_f32;
    bp_col_sums_f64_fn col_sums_f64;
    bp_argmax_rows_f32_fn argmax_rows_f32;
    bp_argmax_rows_f64_fn argmax_rows_f64;
    bp_argmax_agree_f32_fn argmax_agree_f32;
    bp_argmax_agree_f64_fn argmax_agree_f64;
    int vbytes;                 /* the width of its vectors */
    /* a product of kind BP_GEMM_* of at most small[0][kind] (float32) or
     * small[1][kind] (float64) multiply-adds m·n·k runs in gemm_f32,
     * gemm_f64 rather than BLAS (kernels.c: the measurement behind them) */
    double small[2][3];
    /* … or, when the product runs on one thread whatever takes it (a part of
     * a cut step, beside the other part on the other core), of at most
     * alone[0][kind], alone[1][kind] where those are larger (0: as small):
     * small stops at 2^20 only because larger products may go to BLAS's
     * threads */
    double alone[2][3];
    /* … and whose result has at least narrow[0] (float32) or narrow[1]
     * (float64) columns: a narrower C fills its vectors only in part (a
     * padded copy, or a last vector overlapping the one before) */
    ptrdiff_t narrow[2];
} bp_kernel_set;

#define BP_HIDDEN __attribute__((visibility("hidden")))

/* A pass cut into `chunks` independent pieces: task(arg, c, chunks) does
 * piece c.  bp_team_run (team.c) runs every piece once, on the calling thread
 * and up to threads − 1 others, and returns when all are done; the pieces'
 * boundaries are the task's, so the result does not depend on which thread
 * took which piece. */
typedef void (*bp_task)(void *arg, int chunk, int chunks);
BP_HIDDEN void bp_team_run(bp_task task, void *arg, int chunks, int threads);
/* Hold the team for a stretch of runs microseconds apart (an epoch of split
 * steps): until bp_team_release, threads − 1 workers spin between this
 * thread's runs rather than sleep, and each bp_team_run of this thread with
 * threads > 1 runs on them all.  Returns the threads that then run (0: no
 * hold, when threads < 2, this thread holds already or no worker could
 * start); waits while another thread's run or hold is on. */
BP_HIDDEN int bp_team_hold(int threads);
BP_HIDDEN void bp_team_release(void);

/* The optimizer update of w (n,) in the chosen build (update.h), on up to
 * `threads` threads for a long w; each parameter's result is the same
 * whatever the count. */
BP_HIDDEN void bp_update_f32(int rule, float *w, float *g, float *s1, float *s2,
                             ptrdiff_t n, const bp_rule *k, int threads);
BP_HIDDEN void bp_update_f64(int rule, double *w, double *g, double *s1, double *s2,
                             ptrdiff_t n, const bp_rule *k, int threads);

/* The chosen build (the portable one until bp_choose_kernels runs). */
BP_HIDDEN extern const bp_kernel_set *bp_kernels;
/* Every build, by BP_ISA_*. */
BP_HIDDEN extern const bp_kernel_set bp_kernel_sets[BP_N_ISA];

/* Whether a product of this kind and shape takes the chosen build's small
 * kernel (gemm.h) rather than BLAS: by the build's bounds (`alone`: those of
 * a product on one thread in any case), unless bp_small_gemm_mode says
 * otherwise. */
BP_HIDDEN int bp_small_gemm(int f32, int kind, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                            int alone);
/* Whether such a product runs in the small kernel indeed: bp_small_gemm,
 * and the kernel's buffer holds what it must copy (else it takes BLAS). */
BP_HIDDEN int bp_small_gemm_takes(int f32, int kind, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                  int alone);
/* BP_SMALL_GEMM_RULE (the default), _NEVER (BLAS for every product, for
 * comparison) or _ALWAYS (the kernel for every product, for tests). */
enum { BP_SMALL_GEMM_RULE, BP_SMALL_GEMM_NEVER, BP_SMALL_GEMM_ALWAYS };
BP_HIDDEN extern int bp_small_gemm_mode;

/* Whether this CPU (and its operating system) runs build `isa`. */
BP_HIDDEN int bp_cpu_runs(int isa);
/* Choose the build that `request` names ("portable", "avx2", "avx512"; NULL,
 * "" or "auto": the widest the CPU runs).  Returns the BP_ISA_* chosen, or
 * −1 for a name it does not know, −2 for a build this CPU cannot run (the
 * choice then stays as it was). */
BP_HIDDEN int bp_choose_kernels(const char *request);

#endif
