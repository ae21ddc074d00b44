"""opto: cost of one traced operation (node operators), against plain Python.

    python opto_op_cost.py [CALLS] [REPEATS]

Runs `workload.poly` (eight binary operations) on `node`s, as opto traces
operations, and on plain ints. Prints RESULT {"plain_s", "traced_s",
"overhead_s", "operations_per_call", ...} with seconds per operation.
"""
from measure import argument, best_seconds_per_iteration, emit
from opto.trace import node

from workload import POLY_OPERATIONS, poly

CALLS = argument(1, 1000)
REPEATS = argument(2, 5)

# Input nodes are made before the clock starts: the figure is the cost of
# the operations, not of wrapping the inputs.
inputs = [node(i) for i in range(CALLS)]


def plain_loop(n):
    for i in range(n):
        poly(i)


def traced_loop(n):
    for x in inputs[:n]:
        poly(x)


plain = best_seconds_per_iteration(plain_loop, CALLS * 10, REPEATS) / POLY_OPERATIONS
traced = best_seconds_per_iteration(traced_loop, CALLS, REPEATS) / POLY_OPERATIONS
emit({"plain_s": plain, "traced_s": traced, "overhead_s": traced - plain,
      "operations_per_call": POLY_OPERATIONS, "calls": CALLS, "repeats": REPEATS})
