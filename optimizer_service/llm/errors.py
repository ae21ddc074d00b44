"""The specific ways an LLM call can fail.

All of them are `step_types.LLMError` (or `BudgetExhausted`), so the daemon
reports them to the tracer with the right `error_kind` without knowing the
details.
"""
from __future__ import annotations

from optimizer_service.step_types import BudgetExhausted, LLMError

__all__ = ["LLMError", "BudgetExhausted", "LLMConfigError", "LLMAuthError", "LLMModelNotFound",
           "LLMRequestRejected", "LLMUnavailable", "LLMCacheMiss"]


class LLMConfigError(LLMError):
    """The LLM configuration (TRACE_LLM, [tool.trace], --llm) cannot be used as given."""


class LLMAuthError(LLMError):
    """The provider refused the credentials; retrying cannot help."""


class LLMModelNotFound(LLMError):
    """The provider does not know the model (or the endpoint); retrying cannot help."""


class LLMRequestRejected(LLMError):
    """The provider rejected the request itself (HTTP 400/422): a bug or an unsupported option."""


class LLMUnavailable(LLMError):
    """Rate limits, server errors or timeouts outlasted every retry."""


class LLMCacheMiss(LLMError):
    """Replay mode found no cached response for a prompt, and replay never calls the provider."""
