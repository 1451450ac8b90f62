# The build of the kernels in csrc/simd/ that this module runs (kernels.h):
# the portable one until backprop._kernels, imported with the package,
# chooses from BACKPROP_KERNELS and the CPU (in one place, for both modules).
# Included into _ops.pyx and _engine.pyx, which each hold a copy of the builds.

from kernels cimport (
    bp_kernels, bp_kernel_sets, bp_cpu_runs, bp_choose_kernels, BP_N_ISA,
    bp_small_gemm_mode, BP_SMALL_GEMM_RULE, BP_SMALL_GEMM_NEVER, BP_SMALL_GEMM_ALWAYS,
)


def use_kernels(str name) -> int:
    """Run the build `name` ("portable", "avx2", "avx512"; "" or "auto": the
    widest this CPU runs).  Returns 0, −1 for an unknown name, −2 for a build
    this CPU cannot run (the build in use then stays)."""
    cdef bytes b = name.encode("ascii", "replace")
    return bp_choose_kernels(b)


def kernels_in_use() -> str:
    """The name of the build that runs now."""
    return bp_kernels.name.decode()


def kernel_builds() -> tuple:
    """Every build in this module, and whether this CPU runs it."""
    return tuple((bp_kernel_sets[i].name.decode(), bool(bp_cpu_runs(i)))
                 for i in range(BP_N_ISA))


_SMALL_GEMM_MODES = {"rule": BP_SMALL_GEMM_RULE, "never": BP_SMALL_GEMM_NEVER,
                     "always": BP_SMALL_GEMM_ALWAYS}


def small_products(str mode) -> str:
    """Which products take the small kernels (csrc/simd/gemm.h) rather than
    BLAS: "rule" (the default: where bp_small_gemm's bounds say they are
    faster), "never" or "always" (for benchmarks and tests).  Returns the
    mode before."""
    global bp_small_gemm_mode
    if mode not in _SMALL_GEMM_MODES:
        raise ValueError(f"mode must be one of {', '.join(_SMALL_GEMM_MODES)}; got {mode!r}")
    before = next(k for k, v in _SMALL_GEMM_MODES.items() if v == bp_small_gemm_mode)
    bp_small_gemm_mode = _SMALL_GEMM_MODES[mode]
    return before
