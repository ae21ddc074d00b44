"""ours: cost of one call of a function marked by configuration, against the plain call.

    trace-run --target workload:inc --granularity call ours_call_cost.py BURST REPEATS SUSTAINED

Same loops as opto_call_cost.py; `workload.inc_baseline` (same body, not
marked) is the plain figure. Two traced figures: *burst*, the fastest of
REPEATS loops of BURST calls, each started with empty buffers (the hot
path's own cost), and *sustained*, one loop of SUSTAINED calls back to back
(including any back-pressure when the flusher and the daemon fall behind;
events dropped in it are counted). Prints RESULT {"plain_s", "traced_s",
"overhead_s", "sustained_s", "sustained_overhead_s", "sustained_dropped",
"tracer": {...}} (seconds per call).
"""
from measure import argument, best_seconds_per_iteration, emit, seconds_per_iteration
from ours_common import dropped_so_far, events_so_far, flush, require_traced, tracer_state

import workload

BURST = argument(1, 2_000)
REPEATS = argument(2, 5)
SUSTAINED = argument(3, 20_000)

inc, inc_baseline = workload.inc, workload.inc_baseline
require_traced(inc)


def plain_loop(n):
    for i in range(n):
        inc_baseline(i)


def traced_loop(n):
    for i in range(n):
        inc(i)


plain = best_seconds_per_iteration(plain_loop, SUSTAINED, REPEATS)
burst = best_seconds_per_iteration(traced_loop, BURST, REPEATS, between=flush)
flush()
dropped_before, sent_before = dropped_so_far(), events_so_far()
sustained = seconds_per_iteration(traced_loop, SUSTAINED)
flush()
# Events per call, sent or dropped: shows what the tracer really recorded in the sustained loop.
events_per_call = (events_so_far() - sent_before + dropped_so_far() - dropped_before) / SUSTAINED
emit({"events_per_call": events_per_call,"plain_s": plain, "traced_s": burst, "overhead_s": burst - plain,
      "sustained_s": sustained, "sustained_overhead_s": sustained - plain,
      "sustained_dropped": dropped_so_far() - dropped_before,
      "burst": BURST, "sustained": SUSTAINED, "repeats": REPEATS, "tracer": tracer_state(inc)})
