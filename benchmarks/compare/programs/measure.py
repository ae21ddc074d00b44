"""Measurement helpers shared by the opto-side and our-side programs.

Standard library only: the same file is imported by programs running in the
opto virtual environment and by programs running under `trace-run` in the
project's environment, so both sides measure with the same code.

A program reports by printing one line `RESULT {json}` on stdout; anything
else it (or a library) prints is ignored by the harness.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any, Callable

RESULT_PREFIX = "RESULT "


def emit(result: dict[str, Any]) -> None:
    """Print the program's result line for the harness."""
    result.setdefault("python", sys.version.split()[0])
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    """Current resident set size of this process, in bytes (not the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Not Linux: fall back to the peak, which is all `resource` offers.
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def best_seconds_per_iteration(run: Callable[[int], None], iterations: int, repeats: int,
                               between: Callable[[], None] | None = None) -> float:
    """Run `run(iterations)` `repeats` times; return the fastest time per iteration.

    `between()`, if given, runs before each repetition, outside the clock.

    The minimum is the figure least disturbed by other work on a shared
    machine (the same choice `timeit` makes). The collector is left on, as
    it is in a user's program: opto's allocations make it run, and that is
    part of opto's real cost.
    """
    best = float("inf")
    for _ in range(repeats):
        if between is not None:
            between()
        start = time.perf_counter()
        run(iterations)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / iterations)
    return best


def seconds_per_iteration(run: Callable[[int], None], iterations: int) -> float:
    """Run `run(iterations)` once; return the time per iteration."""
    start = time.perf_counter()
    run(iterations)
    return (time.perf_counter() - start) / iterations


def settle_memory() -> None:
    """Collect garbage so that an RSS reading does not count dead cycles."""
    gc.collect()
    gc.collect()


def argument(index: int, default: int) -> int:
    """Integer command-line argument `index` (1-based), or `default`."""
    return int(sys.argv[index]) if len(sys.argv) > index else default
