/* The optimizers' update rules over one stretch of the flat parameters,
 * w[0 … n): one loop per rule, for the element type REAL.  Included by
 * kernels.c once per element type and instruction set, with NAME(f) giving
 * each function its name there; the loops are plain C, which the compiler
 * vectorises for the instruction set it compiles them for (the restrict
 * pointers tell it that the four arrays do not overlap).  Per parameter, with
 * ĝ = (g + l2·w) · scale and w first multiplied by keep = 1 − η·wd:
 *
 *   sgd       w ← w − ηĝ                                   (no state)
 *   momentum  v ← μv + ĝ ;  w ← w − ηv
 *   nesterov  v ← μv + ĝ ;  w ← w − η(ĝ + μv)
 *   adam      m ← β₁m + (1 − β₁)ĝ ;  v ← β₂v + (1 − β₂)ĝ² ;
 *             w ← w − c₁m / (√(c₂v) + ε),  c₁ = η/(1 − β₁ᵗ), c₂ = 1/(1 − β₂ᵗ)
 *   rmsprop   s ← ρs + (1 − ρ)ĝ² ;  w ← w − ηĝ / (√s + ε)
 *   adagrad   s ← s + ĝ² ;          w ← w − ηĝ / (√s + ε)
 *
 * The constants arrive as doubles (bp_rule) and are rounded to REAL once,
 * before the loop; kernels.pxd (optimizer_update) says how they are chosen.
 * With k->clear, each gradient is set to 0 once read, in the same pass (so
 * that the next step's products can add into it: dense_backward's
 * `accumulate`), a store the loop hides behind its arithmetic.
 */

/* ĝ of parameter i, and its gradient set to 0 when `clear`: the first
 * statement of every rule's loop. */
static inline __attribute__((always_inline)) REAL
NAME(take)(const REAL *restrict w, REAL *restrict g, ptrdiff_t i, REAL l2, REAL scale,
           int clear)
{
    const REAL gi = (g[i] + l2 * w[i]) * scale;
    if (clear)
        g[i] = 0;
    return gi;
}

static void NAME(update)(int rule, REAL *restrict w, REAL *restrict g,
                         REAL *restrict s1, REAL *restrict s2, ptrdiff_t n,
                         const bp_rule *k)
{
    const REAL lr = (REAL)k->lr, l2 = (REAL)k->l2, keep = (REAL)k->keep;
    const REAL scale = (REAL)k->scale, eps = (REAL)k->eps, mu = (REAL)k->mu;
    const REAL b1 = (REAL)k->b1, b2 = (REAL)k->b2, a1 = (REAL)k->a1, a2 = (REAL)k->a2;
    const int clear = k->clear;
    const REAL c1 = (REAL)k->c1, c2 = (REAL)k->c2, rho = (REAL)k->rho, a_rho = (REAL)k->a_rho;
    ptrdiff_t i;
    switch (rule) {
    case BP_RULE_SGD:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            w[i] = w[i] * keep - lr * gi;
        }
        break;
    case BP_RULE_MOMENTUM:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            s1[i] = mu * s1[i] + gi;
            w[i] = w[i] * keep - lr * s1[i];
        }
        break;
    case BP_RULE_NESTEROV:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            s1[i] = mu * s1[i] + gi;
            w[i] = w[i] * keep - lr * (gi + mu * s1[i]);
        }
        break;
    case BP_RULE_ADAM:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            s1[i] = b1 * s1[i] + a1 * gi;
            s2[i] = b2 * s2[i] + a2 * gi * gi;
            w[i] = w[i] * keep - c1 * s1[i] / (SQRT(s2[i] * c2) + eps);
        }
        break;
    case BP_RULE_RMSPROP:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            s1[i] = rho * s1[i] + a_rho * gi * gi;
            w[i] = w[i] * keep - lr * gi / (SQRT(s1[i]) + eps);
        }
        break;
    case BP_RULE_ADAGRAD:
        for (i = 0; i < n; i++) {
            const REAL gi = NAME(take)(w, g, i, l2, scale, clear);
            s1[i] = s1[i] + gi * gi;
            w[i] = w[i] * keep - lr * gi / (SQRT(s1[i]) + eps);
        }
        break;
    }
}
