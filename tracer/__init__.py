"""Wrapper-free tracing and optimisation of marked Python functions.

    import tracer

    @tracer.bundle(trainable=True)      # same function object, code instrumented
    def answer(question): ...

    PROMPT = tracer.param("You are ...", name="prompt")
    out = answer("hi")
    tracer.feedback(out, "Too long.")
    tracer.step()                        # blocks until the patch is live here

The names below are loaded lazily so that `import tracer` stays cheap and
works while the program is being started by `trace-run`.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> "module:attribute" that implements it
_EXPORTS = {
    "bundle": "tracer.marking:bundle",
    "param": "tracer.params:param",
    "feedback": "tracer.api:feedback",
    "step": "tracer.api:step",
    "parameters": "tracer.api:parameters",
    "session": "tracer.api:session",
    "new_episode": "tracer.api:new_episode",
    "rollback": "tracer.api:rollback",
    "TracerError": "tracer.errors:TracerError",
    "StepFailed": "tracer.errors:StepFailed",
    "LLMFailed": "tracer.errors:LLMFailed",
    "BudgetExhausted": "tracer.errors:BudgetExhausted",
    "SuggestionRejected": "tracer.errors:SuggestionRejected",
    "UnknownValue": "tracer.errors:UnknownValue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'tracer' has no attribute {name!r}")
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
