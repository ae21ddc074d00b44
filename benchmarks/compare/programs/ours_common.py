"""What every our-side program checks and reports about the tracer it runs under.

Our programs run under `trace-run`, which marks `workload` functions by
configuration. A figure is only worth printing if the function really was
rewritten and the process really talks to the daemon; these helpers say so
in the result, and the harness refuses a figure that was not traced.
"""
from __future__ import annotations

import sys

FLUSH_TIMEOUT_S = 60.0


def is_instrumented(func) -> bool:
    """True when the tracer rewrote `func`'s code (its hooks are `__@trace_*` globals, docs/internals.md §4)."""
    return any(name.startswith("__@trace_") for name in func.__code__.co_names)


def flush() -> None:
    """Wait until everything traced so far was sent: the next timed loop starts with empty buffers."""
    from tracer import runtime
    runtime.flush(FLUSH_TIMEOUT_S)


def dropped_so_far() -> int:
    """Events this process's tracer had to drop since it started (the daemon could not keep up)."""
    from tracer import runtime
    return int(runtime.stats().dropped or 0)


def events_so_far() -> int:
    """Events this process's tracer has sent since it started."""
    from tracer import runtime
    return int(runtime.stats().events_sent or 0)


def tracer_state(*funcs) -> dict:
    """`instrumented` (every func rewritten), `connected` (the runtime reaches a daemon) and its counters."""
    state = {"instrumented": all(is_instrumented(f) for f in funcs), "connected": False}
    try:
        from tracer import runtime
        state["connected"] = bool(runtime.is_connected())
        runtime.flush(FLUSH_TIMEOUT_S)  # so that the counters include what the measured loop produced
        stats = runtime.stats()
        for name in ("events_sent", "dropped", "episodes_auto_rolled", "tracing_off_reason"):
            state[name] = getattr(stats, name, None)
    except Exception as exc:  # an older or newer runtime: report what we could not read
        state["runtime_error"] = f"{type(exc).__name__}: {exc}"
    return state


def require_traced(*funcs) -> dict:
    """Exit with a clear message unless every func is instrumented and the runtime is connected."""
    state = tracer_state(*funcs)
    if not state["instrumented"]:
        names = ", ".join(f.__qualname__ for f in funcs if not is_instrumented(f))
        sys.exit(f"not traced: {names} was not rewritten by the tracer (is the program run under "
                 f"trace-run with --target workload:...?)")
    if not state["connected"]:
        sys.exit("not traced: the tracer runtime is not connected to a daemon "
                 f"({state.get('runtime_error', 'runtime.is_connected() is False')})")
    return state
