"""One optimisation step, from pending feedback to a stored parameter version.

`run_step` is synchronous and runs on a worker thread, never on the event
loop: it builds the episodes' graph from a snapshot of their events, cuts
the feedback subgraph, assembles the `StepInput` (parameters, memory,
rejections), calls the optimizer (which may call an LLM for a long time),
validates what it suggests and commits everything in one transaction. The
loop thread then broadcasts the patch.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from optimizer_service.graph import GraphBuilder, feedback_subgraph, trainable_in
from optimizer_service.graph_export import to_json
from optimizer_service.step_types import (FeedbackItem, Optimizer, ParamState,
                                          StepError, StepInput, StepOutput, SuggestionRejected)
from optimizer_service.store import StepRecord, Store, diff_params

log = logging.getLogger(__name__)

DEFAULT_MEMORY_SIZE: Final = 5
# Feedback subgraphs up to this many nodes are kept with the step (for
# inspection and export); bigger ones would bloat the database.
MAX_STORED_SUBGRAPH_NODES: Final = 20_000


@dataclass
class EpisodeSnapshot:
    """The events of one episode as they were when the step started."""

    client_id: int
    episode: int
    events: list[list]


@dataclass
class StepJob:
    """Everything the worker thread needs; taken on the loop thread, then never shared."""

    session: str
    options: dict[str, Any]
    config: dict[str, Any]
    episodes: list[EpisodeSnapshot]
    functions: dict[int, dict[str, Any]]
    sites: dict[int, dict[str, Any]]


@dataclass
class StepResult:
    """What the loop thread needs to answer the requester and patch the session."""

    ok: bool
    version: int | None = None                # new version, or the current one when nothing changed
    changes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    step_id: int | None = None


def current_params(store: Store, session: str) -> dict[str, dict[str, Any]]:
    """The session's parameters now: definitions overlaid with the latest version."""
    params = {name: {"kind": "source" if d.get("kind") == "source" else "value", "value": d.get("value")}
              for name, d in store.param_definitions(session).items()}
    latest = store.latest_version(session)
    if latest:
        params.update(store.version(session, latest).params)
    return params


class SourceFunctions:
    """Which function each source parameter is the source of, from the session's FunctionDefs.

    A source ParamDef names its function by `where` as ``module:qualname``
    (tracer/params.py), the same module and qualname as the function's
    FunctionDef, whose id is what call nodes carry as ``func["id"]``. The
    reference is parsed here and nowhere else; everything downstream
    (choosing the parameters of a step, the optimizer's ``__code`` lines)
    compares function ids only.
    """

    def __init__(self, functions: dict[int, dict[str, Any]]) -> None:
        self._functions = functions
        self._by_name: dict[tuple[str, str], set[int]] = {}
        self._by_qualname: dict[str, set[int]] = {}
        for func_id, fdef in functions.items():
            module, qualname = fdef.get("module"), fdef.get("qualname")
            if isinstance(module, str) and isinstance(qualname, str):
                self._by_name.setdefault((module, qualname), set()).add(func_id)
                self._by_qualname.setdefault(qualname, set()).add(func_id)

    def function_of(self, definition: dict[str, Any]) -> int | None:
        """The function id of a source ParamDef (as a dict), or None when no FunctionDef matches exactly one."""
        reference = definition.get("where") or definition.get("name")
        if not isinstance(reference, str) or not reference:
            return None
        head, colon, tail = reference.partition(":")
        # "module:qualname"; a bare qualname (no module) only when one function has it.
        candidates = self._by_name.get((head, tail)) if colon else self._by_qualname.get(head)
        if candidates and len(candidates) == 1:
            return next(iter(candidates))
        return None

    def of_sources(self, definitions: dict[str, dict[str, Any]]) -> dict[str, int | None]:
        """Function id (or None) of every source parameter among `definitions` (name -> ParamDef dict)."""
        return {name: self.function_of(d) for name, d in definitions.items() if d.get("kind") == "source"}

    def definition(self, func_id: int | None) -> dict[str, Any] | None:
        """The FunctionDef (as a dict) of `func_id`, None if unknown."""
        return self._functions.get(func_id) if func_id is not None else None


def _param_state(name: str, definition: dict[str, Any], value: Any, func_id: int | None,
                 sources: SourceFunctions) -> ParamState:
    state = ParamState(name=name, type=str(definition.get("type", type(value).__name__)), value=value,
                       kind=str(definition.get("kind", "value")), constraint=definition.get("constraint"))
    if state.kind == "source":
        state.type = "code"
        state.func_id = func_id
        fdef = sources.definition(func_id)
        if fdef:
            state.signature = fdef.get("signature")
            state.freevars = list(fdef.get("freevars") or [])
        else:
            # The optimizer still sees the source, but cannot tell which calls run it.
            log.warning("source parameter %r names function %r, of which the session has no (or more than one) "
                        "FunctionDef", name, definition.get("where") or name)
    return state


def validate_suggestion(output: StepOutput, params: dict[str, ParamState]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split the optimizer's suggestion into (accepted, rejected name -> reason).

    The optimizer validates types itself; this is the daemon's last line:
    only parameters it was given, values the wire can carry, sources that
    keep the function's name, signature and free variables.
    """
    accepted: dict[str, Any] = {}
    rejected = dict(output.rejected)
    for name, value in output.suggestion.items():
        state = params.get(name)
        if state is None:
            rejected[name] = f"{name!r} is not a trainable parameter of this step (known: {', '.join(sorted(params))})"
            continue
        try:
            msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            rejected[name] = f"the value cannot be sent to the processes: {exc}"
            continue
        if state.kind == "source":
            problem = _source_problem(name, value, state)
            if problem:
                rejected[name] = problem
                continue
        accepted[name] = value
    return accepted, rejected


def _source_problem(name: str, value: Any, state: ParamState) -> str | None:
    if not isinstance(value, str):
        return f"new source for {name!r} must be a str, got {type(value).__name__}"
    from protocol.source_rules import SourceRejected, check_function_source
    func_name = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    try:
        check_function_source(value, name=func_name, signature=state.signature or "", freevars=state.freevars)
    except SourceRejected as exc:
        return str(exc)
    return None


def run_step(store: Store, optimizer: Optimizer, job: StepJob) -> StepResult:
    """Run one step for `job.session` and persist it; never raises for a failed step."""
    started = time.time()
    session = job.session
    step_index = store.step_count(session)
    feedback_rows = store.pending_feedback(session)
    rejection_rows = store.pending_rejections(session)
    if not feedback_rows and not rejection_rows:
        return StepResult(False, error="no feedback was given since the last step: call "
                          "tracer.feedback(value, text) on an output first", error_kind="step_failed")

    builder = GraphBuilder(job.functions, job.sites)
    for snap in job.episodes:
        builder.add_events(snap.client_id, snap.episode, snap.events)
    targets = [("v", f.client_id, f.node) for f in feedback_rows]
    subgraph = feedback_subgraph(builder.graph, targets, in_place=True)

    definitions = store.param_definitions(session)
    trainable = {name for name, d in definitions.items() if d.get("trainable", True)}
    sources = SourceFunctions(job.functions)
    source_ids = sources.of_sources(definitions)
    names, funcs = trainable_in(subgraph)
    # A trainable function called in the subgraph brings its source parameter.
    chosen = (names | {name for name, func_id in source_ids.items() if func_id in funcs}) & trainable
    if not chosen:
        # Feedback whose graph is gone (daemon restart) or that touches no
        # parameter directly: show the optimizer every trainable parameter.
        chosen = trainable
    if not chosen:
        return StepResult(False, error=f"session {session!r} has no trainable parameter: mark values with "
                          "tracer.param(...) or functions with @tracer.bundle(trainable=True) (or --param / "
                          "--trainable)", error_kind=StepError.kind)
    values = current_params(store, session)
    params = {name: _param_state(name, definitions[name], values.get(name, {}).get("value"),
                                 source_ids.get(name), sources)
              for name in sorted(chosen)}

    memory_size = int(job.options.get("memory_size", job.config.get("memory_size", DEFAULT_MEMORY_SIZE)))
    problem = StepInput(
        session=session, step_index=step_index, graph=subgraph,
        feedback=[FeedbackItem(node=("v", f.client_id, f.node), text=f.text, score=f.score,
                               client=f.client_id, episode=f.episode) for f in feedback_rows],
        params=params, memory=store.memory(session, memory_size),
        rejections=[text for _, text in rejection_rows], options=dict(job.options),
    )
    record = StepRecord(session=session, step_index=step_index, started=started, finished=started, ok=False)
    if subgraph.number_of_nodes() <= MAX_STORED_SUBGRAPH_NODES:
        record.subgraph_json = to_json(subgraph)
    feedback_ids = [f.id for f in feedback_rows]
    rejection_ids = [rid for rid, _ in rejection_rows]

    try:
        output = optimizer.step(problem)
    except StepError as exc:
        return _commit_failure(store, record, str(exc) or type(exc).__name__, exc.kind)
    except Exception as exc:  # a bug or an SDK error the optimizer did not wrap
        log.exception("optimizer failed in session %s", session)
        return _commit_failure(store, record, f"the optimizer failed: {type(exc).__name__}: {exc}",
                               StepError.kind)

    accepted, rejected = validate_suggestion(output, params)
    record.prompt, record.response, record.reasoning = output.prompt, output.response, output.reasoning
    record.suggestion, record.rejected = dict(output.suggestion), rejected
    record.llm_calls = [_call_record(c) for c in output.llm_calls]
    record.finished = time.time()
    feedback_text = "\n".join(f.text for f in feedback_rows)
    memory_entry = ({name: p.value for name, p in params.items()}, feedback_text)

    if not accepted and rejected and not output.terminate:
        # Keep the feedback pending: the next step sees it again, plus why
        # these suggestions were refused.
        record.error = "every suggestion was rejected: " + "; ".join(f"{n}: {r}" for n, r in rejected.items())
        record.error_kind = SuggestionRejected.kind
        store.commit_step(record, feedback_ids=[], rejection_ids=rejection_ids, new_params=None,
                          changes=[], memory=None)
        return StepResult(False, error=record.error, error_kind=record.error_kind)

    record.ok = True
    new_params = None
    changes: list[dict[str, Any]] = []
    if accepted:
        new_params = {**values}
        for name, value in accepted.items():
            new_params[name] = {"kind": "source" if params[name].kind == "source" else "value", "value": value}
        changes = diff_params(values, new_params)
        if not changes:
            new_params = None  # suggested exactly the current values: no new version
    step_id, version = store.commit_step(record, feedback_ids=feedback_ids, rejection_ids=rejection_ids,
                                         new_params=new_params, changes=changes, memory=memory_entry)
    return StepResult(True, version=version if version is not None else store.latest_version(session),
                      changes=changes, step_id=step_id)


def _commit_failure(store: Store, record: StepRecord, error: str, kind: str) -> StepResult:
    record.finished = time.time()
    record.error, record.error_kind = error, kind
    # The feedback and rejections stay pending so that retrying the step loses nothing.
    store.commit_step(record, feedback_ids=[], rejection_ids=[], new_params=None, changes=[], memory=None)
    return StepResult(False, error=error, error_kind=kind)


def _call_record(call: Any) -> dict[str, Any]:
    data = dataclasses.asdict(call) if dataclasses.is_dataclass(call) else dict(call)
    try:
        msgpack.packb(data.get("request"), use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        data["request"] = repr(data.get("request"))
    return data
