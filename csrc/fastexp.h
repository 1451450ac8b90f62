/* e^x for float, free of branches and calls so that the loops that use it
 * (softmax, sigmoid, the fused losses) are vectorised by the compiler; libm's
 * expf is a call per element.
 *
 *   e^x = 2^n · e^r,   n = round(x / ln 2),   r = x − n·ln 2 ∈ [−ln2/2, ln2/2]
 *
 * n is rounded by adding 1.5·2^23, which leaves round(x·log2 e) in the low
 * bits of the sum; ln 2 is split in two (Cody and Waite) so that n·ln2_hi is
 * exact; e^r is its Taylor series to r^7, whose remainder (|r|^8/8! < 6e-9)
 * is below float's half-ulp; 2^n is built from its exponent bits.  Measured
 * against double-precision exp at 80 million points of [−87.3, 88.3]: at most
 * 1.22 ulp (tests/test_kernels.py holds it to 2 ulp).  Below −87.34 the result is
 * 0 (the true value is under FLT_MIN); above 88.7228, the largest float whose
 * e^x is below FLT_MAX, it is +inf; NaN stays NaN.  At the top n reaches 128,
 * and 2^128 is no float: there the result is p · 2^127 · 2.  (The exp
 * activation takes e^z of any z; everywhere else the core takes e^x of x ≤ 0.)
 */
#ifndef BACKPROP_FASTEXP_H
#define BACKPROP_FASTEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bp_expf(float x)
{
    const float lowest = -87.33654475f;   /* ln FLT_MIN: 2^−126 */
    const float highest = 88.72283173f;   /* just below ln FLT_MAX ≈ 88.7228391 */
    const float shifter = 12582912.0f;    /* 1.5 · 2^23 */
    float xc = x < lowest ? lowest : (x > highest ? highest : x);
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    int32_t k = bits - 0x4B400000;                    /* n, in −126 … 128 */
    int32_t top = k > 127;                            /* 2^128: 2^127, then · 2 */
    bits = (k - top + 127) << 23;                     /* 2^(n − top) */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float r = xc - n * 0.693359375f;                  /* ln2_hi: 9 bits, n·ln2_hi exact */
    r = r - n * -2.12194440e-4f;                      /* ln2_lo */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    float y = p * scale * (float)(1 + top);
    return x < lowest ? 0.0f : (x > highest ? INFINITY : y);
}

#endif
