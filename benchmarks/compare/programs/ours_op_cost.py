"""ours: cost of one traced operation (op granularity), against plain Python.

    trace-run --target workload:poly --granularity op ours_op_cost.py BURST REPEATS SUSTAINED

Same kernel as opto_op_cost.py (`workload.poly`, eight binary operations),
called with plain ints; `workload.poly_baseline` is the plain figure. Burst
and sustained loops as in ours_call_cost.py (counts are calls of the
kernel). Prints RESULT {"plain_s", "traced_s", "overhead_s",
"sustained_s", "sustained_overhead_s", "sustained_dropped", ...} per operation.
"""
import sys

from measure import argument, best_seconds_per_iteration, emit, seconds_per_iteration
from ours_common import dropped_so_far, events_so_far, flush, require_traced, tracer_state

import workload

BURST = argument(1, 500)
REPEATS = argument(2, 5)
SUSTAINED = argument(3, 5_000)
OPERATIONS = workload.POLY_OPERATIONS

poly, poly_baseline = workload.poly, workload.poly_baseline
require_traced(poly)


def plain_loop(n):
    for i in range(n):
        poly_baseline(i)


def traced_loop(n):
    for i in range(n):
        poly(i)


plain = best_seconds_per_iteration(plain_loop, SUSTAINED, REPEATS) / OPERATIONS
burst = best_seconds_per_iteration(traced_loop, BURST, REPEATS, between=flush) / OPERATIONS
flush()
dropped_before, sent_before = dropped_so_far(), events_so_far()
sustained = seconds_per_iteration(traced_loop, SUSTAINED) / OPERATIONS
flush()
# Events per call, sent or dropped: shows what the tracer really recorded in the sustained loop.
events_per_call = (events_so_far() - sent_before + dropped_so_far() - dropped_before) / SUSTAINED
if events_per_call < OPERATIONS:
    sys.exit(f"not traced per operation: {events_per_call:.1f} events per call of an {OPERATIONS}-operation "
             "kernel (is --granularity op in effect?)")
emit({"events_per_call": events_per_call,"plain_s": plain, "traced_s": burst, "overhead_s": burst - plain,
      "sustained_s": sustained, "sustained_overhead_s": sustained - plain,
      "sustained_dropped": dropped_so_far() - dropped_before, "operations_per_call": OPERATIONS,
      "burst": BURST, "sustained": SUSTAINED, "repeats": REPEATS, "tracer": tracer_state(poly)})
