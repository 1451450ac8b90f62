"""The one timing helper of the suite, and how its numbers are summarised.

`timed(fn, *args)` is the only place a clock is read (time.perf_counter).
`interleave(samplers, reps)` runs every system once per repetition, in an
order that rotates from one repetition to the next, so that slow drifts of a
shared, noisy machine (another process, the CPU's clock) fall on every system
alike; the first `warmup` repetitions are run and thrown away.  A sampler is a
function that does one measurement and returns seconds per unit (per
training step, per call, per row …); `per_unit(fn, units)` makes the usual
kind, and `autorange` picks how many back-to-back calls make a sample long
enough.  The result for each system is a `Stats`: the median of the samples
with the quartiles and the extremes.  A short pause before each sample
keeps one system's idle-spinning threads from slowing the next.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

__all__ = ["timed", "per_unit", "repeat", "autorange", "calls", "interleave", "Stats", "fmt_time"]


def timed(fn: Callable, *args) -> float:
    """Seconds taken by one call fn(*args)."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def per_unit(fn: Callable[[], object], units: int) -> Callable[[], float]:
    """A sampler: time one call of fn and divide by the units it did."""
    return lambda: timed(fn) / units


def repeat(fn: Callable[[], object], n: int) -> Callable[[], None]:
    """fn called n times back to back, as one function."""

    def run():
        for _ in range(n):
            fn()

    return run


def autorange(fn: Callable[[], object], min_time: float) -> int:
    """The smallest n in 1, 2, 5, 10, 20, 50 … for which n back-to-back
    calls of fn take at least min_time seconds (as timeit.autorange), so
    that a fast system's sample is long enough for a cold start (after the
    settling pause) not to count.  The calls made here also warm it up."""
    scale = 1
    while True:
        for n in (scale, 2 * scale, 5 * scale):
            if timed(repeat(fn, n)) >= min_time:
                return n
        scale *= 10


def calls(fn: Callable[[], object], min_time: float) -> Callable[[], float]:
    """A sampler: seconds per call over as many back-to-back calls of fn()
    as take min_time (autorange)."""
    k = autorange(fn, min_time)
    return per_unit(repeat(fn, k), k)


@dataclass
class Stats:
    """Summary of one system's samples (seconds per unit)."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int
    samples: list  # in the order measured

    @classmethod
    def of(cls, samples) -> Stats:
        s = sorted(samples)
        if len(s) >= 4:
            q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
        else:
            q1, q3 = s[0], s[-1]
        return cls(statistics.median(s), q1, q3, s[0], s[-1], len(s), list(samples))

    @property
    def spread(self) -> float:
        """Half the interquartile range: the '±' printed beside the median."""
        return (self.q3 - self.q1) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def interleave(
    samplers: Mapping[str, Callable[[], float]],
    reps: int,
    warmup: int = 1,
    errors: dict | None = None,
    settle: float = 0.0,
) -> dict[str, Stats]:
    """Run each sampler `warmup + reps` times, systems interleaved in a
    rotating order; return the Stats of the last `reps` samples of each.
    A sampler that raises is dropped from the run, its error recorded in
    `errors` (when given) instead of stopping the others.  `settle` seconds
    of sleep before each sample let the previous system's BLAS threads stop
    spin-waiting (OpenBLAS's spin for ~0.1 s after a call; numpy's and
    scipy's are two pools, and on two cores one spinning pool halves the
    speed of the other)."""
    names = list(samplers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        shift = rep % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if name not in samples:
                continue
            if settle:
                time.sleep(settle)
            try:
                value = samplers[name]()
            except Exception as exc:
                if errors is None:
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
                del samples[name]
                continue
            if rep >= warmup:
                samples[name].append(value)
    return {name: Stats.of(values) for name, values in samples.items()}


def fmt_time(seconds: float, spread: float | None = None) -> str:
    """'12.3 µs', '4.56 ms ±0.07' …: three significant digits, a unit that
    suits the value; the spread, when given, in the same unit."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale or unit == "ns":
            break
    value = seconds / scale
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    text = f"{value:.{digits}f} {unit}"
    if spread is not None:
        text += f" ±{spread / scale:.{digits}f}"
    return text
