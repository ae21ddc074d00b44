"""opto: feedback subgraph + problem-instance build time on a chain of N nodes.

    python opto_build.py N

Builds a chain of N nodes (a trainable start node and N-1 calls of a
`bundle`d function), then times what OptoPrime does before calling its LLM:
`backward` (feedback propagation over the graph) and `summarize` +
`construct_prompt` (the problem instance). No LLM is called. Prints RESULT
{"nodes", "forward_s", "backward_s", "problem_s", "build_s", "prompt_chars"}.
"""
import time

from measure import argument, emit
from opto.optimizers import OptoPrime
from opto.trace import bundle, node
from opto.utils.llm import AbstractModel

from workload import advance

NODES = argument(1, 1000)


def refuse_llm_call(**_request):
    raise RuntimeError("opto_build.py must not call an LLM")


advance_bundled = bundle()(advance)

start = time.perf_counter()
x = start_node = node(1.0, trainable=True, name="start")
for _ in range(NODES - 1):
    x = advance_bundled(x)
forward = time.perf_counter() - start

optimizer = OptoPrime([start_node], llm=AbstractModel(lambda: refuse_llm_call))
optimizer.zero_feedback()

start = time.perf_counter()
x.backward("The result is too small; it should be 10 more.")
backward = time.perf_counter() - start

start = time.perf_counter()
summary = optimizer.summarize()
system_prompt, user_prompt = optimizer.construct_prompt(summary)
problem = time.perf_counter() - start

emit({"nodes": NODES, "forward_s": forward, "backward_s": backward, "problem_s": problem,
      "build_s": backward + problem, "prompt_chars": len(system_prompt) + len(user_prompt)})
