"""Sessions, their processes and episodes, on the daemon's event loop.

A session is named by `Hello.session`; any number of processes join it.
Everything here runs on the event loop thread and returns quickly: events
are appended to their episode as they arrive (the graph is built only when a
step or an export needs it), feedback is committed to SQLite, and a step is
handed to a worker thread so ingest never waits for an optimizer or an LLM.

Memory stays bounded: an episode with no feedback is released once its
process has `keep_idle_episodes` newer ones (or disconnects); an episode
with feedback is kept until a step has consumed it; an episode stops
growing at `max_episode_events` (the excess is counted as dropped).

Durability: an episode's events reach SQLite only once feedback refers to
it (with that feedback, in one transaction), and so do its events arriving
later; the step that consumes the feedback deletes them in its own commit.
After a restart (kill -9 included) a session rebuilds those episodes from
the database, so the next step sees the code, inputs and outputs its
pending feedback is about. Episodes without feedback cost no SQLite write.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

import networkx as nx

from protocol import messages as m
from optimizer_service.graph import GraphBuilder
from optimizer_service.step_types import Optimizer, StepError
from optimizer_service.steps import EpisodeSnapshot, StepJob, StepResult, run_step
from optimizer_service.store import Store, VersionRecord, diff_params

log = logging.getLogger(__name__)

# StepRequest options remembered as the session's configuration (what the
# optimizer factory is given); other options apply to one step only.
SESSION_CONFIG_KEYS: Final = ("llm", "memory_size", "token_budget", "max_llm_calls", "max_cost", "max_tokens",
                              "temperature", "cache", "objective")


@dataclass
class Limits:
    keep_idle_episodes: int = 4        # per process, episodes without feedback
    keep_feedback_episodes: int = 64   # per process, episodes waiting for a step
    max_episode_events: int = 1_000_000


@dataclass
class Episode:
    client_id: int
    number: int
    events: list[list] = field(default_factory=list)
    dropped: int = 0
    closed: bool = False
    feedback: int = 0                  # feedback not yet consumed by a step


@dataclass
class Member:
    """A connected process of a session; `send` queues a message to it."""

    client_id: int
    hello: m.Hello
    send: Callable[[Any], None]
    joined: float = field(default_factory=time.time)
    applied_version: int = 0
    events: int = 0
    dropped: int = 0


class SessionError(Exception):
    """A request about a session cannot be served; the message says why."""


class Session:
    def __init__(self, name: str, manager: "SessionManager"):
        self.name = name
        self.manager = manager
        self.store = manager.store
        self.members: dict[int, Member] = {}
        self.episodes: dict[tuple[int, int], Episode] = {}
        self.functions: dict[int, dict[str, Any]] = dict(self.store.functions(name))
        self.sites: dict[int, dict[str, Any]] = dict(self.store.sites(name))
        for persisted in self.store.persisted_episodes(name):
            # Rebuilt after a restart: its process is gone, so the episode is
            # complete and is released as soon as a step consumed its feedback.
            self.episodes[(persisted.client_id, persisted.episode)] = Episode(
                persisted.client_id, persisted.episode, persisted.events, persisted.dropped,
                closed=True, feedback=1)
        self.step_lock = asyncio.Lock()
        self.feedback_seen = 0          # bumps on every feedback; lets requests join a running step
        self.running: tuple[int, asyncio.Future] | None = None

    # -- ingest (hot, must stay cheap) -------------------------------------

    def ingest(self, member: Member, batch: m.EventBatch) -> None:
        episode = self._episode(member.client_id, batch.episode)
        room = self.manager.limits.max_episode_events - len(episode.events)
        events = batch.events
        if len(events) > room:
            episode.dropped += len(events) - max(room, 0)
            events = events[:max(room, 0)]
        episode.events.extend(events)
        episode.dropped += batch.dropped
        if episode.feedback:
            # Feedback already points at this episode: its later events must survive a crash too.
            self.store.append_episode_events(self.name, episode.client_id, episode.number, events,
                                             len(batch.events) - len(events) + batch.dropped)
        member.events += len(batch.events)
        member.dropped += batch.dropped

    def _episode(self, client_id: int, number: int) -> Episode:
        key = (client_id, number)
        episode = self.episodes.get(key)
        if episode is None:
            episode = self.episodes[key] = Episode(client_id, number)
            self._release_old(client_id)
        return episode

    def _release_old(self, client_id: int) -> None:
        limits = self.manager.limits
        mine = sorted((e for e in self.episodes.values() if e.client_id == client_id), key=lambda e: e.number)
        idle = [e for e in mine if not e.feedback]
        waiting = [e for e in mine if e.feedback]
        # The newest episode is always kept: it is the one being written.
        for episode in idle[:max(0, len(idle) - max(1, limits.keep_idle_episodes))]:
            del self.episodes[(client_id, episode.number)]
        for episode in waiting[:max(0, len(waiting) - limits.keep_feedback_episodes)]:
            # Its feedback text stays in the database; only the graph goes (in memory and on disk).
            del self.episodes[(client_id, episode.number)]
            self.store.forget_episode_events(self.name, client_id, episode.number)

    def close_episode(self, member: Member, number: int) -> None:
        episode = self.episodes.get((member.client_id, number))
        if episode is not None:
            episode.closed = True

    def define(self, member: Member, definitions: m.Definitions) -> None:
        functions = [_asdict(f) for f in definitions.functions]
        params = [_asdict(p) for p in definitions.params]
        for fdef in functions:
            self.functions[fdef["id"]] = fdef
        sites = [_asdict(s) for s in definitions.sites]
        for sdef in sites:
            self.sites[sdef["id"]] = sdef
        if functions or params or sites:
            self.store.save_definitions(self.name, functions, params, sites)

    def add_feedback(self, member: Member, feedback: m.Feedback) -> None:
        # Feedback may overtake its episode's events (the process's flush before
        # it timed out): the episode is opened here so they are kept when they come.
        episode = self._episode(member.client_id, feedback.episode)
        # The first pending feedback of an episode persists the events received so far
        # with it; later ones find them (and their successors) already stored.
        first = not episode.feedback
        self.store.add_feedback(self.name, member.client_id, feedback.episode, feedback.node,
                                feedback.text, feedback.score,
                                episode_events=episode.events if first else None,
                                episode_dropped=episode.dropped if first else 0)
        episode.feedback += 1
        self.feedback_seen += 1

    def record_ack(self, member: Member, ack: m.PatchAck) -> None:
        results = [{"name": r.name, "ok": r.ok, "error": r.error} for r in ack.results]
        self.store.record_application(self.name, ack.version, member.client_id, results)
        if all(r["ok"] for r in results):
            member.applied_version = max(member.applied_version, ack.version)
        else:
            failed = ", ".join(f"{r['name']}: {r['error']}" for r in results if not r["ok"])
            log.info("session %s: process %d rejected part of version %d (%s)",
                     self.name, member.hello.pid, ack.version, failed)

    # -- steps ---------------------------------------------------------------

    async def step(self, options: dict[str, Any]) -> StepResult:
        """Run one step (or join the one running, if no feedback arrived since it started)."""
        if self.running is not None and self.running[0] == self.feedback_seen:
            return await asyncio.shield(self.running[1])
        async with self.step_lock:
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            self.running = (self.feedback_seen, future)
            try:
                result = await self._run_step(options)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: joiners re-raise it themselves
                raise
            else:
                future.set_result(result)
            finally:
                self.running = None
        if result.ok and result.changes:
            self.broadcast(result.version, result.changes, reason=f"step {result.step_id}")
        self._release_consumed()
        return result

    async def _run_step(self, options: dict[str, Any]) -> StepResult:
        manager = self.manager
        updates = {k: v for k, v in options.items() if k in SESSION_CONFIG_KEYS or k.startswith("llm_")}
        config = (self.store.update_session_config(self.name, updates) if updates
                  else self.store.session(self.name).config)
        job = StepJob(
            session=self.name, options=dict(options), config=dict(config),
            # A shallow copy of each event list: later appends do not reach the worker.
            episodes=[EpisodeSnapshot(e.client_id, e.number, list(e.events))
                      for e in self.episodes.values() if e.feedback],
            functions=dict(self.functions), sites=dict(self.sites),
        )
        loop = asyncio.get_running_loop()
        try:
            optimizer = manager.optimizer_for(self.name, config)
        except Exception as exc:
            log.exception("cannot construct the optimizer for session %s", self.name)
            return StepResult(False, error=f"cannot construct the optimizer: {exc}", error_kind=StepError.kind)
        return await loop.run_in_executor(manager.executor, run_step, self.store, optimizer, job)

    def _release_consumed(self) -> None:
        pending = {(f.client_id, f.episode) for f in self.store.pending_feedback(self.name)}
        for key, episode in list(self.episodes.items()):
            if episode.feedback and key not in pending:
                episode.feedback = 0
                if episode.closed or key[0] not in self.members:
                    del self.episodes[key]
        for client_id in {key[0] for key in self.episodes}:
            self._release_old(client_id)

    # -- patches ---------------------------------------------------------------

    def broadcast(self, version: int, changes: list[dict[str, Any]], *, reason: str,
                  request_id: int | None = None) -> int:
        """Send a Patch with `changes` to every connected process; return how many got it."""
        patch = m.Patch(version=version, items=[_patch_item(c["name"], c["kind"], c["new"]) for c in changes],
                        request_id=request_id, reason=reason)
        for member in list(self.members.values()):
            member.send(patch)
        return len(self.members)

    def catch_up_patch(self) -> m.Patch | None:
        """The Patch that brings a joining process from its own values to the latest version."""
        latest = self.store.latest_version(self.name)
        if not latest:
            return None
        changes = diff_params(self.store.initial_params(self.name), self.store.version(self.name, latest).params)
        if not changes:
            return None
        return m.Patch(version=latest, items=[_patch_item(c["name"], c["kind"], c["new"]) for c in changes],
                       reason=f"catch up to version {latest}")

    def rollback(self, target: int | None) -> VersionRecord:
        latest = self.store.latest_version(self.name)
        if target is None:
            if latest == 0:
                raise SessionError(f"session {self.name!r} has no version to roll back from (it is at version 0)")
            target = latest - 1
        if not 0 <= target <= latest:
            raise SessionError(f"session {self.name!r} has versions 0..{latest}; cannot roll back to {target}")
        record = self.store.add_rollback_version(self.name, target)
        self.broadcast(record.version, record.changes, reason=f"rollback to version {target}")
        return record

    # -- inspection -------------------------------------------------------------

    def graph(self, episode: int | None = None) -> nx.DiGraph:
        """The graph of the live episodes (all, or those numbered `episode`)."""
        chosen = [e for e in self.episodes.values() if episode is None or e.number == episode]
        if not chosen:
            live = sorted({e.number for e in self.episodes.values()})
            raise SessionError(
                f"session {self.name!r} has no live episode {episode if episode is not None else ''}".rstrip()
                + f" (live episodes: {', '.join(map(str, live)) or 'none'})")
        builder = GraphBuilder(self.functions, self.sites)
        for e in sorted(chosen, key=lambda e: (e.client_id, e.number)):
            builder.add_events(e.client_id, e.number, e.events)
        return builder.graph

    def status(self) -> dict[str, Any]:
        store = self.store
        latest = store.latest_version(self.name)
        return {
            "name": self.name,
            "version": latest,
            "steps": store.step_count(self.name),
            "pending_feedback": len(store.pending_feedback(self.name)),
            "episodes": len(self.episodes),
            "events_in_memory": sum(len(e.events) for e in self.episodes.values()),
            "processes": [
                {"client_id": mb.client_id, "pid": mb.hello.pid, "argv": list(mb.hello.argv),
                 "name": mb.hello.client_name, "python": mb.hello.python,
                 "connected_s": round(time.time() - mb.joined, 1), "applied_version": mb.applied_version,
                 "events": mb.events, "dropped": mb.dropped}
                for mb in self.members.values()
            ],
            "llm": store.llm_totals(self.name),
        }


class SessionManager:
    """All sessions of the daemon; what the server calls for every message."""

    def __init__(self, store: Store, executor: Executor,
                 optimizer_factory: Callable[[str, dict[str, Any], str], Optimizer], limits: Limits | None = None):
        self.store = store
        self.executor = executor
        self.optimizer_factory = optimizer_factory
        self.limits = limits or Limits()
        self.sessions: dict[str, Session] = {}
        self._optimizers: dict[str, tuple[Any, Optimizer]] = {}

    def session(self, name: str, *, create: bool = False) -> Session:
        session = self.sessions.get(name)
        if session is None:
            if not create:
                self.store.session(name)  # raises UnknownSession with the known names
            else:
                self.store.ensure_session(name)
            session = self.sessions[name] = Session(name, self)
        return session

    def join(self, hello: m.Hello, send: Callable[[Any], None]) -> tuple[Session, Member]:
        session = self.session(hello.session, create=True)
        client_id = self.store.add_client(hello.session, pid=hello.pid, argv=list(hello.argv), python=hello.python,
                                          name=hello.client_name, granularity=hello.granularity)
        member = Member(client_id, hello, send, applied_version=0)
        session.members[client_id] = member
        return session, member

    def leave(self, session: Session, member: Member) -> None:
        session.members.pop(member.client_id, None)
        self.store.client_left(member.client_id)
        for key, episode in list(session.episodes.items()):
            if key[0] == member.client_id and not episode.feedback:
                del session.episodes[key]

    def optimizer_for(self, session: str, config: dict[str, Any]) -> Optimizer:
        """The session's optimizer, rebuilt when its configuration changed."""
        key = repr(sorted(config.items()))
        cached = self._optimizers.get(session)
        if cached is None or cached[0] != key:
            cached = self._optimizers[session] = (key, self.optimizer_factory(session, config, str(self.store.path)))
        return cached[1]

    def status(self) -> list[dict[str, Any]]:
        names = [s.name for s in self.store.sessions()]
        return [self.session(name).status() for name in names]


def _patch_item(name: str, kind: str, value: Any) -> m.PatchItem:
    if kind == "source":
        return m.PatchItem(name=name, kind="source", source=value)
    return m.PatchItem(name=name, kind="value", value=value)


def _asdict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)
