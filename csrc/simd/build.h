/* One build of the kernels, for the instruction set ISA (a bare word) that
 * kernels.c sets around it: every kernel source, once in float and once in
 * double (IREAL: the integer type of the same width; REAL_BITS its bits;
 * EXP: e^x of REAL), after the vectors of lanes.h, and
 * the finiteness test of ../finite.h. */
#define REAL float
#define IREAL int             /* the integer of REAL's width */
#define SQRT sqrtf
#define EXP bp_expf
#define REAL_BITS 32
#define NAME(f) EXPAND3(f, f32, ISA)
#include "lanes.h"
#include "update.h"
#include "gemm.h"
#include "softmax.h"
#include "rows.h"
BP_ALL_FINITE(NAME(all_finite), REAL, BP_FINITE_BITS_f32, BP_FINITE_MASK_f32)
#undef VL
#undef MASKV
#undef VEC
#undef NAME
#undef REAL_BITS
#undef EXP
#undef SQRT
#undef IREAL
#undef REAL

#define REAL double
#define IREAL long long
#define SQRT sqrt
#define EXP exp
#define REAL_BITS 64
#define NAME(f) EXPAND3(f, f64, ISA)
#include "lanes.h"
#include "update.h"
#include "gemm.h"
#include "softmax.h"
#include "rows.h"
BP_ALL_FINITE(NAME(all_finite), REAL, BP_FINITE_BITS_f64, BP_FINITE_MASK_f64)
#undef VL
#undef MASKV
#undef VEC
#undef NAME
#undef REAL_BITS
#undef EXP
#undef SQRT
#undef IREAL
#undef REAL
