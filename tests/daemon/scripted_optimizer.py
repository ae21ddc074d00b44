"""A scripted Optimizer for daemon tests: deterministic, no LLM.

Plugged into a real daemon with ``--optimizer tests.daemon.scripted_optimizer:factory``.
What it does is chosen per step by StepRequest options:

- ``suggest``: {name: value} to return as the suggestion (default: every
  str parameter gets "!" appended, every number +1);
- ``fail``: a StepError kind ("llm_error", ...) to raise instead;
- ``sleep``: seconds to block first (a slow LLM call);
- ``terminate``: return TERMINATE with no suggestion.

Its `reasoning` is a JSON report of what the daemon handed it (feedback,
memory, rejections, parameters, graph size), so tests read it back from the
step history.
"""
from __future__ import annotations

import json
import time

from optimizer_service.step_types import StepError, StepInput, StepOutput

ERRORS = {cls.kind: cls for cls in (StepError, *StepError.__subclasses__())}


class ScriptedOptimizer:
    def step(self, problem: StepInput) -> StepOutput:
        options = problem.options
        time.sleep(float(options.get("sleep", 0)))
        if options.get("fail"):
            raise ERRORS[options["fail"]](f"scripted failure ({options['fail']})")
        report = {
            "feedback": sorted(f.text for f in problem.feedback),
            "memory": [[m.params, m.feedback] for m in problem.memory],
            "rejections": problem.rejections,
            "params": {name: p.value for name, p in problem.params.items()},
            "graph_nodes": problem.graph.number_of_nodes(),
            "graph_params": sorted({a["param"] for _, a in problem.graph.nodes(data=True) if a.get("param")}),
        }
        if options.get("terminate"):
            return StepOutput(suggestion={}, terminate=True, reasoning=json.dumps(report))
        if "suggest" in options:
            suggestion = dict(options["suggest"])
        else:
            suggestion = {}
            for name, p in problem.params.items():
                if isinstance(p.value, str):
                    suggestion[name] = p.value + "!"
                elif isinstance(p.value, (int, float)) and not isinstance(p.value, bool):
                    suggestion[name] = p.value + 1
        return StepOutput(suggestion=suggestion, reasoning=json.dumps(report), prompt="scripted prompt",
                          response=json.dumps({"suggestion": suggestion}))


def factory(session: str, config: dict, database: str) -> ScriptedOptimizer:
    return ScriptedOptimizer()
