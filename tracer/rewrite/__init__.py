"""Bytecode rewriting of marked functions (with the `bytecode` package).

    result = instrument(code, func_id=..., module=..., qualname=..., granularity="call")
    result.code     # the instrumented code object (marshallable)
    result.sites    # op mode: site id -> (opname, line, col, source text)

Modules: `compat` (every per-version difference), `stack` (stack depths),
`calls` (call-level instrumentation: entry, returns, yields, exceptions,
parameter reads), `ops` (op-level instrumentation on top of it).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

from tracer.rewrite.calls import RewriteError, argument_names
from tracer.rewrite.stack import StackAnalysisError


@dataclass
class Instrumented:
    code: types.CodeType
    sites: dict = field(default_factory=dict)


def instrument(code: types.CodeType, *, func_id: int, module: str, qualname: str,
               granularity: str = "call") -> Instrumented:
    """Rewrite `code` for `granularity` ("call" or "op"). Raises RewriteError if it cannot."""
    try:
        if granularity == "op":
            from tracer.rewrite.ops import OpInstrumenter
            inst = OpInstrumenter(code, func_id=func_id, module=module, qualname=qualname)
            return Instrumented(inst.rewrite(), inst.sites)
        from tracer.rewrite.calls import CallInstrumenter
        return Instrumented(CallInstrumenter(code, func_id=func_id, module=module, qualname=qualname).rewrite())
    except RewriteError:
        raise
    except (StackAnalysisError, Exception) as exc:
        raise RewriteError(f"cannot instrument {module}:{qualname}: {type(exc).__name__}: {exc}") from exc


__all__ = ["instrument", "Instrumented", "RewriteError", "argument_names"]
