/* One build of the kernels, for the instruction set ISA (a bare word) that
 * kernels.c sets around it: every kernel source, once in float and once in
 * double (IREAL: the integer type of the same width). */
#define REAL float
#define IREAL int             /* the integer of REAL's width */
#define SQRT sqrtf
#define NAME(f) EXPAND3(f, f32, ISA)
#include "update.h"
#include "gemm.h"
#undef NAME
#undef SQRT
#undef IREAL
#undef REAL

#define REAL double
#define IREAL long long
#define SQRT sqrt
#define NAME(f) EXPAND3(f, f64, ISA)
#include "update.h"
#include "gemm.h"
#undef NAME
#undef SQRT
#undef IREAL
#undef REAL
