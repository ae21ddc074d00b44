"""What the daemon's step pipeline hands the optimizer, and what it gets back.

The daemon owns sessions, graphs and persistence; the optimizer owns the
prompt, the LLM and the parsing. These dataclasses are the whole interface
between them, so either side can be tested without the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import networkx as nx


@dataclass
class ParamState:
    """One trainable parameter as the optimizer sees it."""

    name: str
    type: str                     # "str", "int", "float", "list", "dict", "bool", "code"
    value: Any                    # plain value; for kind == "source" the function source
    kind: str = "value"           # global, class_attr, instance_attr, default, literal, source, value
    constraint: str | None = None
    # For source parameters: what the new source must keep.
    signature: str | None = None
    freevars: list[str] = field(default_factory=list)
    # For source parameters: the id of the function whose source this is (the
    # FunctionDef id that call nodes carry as func["id"]), so the optimizer
    # knows which calls run it. None when the daemon has no FunctionDef for it.
    func_id: int | None = None


@dataclass
class FeedbackItem:
    node: tuple                   # key of the value node in StepInput.graph
    text: str
    score: float | None = None
    client: int = 0
    episode: int = 0


@dataclass
class MemoryEntry:
    """One past (parameters, feedback) pair, oldest first."""

    params: dict[str, Any]
    feedback: str


@dataclass
class StepInput:
    session: str
    step_index: int
    graph: nx.DiGraph             # feedback subgraph; attributes in docs/internals.md §5
    feedback: list[FeedbackItem]
    params: dict[str, ParamState]
    memory: list[MemoryEntry] = field(default_factory=list)
    # Reasons earlier suggestions were rejected (by validation or by a process
    # that failed to apply them); shown to the LLM as extra feedback.
    rejections: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMCall:
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None        # None when the model has no known price
    cached: bool = False
    request: Any = None           # messages as sent (for the step record)
    response: str = ""


@dataclass
class StepOutput:
    suggestion: dict[str, Any]            # accepted new values / sources, by parameter name
    reasoning: str = ""
    answer: str = ""
    terminate: bool = False
    rejected: dict[str, str] = field(default_factory=dict)   # name -> reason
    prompt: str = ""
    response: str = ""
    llm_calls: list[LLMCall] = field(default_factory=list)


class Optimizer(Protocol):
    def step(self, problem: StepInput) -> StepOutput: ...


class StepError(Exception):
    """A step failed; `kind` tells the tracer which exception to raise."""

    kind = "step_failed"


class LLMError(StepError):
    kind = "llm_error"


class BudgetExhausted(StepError):
    kind = "budget_exhausted"


class SuggestionRejected(StepError):
    kind = "suggestion_rejected"
