"""opto: cost of one call of a `@bundle` function, against the plain call.

    python opto_call_cost.py [CALLS] [REPEATS]

Prints RESULT {"plain_s", "traced_s", "overhead_s", "calls", "repeats"}
(seconds per call; overhead = traced - plain).
"""
from measure import argument, best_seconds_per_iteration, emit
from opto.trace import bundle

from workload import inc

CALLS = argument(1, 2000)
REPEATS = argument(2, 5)

# The same function object our side marks by configuration, wrapped the way
# opto users write it (`@bundle()` on the definition is the same call).
inc_bundled = bundle()(inc)


def plain_loop(n):
    for i in range(n):
        inc(i)


def traced_loop(n):
    for i in range(n):
        inc_bundled(i)


plain = best_seconds_per_iteration(plain_loop, CALLS * 10, REPEATS)
traced = best_seconds_per_iteration(traced_loop, CALLS, REPEATS)
emit({"plain_s": plain, "traced_s": traced, "overhead_s": traced - plain,
      "calls": CALLS, "repeats": REPEATS})
