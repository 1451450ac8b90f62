/* Is every value finite?  A float is NaN or ±inf exactly when all its
 * exponent bits are set; OR-ing that test over the array is an integer
 * reduction, which the compiler vectorises (a loop of isfinite() with an
 * early exit is not), so checking a large input costs a fraction of a pass
 * of arithmetic over it.
 */
#ifndef BACKPROP_FINITE_H
#define BACKPROP_FINITE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int bp_all_finite_f32(const float* x, ptrdiff_t n)
{
    uint32_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
    }
    return !bad;
}

static inline int bp_all_finite_f64(const double* x, ptrdiff_t n)
{
    uint64_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (bits & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
    }
    return !bad;
}

#endif
