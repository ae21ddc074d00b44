"""The user's API: feedback, step, parameters, session, rollback.

Everything here runs only when the user calls it on purpose, so (unlike the
tracing itself) it may raise: each error is a `tracer.errors` class whose
message says what to do.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from protocol import messages as m

from tracer import runtime
from tracer.errors import (
    STEP_ERRORS_BY_KIND,
    NotConnected,
    StepFailed,
    SuggestionRejected,
    UnknownValue,
)

DEFAULT_STEP_TIMEOUT = 300.0   # an LLM step can take minutes with retries
_REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Change:
    """One parameter a step changed."""

    name: str
    kind: str          # "value" or "source"
    old: Any
    new: Any

    def __str__(self) -> str:
        if self.kind == "source":
            body = "\n".join("    " + line for line in str(self.new).rstrip().splitlines())
            return f"{self.name}: new source\n{body}"
        return f"{self.name}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True)
class StepResult:
    """What `step()` returns: the new parameter version and what changed.

    `version` is None when the optimizer proposed nothing (it answered
    TERMINATE, or suggested the values already in place).
    """

    version: int | None
    changes: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __str__(self) -> str:
        if not self.changes:
            return "no change"
        if len(self.changes) == 1 and self.changes[0].kind != "source":
            return f"version {self.version}: {self.changes[0]}"
        return f"version {self.version}:\n" + "\n".join(f"  {c}" for c in self.changes)


@dataclass(frozen=True)
class Parameter:
    """A parameter as this process holds it now."""

    name: str
    kind: str          # global, class_attr, instance_attr, default, source, ...
    value: Any         # the current value, or the current source for kind "source"
    where: str
    version: int       # parameter version this process has applied (0: the original)


def feedback(value: Any, text: str, *, score: float | None = None) -> None:
    """Attach feedback to `value`, something traced code produced (or raised).

    `text` is what the optimizer reads ("The number needs to be larger.");
    `score` optionally goes with it. `value` may be an exception raised by a
    marked function: the optimizer then sees its traceback annotated on the
    marked source. Raises `UnknownValue` when no traced code produced `value`
    in the current episode, and `NotConnected` when tracing is off.
    """
    if not isinstance(text, str):
        raise TypeError(f"feedback text must be a str, got {type(text).__name__}")
    if score is not None and not isinstance(score, (int, float)):
        raise TypeError(f"score must be a number, got {type(score).__name__}")
    rt = runtime.require()
    # The daemon must hold the events that produced the value before it
    # reads the feedback that points at them; both go over one connection.
    runtime.flush(_REQUEST_TIMEOUT)
    node, episode = runtime.with_resolver(lambda resolver, ep: (_node_of(resolver, value), ep))
    if node is None:
        raise UnknownValue(_unknown_value_message(value))
    runtime.send(m.Feedback(episode=episode, node=node, text=text,
                            score=None if score is None else float(score)))
    runtime.note_feedback()
    del rt


def step(timeout: float = DEFAULT_STEP_TIMEOUT, **options: Any) -> StepResult:
    """Run one optimisation step on the feedback given so far; block until it is live here.

    The feedback of every process of the session since the last step is
    optimised together. Returns what changed once this process has applied
    the new version (other processes of the session get it too). Options are
    passed to the optimizer for this step (e.g. ``use_cache=False``).

    Raises `LLMFailed`, `BudgetExhausted` or `SuggestionRejected` (all
    `StepFailed`) with the reason; the program can catch them and go on.
    """
    deadline = time.monotonic() + timeout
    runtime.require()
    if not runtime.flush(min(timeout, _REQUEST_TIMEOUT)):
        raise StepFailed("could not send the trace to the optimizer in time; is the daemon overloaded?")
    options = dict(options)
    if "llm" not in options:
        configured = _configured_llm()
        if configured:
            # The daemon may have been started by another program with another
            # environment: the model this program was configured with travels
            # with its request and becomes the session's setting.
            options["llm"] = configured
    request = m.StepRequest(request_id=runtime.next_request_id(), options=options)
    done = _request_as_step_failure(request, deadline)
    if done.error:
        raise STEP_ERRORS_BY_KIND.get(done.error_kind or "", StepFailed)(done.error, done.error_kind or "step_failed")
    changes = [Change(c.get("name", "?"), c.get("kind", "value"), c.get("old"), c.get("new"))
               for c in done.changes]
    if done.version is not None and changes:
        _wait_until_applied(done.version, deadline)
    # The feedback of this episode has been consumed: release its values so
    # memory returns to where it was, and start a fresh episode.
    runtime.new_episode(_remaining(deadline))
    return StepResult(version=done.version if changes else None, changes=changes)


def parameters() -> dict[str, Parameter]:
    """The parameters this process knows, by name, with the version applied here."""
    from tracer import params

    version = runtime.applied_version()
    result: dict[str, Parameter] = {}
    for record in list(params.registry.records()):
        try:
            value = record.get()
        except Exception as exc:  # a location that vanished (deleted global, collected instance)
            value = f"<unavailable: {exc}>"
        result[record.name] = Parameter(record.name, record.kind, value, record.where, version)
    return result


def session(name: str, **options: Any) -> str:
    """Join (or create) the optimisation session `name` from code; return its name.

    Starts tracing if the program was not started by `trace-run`. Joining
    another session than the current one reconnects; the session's latest
    parameters are applied before this returns.
    """
    current = runtime.current()
    if current is not None and not current._stopped and current.session == name:
        return name
    config = current.config if current is not None else None
    if current is not None:
        runtime.stop()
    overrides = {"session": name, **options}
    if config is not None:
        runtime.start(config, **overrides)
    else:
        runtime.start(None, **overrides)
    return name


def new_episode() -> int:
    """End the current episode (its values are released); return the new episode's number."""
    return runtime.new_episode()


def rollback(version: int | None = None, timeout: float = 30.0) -> StepResult:
    """Go back to parameter `version` (default: the one before the latest) in every process.

    Blocks until this process has applied it.
    """
    deadline = time.monotonic() + timeout
    rt = runtime.require()
    reply = _request_as_step_failure(m.Request(request_id=runtime.next_request_id(), command="rollback",
                                               args={"session": rt.session, "version": version}), deadline)
    if not reply.ok:
        raise StepFailed(f"rollback failed: {reply.error}")
    data = reply.data or {}
    changes = [Change(c.get("name", "?"), c.get("kind", "value"), c.get("old"), c.get("new"))
               for c in data.get("changes", [])]
    if changes:
        _wait_until_applied(data["version"], deadline)
    return StepResult(version=data.get("version"), changes=changes)


# -- helpers -----------------------------------------------------------------

def _node_of(resolver: Any, value: Any) -> int | None:
    if isinstance(value, BaseException):
        finder = getattr(resolver, "node_for_exception", None)
        if finder is not None:
            return finder(value)
    return resolver.node_for_value(value)


def _request_as_step_failure(request: Any, deadline: float) -> Any:
    """runtime.request(), with the transport's failures raised as `StepFailed`.

    Programs catch `tracer.StepFailed` around step() and go on (the examples
    do); a slow daemon or one that died mid-step must not escape that as a
    transport error of another class.
    """
    from tracer.transport import ConnectionLost, DaemonError, RequestTimeout

    try:
        return runtime.request(request, timeout=_remaining(deadline))
    except RequestTimeout as exc:
        raise StepFailed(f"{exc}; the daemon goes on with it, and a new version it makes is applied here "
                         "when it arrives", "timeout") from None
    except ConnectionLost as exc:
        raise StepFailed(f"the connection to the optimizer daemon was lost before it answered ({exc}); "
                         "the program goes on with its current parameters", "connection_lost") from None
    except DaemonError as exc:
        raise StepFailed(f"the optimizer daemon refused the request: {exc}", exc.code) from None


def _configured_llm() -> str | None:
    """The LLM this program was configured with (--llm, [tool.trace] llm, TRACE_LLM)."""
    try:
        from tracer.config import TraceConfig

        return TraceConfig.from_environ().llm or None
    except Exception:  # a bad TRACE_* variable was already reported by trace-run
        return os.environ.get("TRACE_LLM") or None


def _wait_until_applied(version: int, deadline: float) -> None:
    results = runtime.wait_for_patch(version, _remaining(deadline))
    if results is None:
        raise StepFailed(f"parameter version {version} was not applied in this process in time")
    failed = [r for r in results if not r.ok]
    if failed:
        reasons = "; ".join(f"{r.name}: {r.error}" for r in failed)
        raise SuggestionRejected(f"version {version} could not be applied here ({reasons}); "
                                 "the previous version stays and the reason is fed back to the optimizer",
                                 "suggestion_rejected")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise StepFailed("timed out waiting for the optimizer")
    return left


def _unknown_value_message(value: Any) -> str:
    from tracer import marking

    marked = sorted(f"{entry.module}:{entry.qualname}" for entry in list(marking.registry.values()))
    shown = ", ".join(marked[:20]) + (f" and {len(marked) - 20} more" if len(marked) > 20 else "")
    kind = type(value).__name__
    return (f"feedback() got a {kind} that no traced function produced in the current episode. "
            "Give feedback on the return value of a marked function (or an exception it raised), "
            "before the next step() or new_episode(). Marked functions: "
            + (shown or "none: mark some with @tracer.bundle() or trace-run --target MOD:QUALNAME"))


__all__ = ["Change", "Parameter", "StepResult", "feedback", "new_episode", "parameters",
           "rollback", "session", "step", "NotConnected"]
