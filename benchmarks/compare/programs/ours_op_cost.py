"""ours: cost of one traced operation (op granularity), against plain Python.

    trace-run --target workload:poly --granularity op ours_op_cost.py [CALLS] [REPEATS]

Same kernel as opto_op_cost.py (`workload.poly`, eight binary operations),
called with plain ints; `workload.poly_baseline` is the plain figure.
Prints RESULT {"plain_s", "traced_s", "overhead_s", ...} per operation.
"""
from measure import argument, best_seconds_per_iteration, emit
from ours_common import require_traced, tracer_state

import workload

CALLS = argument(1, 5_000)
REPEATS = argument(2, 5)

poly, poly_baseline = workload.poly, workload.poly_baseline
require_traced(poly)


def plain_loop(n):
    for i in range(n):
        poly_baseline(i)


def traced_loop(n):
    for i in range(n):
        poly(i)


operations = workload.POLY_OPERATIONS
plain = best_seconds_per_iteration(plain_loop, CALLS, REPEATS) / operations
traced = best_seconds_per_iteration(traced_loop, CALLS, REPEATS) / operations
emit({"plain_s": plain, "traced_s": traced, "overhead_s": traced - plain,
      "operations_per_call": operations, "calls": CALLS, "repeats": REPEATS,
      "tracer": tracer_state(poly)})
