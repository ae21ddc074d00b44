"""opto: resident memory after N traced calls.

    python opto_memory.py N1 N2 ...      (increasing call counts)

Calls a `bundle`d function N1 times, reads RSS, continues up to N2, ... and
finally drops every reference the program holds and collects garbage
(opto's global graph keeps the nodes anyway), then calls `GRAPH.clear()`.
Prints RESULT {"baseline_bytes", "points": [[calls, rss_growth_bytes], ...],
"after_release_bytes", "after_graph_clear_bytes"}.
"""
import sys

from measure import emit, rss_bytes, settle_memory
from opto.trace import GRAPH, bundle

from workload import inc

COUNTS = [int(a) for a in sys.argv[1:]] or [10_000]

inc_bundled = bundle()(inc)
inc_bundled(0)  # warm up: first-call imports and caches are not growth
settle_memory()
baseline = rss_bytes()

points = []
done = 0
last = None
for target in COUNTS:
    for i in range(done, target):
        last = inc_bundled(i)  # a program keeps its last result, nothing else
    done = target
    settle_memory()
    points.append([target, rss_bytes() - baseline])

last = None
settle_memory()
after_release = rss_bytes() - baseline
GRAPH.clear()  # opto's only way to free: drops every node of every run
settle_memory()
emit({"baseline_bytes": baseline, "points": points, "after_release_bytes": after_release,
      "after_graph_clear_bytes": rss_bytes() - baseline})
