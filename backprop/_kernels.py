"""Which build of the core's vectorised kernels runs on this CPU.

The compiled core holds its innermost loops (csrc/simd/) three times: for the
portable x86-64 baseline, for AVX2 with FMA, and for AVX-512.  When backprop
is imported, the widest build the CPU runs is chosen, unless the environment
variable BACKPROP_KERNELS names one:

    BACKPROP_KERNELS=portable   the baseline build, for tests and bug reports
    BACKPROP_KERNELS=avx2       AVX2 + FMA (refused on a CPU without them)
    BACKPROP_KERNELS=avx512     AVX-512 (likewise)
    BACKPROP_KERNELS=auto       the default: the widest the CPU runs

The builds compute the same formulas and differ in rounding only; on one
machine, with one build and thread count, training is bit for bit the same.
`backprop info` names the build in use.

The dense layers' small matrix products run in the build's own kernels
(csrc/simd/gemm.h) rather than BLAS where the build's bounds say they are
faster (csrc/simd/kernels.c, measured by `python -m bench.kernels`);
`small_products("never" | "always")` overrides that for benchmarks and tests.

fit can also split each small step across two threads (csrc/epoch.pxi,
split_step: each takes half the batch's rows, and half of every layer's
parameter gradient), when the call may use two threads and the input is
dense.  Whether it pays depends on the two cores sharing a cache, which a
virtual machine does not always say (docs/performance.md, Split steps), so it
is off unless the environment variable BACKPROP_SPLIT_STEPS turns it on:

    BACKPROP_SPLIT_STEPS=never    the default: every step on one thread
    BACKPROP_SPLIT_STEPS=rule     split the steps whose every product is small
    BACKPROP_SPLIT_STEPS=always   split every step of at least 16 rows

`split_steps(mode)` sets it for a block, for benchmarks and tests.

Otherwise, a step's large layers run their products cut between two threads
(csrc/epoch.pxi, cut steps: each thread takes half the columns of each
product's result, on one thread of BLAS), rather than on BLAS's own
threads; the environment variable BACKPROP_CUT_STEPS says where:

    BACKPROP_CUT_STEPS=rule     the default: the layers large enough to gain
    BACKPROP_CUT_STEPS=never    every product on BLAS's threads
    BACKPROP_CUT_STEPS=always   every layer that can be cut (for tests)

`cut_steps(mode)` sets it for a block.
"""

from __future__ import annotations

import contextlib
import os

from . import _engine, _ops

__all__ = [
    "kernels_in_use",
    "kernel_builds",
    "use_kernels",
    "small_products",
    "split_steps",
    "split_mode",
    "cut_steps",
    "cut_mode",
    "ENV",
    "SPLIT_ENV",
    "CUT_ENV",
]

ENV = "BACKPROP_KERNELS"
SPLIT_ENV = "BACKPROP_SPLIT_STEPS"
SPLIT_MODES = ("never", "rule", "always")
CUT_ENV = "BACKPROP_CUT_STEPS"
CUT_MODES = ("rule", "never", "always")
_MODULES = (_ops, _engine)  # each holds its own copy of the builds


def kernel_builds() -> dict[str, bool]:
    """Every build, and whether this CPU runs it."""
    return dict(_ops.kernel_builds())


def kernels_in_use() -> str:
    """The name of the build that runs now."""
    return _engine.kernels_in_use()


def _choose(name: str, source: str) -> None:
    builds = kernel_builds()
    name = name.strip().lower()
    if name not in ("", "auto") and name not in builds:
        raise ValueError(f"{source} must be one of auto, {', '.join(builds)}; got {name!r}")
    if name not in ("", "auto") and not builds[name]:
        runs = ", ".join(b for b, ok in builds.items() if ok)
        raise RuntimeError(f"{source}={name}: this CPU cannot run that build (it runs {runs})")
    for module in _MODULES:
        module.use_kernels(name)


@contextlib.contextmanager
def use_kernels(name: str):
    """Run the build `name` inside the block (for tests that compare the
    builds; training in other threads meanwhile would switch too)."""
    before = kernels_in_use()
    _choose(name, "name")
    try:
        yield
    finally:
        _choose(before, "name")


@contextlib.contextmanager
def small_products(mode: str):
    """Inside the block, the dense layers' matrix products take the small
    kernels (csrc/simd/gemm.h) by `mode`: "rule" (the default: the shapes
    where they beat BLAS on this build), "never" (BLAS for all) or "always"
    (the kernels for all); for benchmarks and tests, like use_kernels."""
    before = [module.small_products(mode) for module in _MODULES]
    try:
        yield
    finally:
        for module, mode_before in zip(_MODULES, before):
            module.small_products(mode_before)


@contextlib.contextmanager
def _mode(setter, mode: str):
    before = setter(mode)
    try:
        yield
    finally:
        setter(before)


def split_steps(mode: str):
    """Inside the block, fit's epochs split their steps across two threads
    by `mode`: "never", "rule" (the steps whose largest
    forward product is of 1 to 2.2 MFLOP) or "always" (every batch of
    at least 16 rows), when the call may use two threads and the input is
    dense; for benchmarks and tests, like use_kernels."""
    return _mode(_engine.split_steps, mode)


def split_mode() -> str:
    """The split_steps mode in force: "never", "rule" or "always"."""
    return _engine.split_steps(None)


def cut_steps(mode: str):
    """Inside the block, fit's epochs cut their large layers' products
    between two threads by `mode`: "rule" (the layers large enough to gain),
    "never" (BLAS's threads for all) or "always" (every layer that can be
    cut), when the call may use two threads and the input is dense; for
    benchmarks and tests, like use_kernels."""
    return _mode(_engine.cut_steps, mode)


def cut_mode() -> str:
    """The cut_steps mode in force: "rule", "never" or "always"."""
    return _engine.cut_steps(None)


def _choose_mode(env: str, modes: tuple, setter) -> None:
    value = os.environ.get(env, "")
    mode = value.strip().lower() or modes[0]
    if mode not in modes:
        raise ValueError(f"{env} must be one of {', '.join(modes)}; got {value!r}")
    setter(mode)


_choose(os.environ.get(ENV, ""), ENV)
_choose_mode(SPLIT_ENV, SPLIT_MODES, _engine.split_steps)
_choose_mode(CUT_ENV, CUT_MODES, _engine.cut_steps)
