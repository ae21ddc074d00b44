"""Benchmark: building OptoPrime's prompt for big traces, and the LLM layer's overhead.

    python -m tests.optimizer.bench_prompt            # prints a table

Figures are ratios against baselines measured in the same run, so they mean
the same on a fast or a loaded machine:

- prompt build (analyse + budgeted render) per trace size, against one
  plain `networkx.topological_sort` of the same graph (the cheapest linear
  pass there is): a constant ratio across sizes means linear time;
- an LLM call answered from the SQLite cache, against the same call going
  through the official SDK to the loopback fake server.
"""
from __future__ import annotations

import gc
import random
import sys
import tempfile
import time

import networkx as nx

from optimizer_service.llm import LLMClient, LLMStore, llm_config_from
from optimizer_service.optoprime.instance import render_prompt
from optimizer_service.optoprime.problem import analyse
from optimizer_service.optoprime.prompts import DEFAULT_OBJECTIVE
from tests.optimizer.test_token_budget import long_trace
from tests.support.fake_llm import FakeLLMServer, Reply


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
        problem = long_trace(size, params=5)
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
