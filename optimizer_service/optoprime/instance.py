"""Rendering a ProblemGraph as OptoPrime's problem instance, within a token budget.

OptoPrime puts the whole subgraph in the prompt; a few hundred operations
overflow the context. Here the instance is rendered at the most detailed
level that fits the budget, from a fixed ladder of levels:

1. everything, values up to a generous length;
2. long values (and docs) truncated with a visible marker;
3. operations far from any parameter or output collapsed: a run of them
   becomes one "... N operations ..." line; operations within `radius`
   data-flow hops of an anchor (an operation that reads a variable, runs
   trainable code, raised, or produced an output) are kept;
4. smaller radius and shorter values, down to the anchors alone.

Every level shows every variable. Each level is one linear pass over the
precomputed ProblemGraph (names, lines and distances are computed once), so
the whole ladder stays linear in the size of the trace.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from optimizer_service.optoprime.naming import identifier, short_name
from optimizer_service.optoprime.problem import INPUT, OTHER, OUTPUT, ProblemGraph
from optimizer_service.optoprime.prompts import (FINAL_PROMPT, MEMORY_PROMPT, OUTPUT_FORMAT_PROMPT,
                                                 PROBLEM_TEMPLATE, REPRESENTATION_PROMPT, USER_PROMPT_TEMPLATE)
from optimizer_service.step_types import MemoryEntry

UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Level:
    radius: int             # keep operations within this many hops of an anchor
    value_chars: int        # longest value text shown in #Inputs/#Others/#Outputs and memory
    variable_chars: int     # longest variable text (variables are what the LLM edits: keep them whole)
    doc_chars: int
    memory_entries: int     # most recent memory entries kept


LEVELS: tuple[Level, ...] = (
    Level(UNLIMITED, 4000, UNLIMITED, 4000, UNLIMITED),
    Level(UNLIMITED, 1000, UNLIMITED, 1000, UNLIMITED),
    Level(UNLIMITED, 300, UNLIMITED, 400, UNLIMITED),
    Level(8, 200, UNLIMITED, 300, UNLIMITED),
    Level(3, 160, UNLIMITED, 200, 5),
    Level(1, 120, UNLIMITED, 160, 3),
    Level(0, 80, UNLIMITED, 120, 2),
    Level(0, 60, 4000, 80, 1),
    Level(0, 40, 1000, 60, 0),
    Level(0, 30, 200, 40, 0),
)


def estimate_tokens(text: str) -> int:
    """Token estimate used for the budget: about 4 characters per token (no tokenizer offline)."""
    return (len(text) + 3) // 4


def truncate(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters with a visible marker saying how much is missing."""
    if len(text) <= limit:
        return text
    keep = max(0, limit)
    return f"{text[:keep]}...[{len(text) - keep} more characters]"


@dataclass
class RenderedPrompt:
    system: str
    user: str
    instance: str
    level: int                 # index into LEVELS that was used
    collapsed_operations: int
    estimated_tokens: int
    within_budget: bool


def system_prompt() -> str:
    return REPRESENTATION_PROMPT + OUTPUT_FORMAT_PROMPT


def render_prompt(graph: ProblemGraph, *, objective: str, memory: list[MemoryEntry], token_budget: int | None,
                  memory_names: dict[str, str] | None = None) -> RenderedPrompt:
    """The system and user prompts at the most detailed level within `token_budget` (None: unlimited)."""
    system = system_prompt()
    names = memory_names if memory_names is not None else memory_variable_names(memory, graph)
    system_tokens = estimate_tokens(system)
    last: RenderedPrompt | None = None
    # The #Code lines alone bound the size of the unsummarised levels: skip
    # them without rendering when those lines already exceed the budget.
    code_tokens = sum(len(op.line) + 1 for op in graph.ops) // 4
    for index, level in enumerate(LEVELS):
        if token_budget is not None and level.radius >= UNLIMITED and code_tokens > token_budget \
                and index + 1 < len(LEVELS):
            continue
        instance, collapsed = render_instance(graph, objective, level)
        user = user_prompt(instance, memory, level, names)
        tokens = system_tokens + estimate_tokens(user)
        fits = token_budget is None or tokens <= token_budget
        last = RenderedPrompt(system, user, instance, index, collapsed, tokens, fits)
        if fits:
            return last
    assert last is not None
    return last


def memory_variable_names(memory: list[MemoryEntry], graph: ProblemGraph) -> dict[str, str]:
    """Param name -> the name the LLM knows it by (a parameter no longer shown keeps a readable name)."""
    names = {param: name for name, param in graph.names_to_params.items()}
    for entry in memory:
        for param in entry.params:
            names.setdefault(param, identifier(short_name(param)))
    return names


def user_prompt(instance: str, memory: list[MemoryEntry], level: Level, memory_names: dict[str, str]) -> str:
    """OptoPrime's user prompt: the instance, then past variables and feedback, then "Your response:"."""
    prefix = USER_PROMPT_TEMPLATE.format(problem_instance=instance)
    kept = memory[-level.memory_entries:] if level.memory_entries and memory else []
    if not kept:
        return prefix + FINAL_PROMPT
    examples = "\n".join(
        json.dumps({"variables": {memory_names.get(k, k): _memory_value(v, level.value_chars)
                                  for k, v in entry.params.items()},
                    "feedback": truncate(str(entry.feedback), max(level.value_chars, 200) * 4)},
                   indent=4, default=repr)
        for entry in kept)
    return prefix + MEMORY_PROMPT.format(examples=examples) + FINAL_PROMPT


def _memory_value(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return truncate(value, max(limit, 200) * 4)
    text = json.dumps(value, default=repr)
    return value if len(text) <= max(limit, 200) * 4 else truncate(text, max(limit, 200) * 4)


def render_instance(graph: ProblemGraph, objective: str, level: Level) -> tuple[str, int]:
    """One problem instance at `level`; returns (text, number of operations collapsed)."""
    ops = graph.ops
    keep = [d <= level.radius for d in graph.distance] if level.radius < UNLIMITED else [True] * len(ops)

    code: list[str] = []
    docs: list[str] = []
    shown_values: dict[Any, None] = {}          # insertion-ordered set
    collapsed_total = 0
    run = 0
    for op, kept in zip(ops, keep):
        if not kept:
            run += 1
            continue
        if run:
            code.append(_collapsed_line(run))
            collapsed_total += run
            run = 0
        code.append(op.line)
        if op.doc:
            docs.append(truncate(op.doc, level.doc_chars))
        for key in op.inputs:
            shown_values[key] = None
        for key in op.outputs:
            shown_values[key] = None
    if run:
        code.append(_collapsed_line(run))
        collapsed_total += run
    for key in graph.outputs:
        shown_values[key] = None

    sections: dict[str, list[str]] = {INPUT: [], OTHER: [], OUTPUT: []}
    for key in shown_values:
        entry = graph.values.get(key)
        if entry is None:
            continue
        sections[entry.role].append(f"({entry.type_label}) {entry.name}={truncate(entry.text, level.value_chars)}")
    # A value produced by a collapsed operation but used by a kept one is an
    # intermediate value: it stays in #Others (its producer is in the "..." line).

    variables = []
    constraints = []
    for var in graph.variables:
        text = truncate(var.text, level.variable_chars)
        if var.type_label == "code":
            variables.append(f"(code) {var.name}:{text}")
        else:
            variables.append(f"({var.type_label}) {var.name}={text}")
        if var.constraint:
            constraints.append(f"({var.type_label}) {var.name}: {var.constraint}")

    instance = PROBLEM_TEMPLATE.format(
        instruction=objective,
        code="\n".join(code),
        documentation="\n".join(docs),
        variables="\n".join(variables),
        constraints="\n".join(constraints),
        inputs="\n".join(sections[INPUT]),
        others="\n".join(sections[OTHER]),
        outputs="\n".join(sections[OUTPUT]),
        feedback=graph.feedback,
    )
    return instance, collapsed_total


def _collapsed_line(count: int) -> str:
    noun = "operation" if count == 1 else "operations"
    return f"... {count} {noun} not shown (they touch no variable and no output) ..."
