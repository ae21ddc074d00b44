"""Exceptions the tracer raises into user code (only from explicit API calls).

Tracing itself never raises into the program; these come from `tracer.*`
calls a user made on purpose, and each message says what to do.
"""
from __future__ import annotations


class TracerError(Exception):
    """Base class of every error raised by the `tracer` API."""


class UnknownValue(TracerError):
    """feedback() was given a value that no traced code produced in a live episode."""


class NotConnected(TracerError):
    """The operation needs the optimizer service, and tracing is off."""


class StepFailed(TracerError):
    """An optimisation step did not produce a patch; `reason` says why."""

    def __init__(self, reason: str, kind: str = "step_failed"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class LLMFailed(StepFailed):
    """The LLM call failed (authentication, unknown model, retries exhausted)."""


class BudgetExhausted(StepFailed):
    """The session reached max_llm_calls or max_cost."""


class SuggestionRejected(StepFailed):
    """Every suggestion of the step was rejected (by validation or by a process)."""


class PatchFailed(TracerError):
    """A patch could not be applied in this process; the previous version stays."""


STEP_ERRORS_BY_KIND: dict[str, type[StepFailed]] = {
    "llm_error": LLMFailed,
    "budget_exhausted": BudgetExhausted,
    "suggestion_rejected": SuggestionRejected,
}
