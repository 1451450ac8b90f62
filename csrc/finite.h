/* Is every value finite?  A float is NaN or ±inf exactly when all its
 * exponent bits are set; OR-ing that test over the array is an integer
 * reduction, which the compiler vectorises (a loop of isfinite() with an
 * early exit is not), so checking a large input costs a fraction of a pass
 * of arithmetic over it.  One definition serves float and double.
 */
#ifndef BACKPROP_FINITE_H
#define BACKPROP_FINITE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BP_ALL_FINITE(name, real, bits_t, exponent)            \
    static inline int name(const real* x, ptrdiff_t n)          \
    {                                                           \
        bits_t bad = 0;                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                     \
            bits_t bits;                                        \
            memcpy(&bits, x + i, sizeof bits);                  \
            bad |= (bits & (exponent)) == (exponent);           \
        }                                                       \
        return !bad;                                            \
    }

BP_ALL_FINITE(bp_all_finite_f32, float, uint32_t, 0x7F800000u)
BP_ALL_FINITE(bp_all_finite_f64, double, uint64_t, 0x7FF0000000000000ull)

#endif
