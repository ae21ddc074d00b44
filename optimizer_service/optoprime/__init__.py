"""OptoPrime (the LLM optimizer of Trace) over the daemon's execution graphs, with memory.

- `OptoPrime(llm, memory_size=..., token_budget=...)`: `step(StepInput) -> StepOutput`.
- `create_optimizer(session=, config=, database=)`: the daemon's factory.
- `build_prompt` (on OptoPrime) shows the prompt without calling the LLM.
"""
from optimizer_service.optoprime.answer import AnswerUnreadable, ParsedAnswer, parse_answer
from optimizer_service.optoprime.instance import estimate_tokens, render_prompt
from optimizer_service.optoprime.optimizer import (DEFAULT_MEMORY_SIZE, DEFAULT_TOKEN_BUDGET, UNREADABLE_ANSWER,
                                                   OptoPrime, create_optimizer)
from optimizer_service.optoprime.problem import ProblemGraph, analyse
from optimizer_service.optoprime.suggestions import UnusableValue, convert_suggestion, convert_value

__all__ = [
    "OptoPrime", "create_optimizer", "DEFAULT_MEMORY_SIZE", "DEFAULT_TOKEN_BUDGET", "UNREADABLE_ANSWER",
    "AnswerUnreadable", "ParsedAnswer", "parse_answer", "estimate_tokens", "render_prompt",
    "ProblemGraph", "analyse", "UnusableValue", "convert_suggestion", "convert_value",
]
