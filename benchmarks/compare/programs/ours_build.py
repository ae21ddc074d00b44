"""ours: one optimisation step on a chain of N nodes (feedback subgraph + problem instance).

    trace-run --target workload:advance --param workload:START --session S ours_build.py N

Builds the same chain as opto_build.py (a parameter and N-1 calls of
`workload.advance`, N value nodes), gives feedback on the last value and
calls `tracer.step()`. The daemon builds the episode's graph, cuts the
feedback subgraph and OptoPrime's problem instance, asks the loopback LLM
and patches the parameter; its step record (read by the harness) splits
that time into LLM and non-LLM. Prints RESULT {"nodes", "forward_s",
"feedback_s", "step_s", "changed"}.
"""
import time

from measure import argument, emit
from ours_common import require_traced, tracer_state

import tracer
import workload

NODES = argument(1, 1000)

advance = workload.advance
require_traced(advance)

start = time.perf_counter()
x = workload.START
for _ in range(NODES - 1):
    x = advance(x)
forward = time.perf_counter() - start

start = time.perf_counter()
tracer.feedback(x, "The result is too small; it should be 10 more.")
feedback = time.perf_counter() - start

before = workload.START
start = time.perf_counter()
tracer.step(timeout=600)
step = time.perf_counter() - start

emit({"nodes": NODES, "forward_s": forward, "feedback_s": feedback, "step_s": step,
      "changed": workload.START != before, "tracer": tracer_state(advance)})
