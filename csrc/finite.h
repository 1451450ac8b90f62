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

/* (csrc/simd/build.h makes one of each type per instruction set) */
#define BP_FINITE_BITS_f32 uint32_t
#define BP_FINITE_MASK_f32 0x7F800000u
#define BP_FINITE_BITS_f64 uint64_t
#define BP_FINITE_MASK_f64 0x7FF0000000000000ull

#endif
