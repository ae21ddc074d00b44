"""ours: resident memory after N traced calls, and after the episode is released.

    trace-run --target workload:inc ours_memory.py N1 N2 ...     (increasing call counts)

The same loop as opto_memory.py, on the plain function marked by
configuration; the program makes no tracer call while it runs (the runtime
bounds an episode on its own). At the end it releases the episode with
`tracer.new_episode()`, the call a program makes after a forward run.
Prints RESULT {"baseline_bytes", "points": [[calls, rss_growth_bytes], ...],
"after_release_bytes", "tracer": {...}}.
"""
import sys

from measure import emit, rss_bytes, settle_memory
from ours_common import require_traced, tracer_state

import tracer
import workload

COUNTS = [int(a) for a in sys.argv[1:]] or [10_000]

inc = workload.inc
require_traced(inc)
inc(0)  # warm up, as opto_memory.py does
tracer.new_episode()
settle_memory()
baseline = rss_bytes()

points = []
done = 0
last = None
for target in COUNTS:
    for i in range(done, target):
        last = inc(i)
    done = target
    settle_memory()
    points.append([target, rss_bytes() - baseline])

last = None
tracer.new_episode()
settle_memory()
emit({"baseline_bytes": baseline, "points": points, "after_release_bytes": rss_bytes() - baseline,
      "tracer": tracer_state(inc)})
