"""opto: cost of one call of a `@bundle` function, against the plain call.

    python opto_call_cost.py BURST REPEATS SUSTAINED

The same loops as ours_call_cost.py: *burst* is the fastest of REPEATS
loops of BURST calls, *sustained* one loop of SUSTAINED calls (opto's cost
grows as its global graph and the garbage collector's work grow).
Prints RESULT {"plain_s", "traced_s", "overhead_s", "sustained_s",
"sustained_overhead_s"} (seconds per call).
"""
from measure import argument, best_seconds_per_iteration, emit, seconds_per_iteration
from opto.trace import bundle

from workload import inc

BURST = argument(1, 2_000)
REPEATS = argument(2, 5)
SUSTAINED = argument(3, 20_000)

# The same function object our side marks by configuration, wrapped the way
# opto users write it (`@bundle()` on the definition is the same call).
inc_bundled = bundle()(inc)


def plain_loop(n):
    for i in range(n):
        inc(i)


def traced_loop(n):
    for i in range(n):
        inc_bundled(i)


plain = best_seconds_per_iteration(plain_loop, SUSTAINED, REPEATS)
burst = best_seconds_per_iteration(traced_loop, BURST, REPEATS)
sustained = seconds_per_iteration(traced_loop, SUSTAINED)
emit({"plain_s": plain, "traced_s": burst, "overhead_s": burst - plain,
      "sustained_s": sustained, "sustained_overhead_s": sustained - plain,
      "burst": BURST, "sustained": SUSTAINED, "repeats": REPEATS})
