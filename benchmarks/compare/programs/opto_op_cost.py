"""opto: cost of one traced operation (node operators), against plain Python.

    python opto_op_cost.py BURST REPEATS SUSTAINED

Runs `workload.poly` (eight binary operations) on `node`s, as opto traces
operations, and on plain ints; burst and sustained loops as in
opto_call_cost.py (counts are calls of the kernel). Prints RESULT
{"plain_s", "traced_s", "overhead_s", "sustained_s", ...} per operation.
"""
from measure import argument, best_seconds_per_iteration, emit, seconds_per_iteration
from opto.trace import node

from workload import POLY_OPERATIONS, poly

BURST = argument(1, 500)
REPEATS = argument(2, 5)
SUSTAINED = argument(3, 5_000)

# Input nodes are made before the clock starts: the figure is the cost of
# the operations, not of wrapping the inputs.
inputs = [node(i) for i in range(max(BURST, SUSTAINED))]


def plain_loop(n):
    for i in range(n):
        poly(i)


def traced_loop(n):
    for x in inputs[:n]:
        poly(x)


plain = best_seconds_per_iteration(plain_loop, SUSTAINED, REPEATS) / POLY_OPERATIONS
burst = best_seconds_per_iteration(traced_loop, BURST, REPEATS) / POLY_OPERATIONS
sustained = seconds_per_iteration(traced_loop, SUSTAINED) / POLY_OPERATIONS
emit({"plain_s": plain, "traced_s": burst, "overhead_s": burst - plain,
      "sustained_s": sustained, "sustained_overhead_s": sustained - plain,
      "operations_per_call": POLY_OPERATIONS, "burst": BURST, "sustained": SUSTAINED, "repeats": REPEATS})
