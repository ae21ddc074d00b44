"""Benchmark: building OptoPrime's prompt for big traces, and the LLM layer's overhead.

    python benchmarks/bench_prompt.py            # prints a table

Figures are ratios against baselines measured in the same run, so they mean
the same on a fast or a loaded machine:

- prompt build (analyse + budgeted render) for op-mode traces of N
  operations built from trace events as the daemon builds them (a chain of
  additions, five parameters added in along the way), against one plain
  `networkx.topological_sort` of the same graph (the cheapest linear pass
  there is): a constant ratio across sizes means linear time;
- an LLM call answered from the SQLite cache, against the same call going
  through the official SDK to the loopback fake server.
"""
from __future__ import annotations

import gc
import random
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optimizer_service.graph import GraphBuilder, feedback_subgraph  # noqa: E402
from optimizer_service.llm import LLMClient, LLMStore, llm_config_from  # noqa: E402
from optimizer_service.optoprime.instance import render_prompt  # noqa: E402
from optimizer_service.optoprime.problem import analyse  # noqa: E402
from optimizer_service.optoprime.prompts import DEFAULT_OBJECTIVE  # noqa: E402
from optimizer_service.step_types import FeedbackItem, ParamState, StepInput  # noqa: E402
from tests.support.fake_llm import FakeLLMServer, Reply  # noqa: E402

ADD_PARAM_SITE, ADD_ONE_SITE = 1, 2
SITES = {ADD_PARAM_SITE: {"id": ADD_PARAM_SITE, "func": 9, "op": "BINARY_OP", "line": 3, "col": 8,
                          "text": "total + weight"},
         ADD_ONE_SITE: {"id": ADD_ONE_SITE, "func": 9, "op": "BINARY_OP", "line": 5, "col": 8, "text": "total + 1"}}


def op_trace(operations: int, params: int = 5) -> StepInput:
    """A chain of `operations` additions from op-mode events; parameter i is added in at evenly spaced points."""
    names = [f"app:weight_{i}" for i in range(params)]
    events: list[list] = []
    for i, name in enumerate(names):
        events += [["v", i, {"t": "float", "id": 10 + i, "v": float(i)}], ["param", i, name]]
    node = params
    events.append(["v", node, {"t": "float", "id": 99, "v": 0.0}])
    total, spacing = node, max(1, operations // params)
    for index in range(operations):
        if index % spacing == 0 and index // spacing < params:
            site, other = ADD_PARAM_SITE, index // spacing
        else:
            node += 1
            site, other = ADD_ONE_SITE, node
            events.append(["v", other, {"t": "int", "id": 7, "v": 1}])
        node += 1
        events += [["op", index + 1, None, site, "add", [total, other], node],
                   ["v", node, {"t": "float", "id": 1000 + index, "v": float(index)}]]
        total = node
    builder = GraphBuilder({}, SITES)
    builder.add_events(1, 1, events)
    graph = feedback_subgraph(builder.graph, [("v", 1, total)], in_place=True)
    return StepInput(session="bench", step_index=0, graph=graph,
                     feedback=[FeedbackItem(node=("v", 1, total), text="The total should be 42.", client=1,
                                            episode=1)],
                     params={name: ParamState(name, "float", float(i)) for i, name in enumerate(names)})


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
    finally:
        gc.enable()
    return best


def bench_prompt(sizes=(1_000, 4_000, 10_000, 40_000), budget: int = 6_000) -> None:
    print(f"{'operations':>10} {'build s':>9} {'us/op':>7} {'toposort s':>11} {'ratio':>6} {'tokens':>7} "
          f"{'level':>5} {'collapsed':>9}")
    for size in sizes:
        problem = op_trace(size)
        rendered = render_prompt(analyse(problem), objective=DEFAULT_OBJECTIVE, memory=[], token_budget=budget)
        build = best_of(lambda: render_prompt(analyse(problem), objective=DEFAULT_OBJECTIVE, memory=[],
                                              token_budget=budget))
        baseline = best_of(lambda: list(nx.topological_sort(problem.graph)))
        print(f"{size:>10} {build:>9.3f} {build / size * 1e6:>7.1f} {baseline:>11.4f} {build / baseline:>6.1f} "
              f"{rendered.estimated_tokens:>7} {rendered.level:>5} {rendered.collapsed_operations:>9}")


def bench_llm(calls: int = 30) -> None:
    messages = [{"role": "user", "content": "x" * 4000}]
    with FakeLLMServer([Reply('{"suggestion": {}}')], repeat_last=True) as server, \
            tempfile.TemporaryDirectory() as tmp:
        config = llm_config_from({"llm": {"llm": "openai:gpt-4o", "base_url": server.openai_base_url,
                                          "api_key": "bench", "cache": "off"}}, env={})
        client = LLMClient(config, store=LLMStore.open(f"{tmp}/bench.db"), rng=random.Random(0))
        client.complete(messages, session="warm")
        http = best_of(lambda: [client.complete(messages, session="b") for _ in range(calls)], repeat=2) / calls
        cached = LLMClient(config.replace(cache="use"), store=client.store)
        cached.complete(messages, session="b")
        hit = best_of(lambda: [cached.complete(messages, session="b") for _ in range(calls)], repeat=2) / calls
    print(f"LLM call through the SDK to loopback: {http * 1e3:.2f} ms; cache hit: {hit * 1e3:.2f} ms "
          f"(ratio {http / hit:.1f}x)")


def main() -> int:
    print(f"Python {sys.version.split()[0]}")
    bench_prompt()
    bench_llm()
    return 0


if __name__ == "__main__":
    sys.exit(main())
