"""OptoPrime for the daemon: StepInput -> prompt -> LLM -> parsed, converted, validated StepOutput."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from optimizer_service.llm import LLMClient, LLMStore, apply_options, llm_config_from
from optimizer_service.optoprime.answer import AnswerUnreadable, ParsedAnswer, parse_answer
from optimizer_service.optoprime.instance import RenderedPrompt, render_prompt
from optimizer_service.optoprime.problem import ProblemGraph, analyse
from optimizer_service.optoprime.prompts import DEFAULT_OBJECTIVE, REASK_PROMPT
from optimizer_service.optoprime.suggestions import convert_suggestion
from optimizer_service.step_types import LLMCall, MemoryEntry, StepInput, StepOutput

log = logging.getLogger("optimizer_service.optoprime")

DEFAULT_MEMORY_SIZE: Final = 5
DEFAULT_TOKEN_BUDGET: Final = 24_000
# Key under which an answer that could not be read at all is reported in
# StepOutput.rejected (never a valid identifier, so never a parameter name).
UNREADABLE_ANSWER: Final = "(unreadable answer)"


class OptoPrime:
    """OptoPrime with memory, implementing `step_types.Optimizer`.

    `llm` answers the prompts (an LLMClient: cache, retries, ledger, budgets).
    `memory_size` is how many past (variables, feedback) pairs from
    StepInput.memory go into the prompt (0: none). `token_budget` bounds the
    prompt (system + user) in estimated tokens; None disables summarising.
    StepInput.options may override `token_budget` and `memory_size` for one
    step, and the LLM settings (cache, max_llm_calls, ...) via the client.
    """

    def __init__(self, llm: LLMClient, *, memory_size: int = DEFAULT_MEMORY_SIZE,
                 token_budget: int | None = DEFAULT_TOKEN_BUDGET, objective: str | None = None) -> None:
        if memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, got {memory_size}")
        if token_budget is not None and token_budget <= 0:
            raise ValueError(f"token_budget must be > 0 (or None for no limit), got {token_budget}")
        self.llm = llm
        self.memory_size = memory_size
        self.token_budget = token_budget
        self.objective = objective or DEFAULT_OBJECTIVE

    # -- the prompt ------------------------------------------------------------
    def build_prompt(self, problem: StepInput) -> tuple[ProblemGraph, RenderedPrompt]:
        """The analysed problem and the prompt that would be sent for it (no LLM call)."""
        graph = analyse(problem)
        memory_size = int(problem.options.get("memory_size", self.memory_size))
        memory = list(problem.memory[-memory_size:]) if memory_size > 0 else []
        budget = problem.options.get("token_budget", self.token_budget)
        rendered = render_prompt(graph, objective=self.objective, memory=memory,
                                 token_budget=None if budget is None else int(budget))
        if not rendered.within_budget:
            log.warning("session %s step %d: prompt of ~%d tokens exceeds the budget of %s even when summarised "
                        "(%d variables)", problem.session, problem.step_index, rendered.estimated_tokens, budget,
                        len(graph.variables))
        return graph, rendered

    # -- one step --------------------------------------------------------------
    def step(self, problem: StepInput) -> StepOutput:
        graph, rendered = self.build_prompt(problem)
        messages = [{"role": "system", "content": rendered.system}, {"role": "user", "content": rendered.user}]
        calls: list[LLMCall] = []
        call = self._complete(messages, problem, calls)
        try:
            parsed = parse_answer(call.response)
        except AnswerUnreadable as first_error:
            # One re-ask with the reason, as a continuation of the same chat.
            retry = messages + [{"role": "assistant", "content": call.response},
                                {"role": "user", "content": REASK_PROMPT.format(error=first_error)}]
            call = self._complete(retry, problem, calls)
            try:
                parsed = parse_answer(call.response)
            except AnswerUnreadable as second_error:
                return self._output(rendered, calls, ParsedAnswer(), {}, {
                    UNREADABLE_ANSWER: f"the LLM's answer could not be read, even after asking again: {second_error}"})
        if parsed.terminate:
            return self._output(rendered, calls, parsed, {}, {})
        accepted, rejected = convert_suggestion(parsed.suggestion, problem.params, graph.names_to_params)
        return self._output(rendered, calls, parsed, accepted, rejected)

    def _complete(self, messages: list[dict[str, Any]], problem: StepInput, calls: list[LLMCall]) -> LLMCall:
        # Only answers that parse are cached: a retried step must not replay an unreadable one.
        call = self.llm.complete(messages, session=problem.session, step=problem.step_index,
                                 options=_llm_options(problem.options), accept=_readable)
        calls.append(call)
        return call

    @staticmethod
    def _output(rendered: RenderedPrompt, calls: list[LLMCall], parsed: ParsedAnswer, accepted: dict[str, Any],
                rejected: dict[str, str]) -> StepOutput:
        return StepOutput(suggestion=accepted, reasoning=parsed.reasoning, answer=parsed.answer,
                          terminate=parsed.terminate, rejected=rejected, prompt=rendered.system + rendered.user,
                          response=calls[-1].response if calls else "", llm_calls=calls)

    @staticmethod
    def memory_entry(problem: StepInput) -> MemoryEntry:
        """What this step adds to the session's memory (OptoPrime remembers the variables it was shown)."""
        return MemoryEntry(params={name: state.value for name, state in problem.params.items()},
                           feedback="\n".join(f.text for f in problem.feedback))


_OPTIMIZER_ONLY_OPTIONS = ("token_budget", "memory_size")


def _readable(text: str) -> bool:
    """Whether `text` is an answer OptoPrime can read (a suggestion or TERMINATE)."""
    try:
        parse_answer(text)
    except AnswerUnreadable:
        return False
    return True


def _llm_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _OPTIMIZER_ONLY_OPTIONS}


def create_optimizer(*, session: str, config: Mapping[str, Any], database: str) -> OptoPrime:
    """The daemon's factory: OptoPrime for `session` with its config, cache and ledger in `database`.

    `config` is the session's configuration: `llm` ("provider:model" or a
    table), `memory_size`, `token_budget`, and LLM limits (`max_llm_calls`,
    `max_cost`, `max_tokens`, `temperature`, `cache`, ...). Unset values come
    from TRACE_LLM and the SDK environment variables.
    """
    llm_source: dict[str, Any] = {k: v for k, v in config.items() if k == "llm" or k.startswith("llm_")}
    llm_config = llm_config_from(llm_source or None)
    llm_config = apply_options(llm_config, {k: v for k, v in config.items() if k not in ("llm",)})
    client = LLMClient(llm_config, store=LLMStore.open(database))
    budget = config.get("token_budget", DEFAULT_TOKEN_BUDGET)
    return OptoPrime(client, memory_size=int(config.get("memory_size", DEFAULT_MEMORY_SIZE)),
                     token_budget=None if budget is None else int(budget))
