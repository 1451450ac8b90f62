"""Build the compiled core: the Cython sources in csrc/ become extension
modules of the backprop package.

Optimised (-O3) and portable by default: the wheel runs on any x86-64.
Set BACKPROP_NATIVE=1 to compile for this machine's CPU (-march=native),
BACKPROP_SYMBOLS=1 to keep symbols for profilers.
Debug information is left out (-g0) and the modules are stripped, which keeps
the wheel small.  The modules are cythonized and compiled in parallel.
"""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_codes", "_ops", "_engine"]


def write_code_stubs(pxd="csrc/backprop/_codes.pxd", pyi="backprop/_codes.pyi"):
    """The type stub of backprop._codes, written from the one definition of
    the core's codes (each `cpdef enum` becomes an IntEnum of its members)."""
    lines = [
        "# Written by setup.py from csrc/backprop/_codes.pxd: edit that file.",
        "from enum import IntEnum",
    ]
    with open(pxd, encoding="utf-8") as fh:
        for line in fh:
            code = line.split("#")[0].rstrip()
            if code.startswith("cpdef enum "):
                lines += ["", f"class {code.split()[2].rstrip(':')}(IntEnum):"]
            elif code.startswith("    ") and code.strip():
                lines.append(f"    {code.strip()} = ...")
    with open(pyi, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


write_code_stubs()

# -fno-trapping-math and -fno-math-errno (no FP traps, errno unread) let the
# compiler vectorise loops with comparisons and selects; unlike -ffast-math
# they change no result: inf and NaN still behave as IEEE 754 says.
compile_args = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno"]
if os.environ.get("BACKPROP_NATIVE", "") not in ("", "0"):
    compile_args.append("-march=native")
link_args = ["-s"]
if os.environ.get("BACKPROP_SYMBOLS", "") not in ("", "0"):
    # keep symbols and line tables, for profilers (perf, valgrind)
    compile_args = ["-O3", "-g"] + compile_args[2:]  # (the rest as above)
    link_args = []
if os.environ.get("BACKPROP_SANITIZE"):
    # e.g. BACKPROP_SANITIZE=address,undefined for a sanitizer build
    flag = "-fsanitize=" + os.environ["BACKPROP_SANITIZE"]
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", flag]
    link_args = [flag]


class ParallelBuildExt(build_ext):
    """Compile the extension modules side by side, one per core, after the
    kernels' library that they link."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        # `build` runs build_clib first; `build_ext --inplace` alone would not
        self.run_command("build_clib")
        super().run()


# The kernels built once per instruction set (csrc/simd/kernels.h): one static
# library, compiled once and linked into the modules that call it.
SIMD = sorted(glob.glob("csrc/simd/*.[ch]"))
simd_library = (
    "backprop_simd",
    {
        "sources": ["csrc/simd/kernels.c", "csrc/simd/team.c"],
        "cflags": compile_args + ["-pthread"],
        "obj_deps": {"": SIMD},
    },
)

extensions = [
    Extension(
        f"backprop.{name}",
        [f"csrc/{name}.pyx"],
        depends=SIMD,
        include_dirs=[numpy.get_include(), "csrc"],
        extra_compile_args=compile_args,
        extra_link_args=link_args + ["-pthread"],
        libraries=["m"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in MODULES
]

setup(
    libraries=[simd_library],
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        nthreads=os.cpu_count() or 1,
        compiler_directives={"language_level": 3},
    ),
    cmdclass={"build_ext": ParallelBuildExt},
)
