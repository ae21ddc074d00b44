"""ours: one optimisation step on a chain of N nodes (feedback subgraph + problem instance).

    trace-run --target workload:advance --param workload:START --session S ours_build.py N

Builds the same chain as opto_build.py (a parameter and N-1 calls of
`workload.advance`, N value nodes), gives feedback on the last value and
calls `tracer.step()`. The daemon builds the episode's graph, cuts the
feedback subgraph and OptoPrime's problem instance, asks the loopback LLM
and patches the parameter; its step record (read by the harness) splits
that time into LLM and non-LLM. A warm-up step on a two-node chain comes
first. Prints RESULT {"nodes", "forward_s", "feedback_s", "step_s",
"changed", "changes"}.
"""
import time

from measure import argument, emit
from ours_common import require_traced, tracer_state

import tracer
import workload

NODES = argument(1, 1000)

advance = workload.advance
require_traced(advance)

# Warm-up step on a two-node chain: the daemon loads its optimizer and LLM
# client on the first step of its life, a one-off cost (opto_build.py has
# imported OptoPrime before its clock starts too).
tracer.feedback(advance(workload.START), "warm-up")
tracer.step(timeout=600)

start = time.perf_counter()
x = workload.START
for _ in range(NODES - 1):
    x = advance(x)
forward = time.perf_counter() - start

start = time.perf_counter()
tracer.feedback(x, "The result is too small; it should be 10 more.")
feedback = time.perf_counter() - start

# A text copy: a global holding the parameter's own object is rewritten by
# the patch too (reported to the params/patcher owners), which would hide the change.
before = repr(workload.START)
start = time.perf_counter()
outcome = tracer.step(timeout=600)
step = time.perf_counter() - start

emit({"nodes": NODES, "forward_s": forward, "feedback_s": feedback, "step_s": step,
      "changed": repr(workload.START) != before, "changes": [str(c) for c in outcome.changes],
      "tracer": tracer_state(advance)})
