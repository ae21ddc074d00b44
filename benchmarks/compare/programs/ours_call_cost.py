"""ours: cost of one call of a function marked by configuration, against the plain call.

    trace-run --target workload:inc --granularity call ours_call_cost.py [CALLS] [REPEATS]

Same loop as opto_call_cost.py; `workload.inc_baseline` (same body, not
marked) is the plain figure. Prints RESULT {"plain_s", "traced_s",
"overhead_s", "tracer": {...}} (seconds per call).
"""
from measure import argument, best_seconds_per_iteration, emit
from ours_common import require_traced, tracer_state

import workload

CALLS = argument(1, 20_000)
REPEATS = argument(2, 5)

inc, inc_baseline = workload.inc, workload.inc_baseline
require_traced(inc)


def plain_loop(n):
    for i in range(n):
        inc_baseline(i)


def traced_loop(n):
    for i in range(n):
        inc(i)


plain = best_seconds_per_iteration(plain_loop, CALLS, REPEATS)
traced = best_seconds_per_iteration(traced_loop, CALLS, REPEATS)
emit({"plain_s": plain, "traced_s": traced, "overhead_s": traced - plain,
      "calls": CALLS, "repeats": REPEATS, "tracer": tracer_state(inc)})
