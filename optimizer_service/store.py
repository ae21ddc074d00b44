"""SQLite persistence of everything the daemon must not lose.

One database file (WAL) in the state directory holds sessions, the processes
that joined them, function and parameter definitions, every parameter
version (which step or rollback made it, which processes applied it),
feedback, optimizer memory, and every step with its prompt, response, token
usage, cost and latency. Every logical change is one committed transaction,
so after ``kill -9`` and a restart the daemon continues where it was.

Values (parameter values, memory entries) are stored as msgpack blobs: they
are the wire's plain data (bytes included) and come back exactly as sent.

Threads: the event loop and the step worker both use the store; each thread
gets its own connection (SQLite connections must not be shared across
threads), and WAL lets readers run while a step commits.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

from optimizer_service.migrations import apply_migrations
from optimizer_service.step_types import MemoryEntry

log = logging.getLogger(__name__)

COMPONENT: Final = "daemon"

# Append only: never edit a migration that has shipped (see migrations.py).
MIGRATIONS: Final[list[str]] = [
    """
    CREATE TABLE sessions (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL,
        config BLOB NOT NULL,               -- msgpack dict: llm, memory_size, ...
        latest_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE clients (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- Welcome.client_id, unique across restarts
        session TEXT NOT NULL,
        pid INTEGER NOT NULL,
        argv BLOB NOT NULL,
        python TEXT NOT NULL,
        name TEXT NOT NULL,
        granularity TEXT NOT NULL,
        joined REAL NOT NULL,
        left_at REAL
    );
    CREATE TABLE functions (
        session TEXT NOT NULL,
        id INTEGER NOT NULL,
        body BLOB NOT NULL,                 -- msgpack FunctionDef fields
        updated REAL NOT NULL,
        PRIMARY KEY (session, id)
    );
    CREATE TABLE params (
        session TEXT NOT NULL,
        name TEXT NOT NULL,
        body BLOB NOT NULL,                 -- msgpack ParamDef fields, latest seen
        initial BLOB NOT NULL,              -- msgpack value first seen: version 0
        updated REAL NOT NULL,
        PRIMARY KEY (session, name)
    );
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        step_index INTEGER NOT NULL,
        started REAL NOT NULL,
        finished REAL NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        error_kind TEXT,
        version INTEGER,                    -- the version it created, if any
        prompt TEXT NOT NULL DEFAULT '',
        response TEXT NOT NULL DEFAULT '',
        reasoning TEXT NOT NULL DEFAULT '',
        suggestion BLOB,
        rejected BLOB,
        llm_calls BLOB,                     -- msgpack list of LLMCall fields
        llm_call_count INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        latency_s REAL NOT NULL DEFAULT 0,
        subgraph TEXT                       -- node_link JSON of the feedback subgraph
    );
    CREATE INDEX steps_by_session ON steps(session, id);
    CREATE TABLE versions (
        session TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        origin TEXT NOT NULL,               -- 'step' or 'rollback'
        step_id INTEGER REFERENCES steps(id),
        rollback_of INTEGER,                -- the older version a rollback restored
        params BLOB NOT NULL,               -- msgpack {name: {"kind", "value"}}, complete
        changes BLOB NOT NULL,              -- msgpack [{"name", "kind", "old", "new"}]
        PRIMARY KEY (session, version)
    );
    CREATE TABLE applications (
        session TEXT NOT NULL,
        version INTEGER NOT NULL,
        client_id INTEGER NOT NULL,
        at REAL NOT NULL,
        ok INTEGER NOT NULL,
        results BLOB NOT NULL               -- msgpack [{"name", "ok", "error"}]
    );
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        episode INTEGER NOT NULL,
        node INTEGER NOT NULL,
        text TEXT NOT NULL,
        score REAL,
        created REAL NOT NULL,
        step_id INTEGER                     -- the step that consumed it
    );
    CREATE INDEX feedback_pending ON feedback(session, step_id);
    CREATE TABLE rejections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        version INTEGER NOT NULL,
        name TEXT NOT NULL,
        reason TEXT NOT NULL,
        client_id INTEGER,
        created REAL NOT NULL,
        step_id INTEGER                     -- the step that was told about it
    );
    CREATE TABLE memory (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        step_id INTEGER NOT NULL,
        params BLOB NOT NULL,
        feedback TEXT NOT NULL
    );
    CREATE INDEX memory_by_session ON memory(session, id);
    """,
    # 2: what a restart needs to rebuild the graph that pending feedback points to.
    """
    CREATE TABLE sites (
        session TEXT NOT NULL,
        id INTEGER NOT NULL,
        body BLOB NOT NULL,                 -- msgpack SiteDef fields
        updated REAL NOT NULL,
        PRIMARY KEY (session, id)
    );
    CREATE TABLE episode_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- arrival order of the chunks of one episode
        session TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        episode INTEGER NOT NULL,
        events BLOB NOT NULL,               -- msgpack list of events, as received
        dropped INTEGER NOT NULL DEFAULT 0  -- events of this chunk the daemon or the process dropped
    );
    CREATE INDEX episode_events_by_episode ON episode_events(session, client_id, episode, id);
    """,
]

# Persisted events of episodes that no pending feedback refers to any more:
# the step that consumed their last feedback deletes them in its own commit.
_DELETE_CONSUMED_EVENTS: Final = (
    "DELETE FROM episode_events WHERE session = ? AND NOT EXISTS ("
    " SELECT 1 FROM feedback f WHERE f.session = episode_events.session"
    " AND f.client_id = episode_events.client_id AND f.episode = episode_events.episode"
    " AND f.step_id IS NULL)"
)


class StoreError(RuntimeError):
    """The state database refused an operation; the message says what to do."""


class UnknownSession(StoreError):
    """No session of that name exists in the database."""


class UnknownVersion(StoreError):
    """The session has no parameter version with that number."""


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes | None) -> Any:
    if blob is None:
        return None
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


@dataclass
class SessionRecord:
    name: str
    created: float
    config: dict[str, Any]
    latest_version: int


@dataclass
class VersionRecord:
    """One parameter version. ``params`` is complete: {name: {"kind", "value"}}."""

    session: str
    version: int
    created: float
    origin: str                      # "initial", "step" or "rollback"
    params: dict[str, dict[str, Any]]
    changes: list[dict[str, Any]] = field(default_factory=list)
    step_id: int | None = None
    rollback_of: int | None = None


@dataclass
class PendingFeedback:
    id: int
    client_id: int
    episode: int
    node: int
    text: str
    score: float | None


@dataclass
class PersistedEpisode:
    """The events of one episode kept for its pending feedback, chunks joined in arrival order."""

    client_id: int
    episode: int
    events: list[list]
    dropped: int


@dataclass
class StepRecord:
    """What `commit_step` persists about one optimisation step."""

    session: str
    step_index: int
    started: float
    finished: float
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    prompt: str = ""
    response: str = ""
    reasoning: str = ""
    suggestion: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    llm_calls: list[dict[str, Any]] = field(default_factory=list)
    subgraph_json: str | None = None


class Store:
    """The daemon's database. Safe to use from several threads (one connection each)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()  # serialises writers inside this process
        try:
            apply_migrations(self._conn, COMPONENT, MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot use the state database {self.path}: {exc}; move it away or set "
                f"TRACE_STATE_DIR to another directory"
            ) from exc

    def connect(self) -> sqlite3.Connection:
        """A new connection to the same database (WAL, autocommit, 10 s busy timeout).

        Other components (the LLM ledger) call this to keep their own tables
        in the same file through `apply_migrations(conn, "llm", [...])`.
        """
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed transaction survives a process crash
        # (kill -9); only a power loss can drop the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- sessions ---------------------------------------------------------

    def ensure_session(self, name: str) -> SessionRecord:
        """Return session `name`, creating it (empty config, version 0) if new."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sessions(name, created, config) VALUES (?, ?, ?)",
                (name, time.time(), pack({})),
            )
        return self.session(name)

    def session(self, name: str) -> SessionRecord:
        row = self._conn.execute(
            "SELECT name, created, config, latest_version FROM sessions WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            known = ", ".join(s.name for s in self.sessions()) or "none"
            raise UnknownSession(f"no session named {name!r} in {self.path} (known sessions: {known})")
        return SessionRecord(row[0], row[1], unpack(row[2]), row[3])

    def sessions(self) -> list[SessionRecord]:
        rows = self._conn.execute(
            "SELECT name, created, config, latest_version FROM sessions ORDER BY created"
        ).fetchall()
        return [SessionRecord(r[0], r[1], unpack(r[2]), r[3]) for r in rows]

    def update_session_config(self, name: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge `updates` into the session's config; return the result."""
        with self._transaction() as conn:
            row = conn.execute("SELECT config FROM sessions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownSession(f"no session named {name!r}")
            config = unpack(row[0])
            config.update(updates)
            conn.execute("UPDATE sessions SET config = ? WHERE name = ?", (pack(config), name))
        return config

    # -- clients ----------------------------------------------------------

    def add_client(self, session: str, *, pid: int, argv: list[str], python: str, name: str,
                   granularity: str) -> int:
        """Record a process joining `session`; return its client id (never reused)."""
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO clients(session, pid, argv, python, name, granularity, joined)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session, pid, pack(list(argv)), python, name, granularity, time.time()),
            )
            return int(cur.lastrowid)

    def client_left(self, client_id: int) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE clients SET left_at = ? WHERE id = ?", (time.time(), client_id))

    def clients(self, session: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT id, pid, argv, python, name, granularity, joined, left_at FROM clients"
            " WHERE session = ? ORDER BY id", (session,)
        ).fetchall()
        return [
            {"client_id": r[0], "pid": r[1], "argv": unpack(r[2]), "python": r[3], "name": r[4],
             "granularity": r[5], "joined": r[6], "left": r[7]}
            for r in rows
        ]

    # -- definitions ------------------------------------------------------

    def save_definitions(self, session: str, functions: list[dict[str, Any]],
                         params: list[dict[str, Any]], sites: list[dict[str, Any]] = ()) -> None:
        """Remember function, parameter and site definitions (a parameter's first value seen is version 0)."""
        now = time.time()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO sites(session, id, body, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(session, id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                [(session, int(sdef["id"]), pack(sdef), now) for sdef in sites],
            )
            for fdef in functions:
                conn.execute(
                    "INSERT INTO functions(session, id, body, updated) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(session, id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                    (session, int(fdef["id"]), pack(fdef), now),
                )
            for pdef in params:
                conn.execute(
                    "INSERT INTO params(session, name, body, initial, updated) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(session, name) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                    (session, pdef["name"], pack(pdef), pack(pdef.get("value")), now),
                )

    def functions(self, session: str) -> dict[int, dict[str, Any]]:
        rows = self._conn.execute("SELECT id, body FROM functions WHERE session = ?", (session,))
        return {r[0]: unpack(r[1]) for r in rows}

    def sites(self, session: str) -> dict[int, dict[str, Any]]:
        """{site id: SiteDef fields} of every operation site a process of the session defined."""
        rows = self._conn.execute("SELECT id, body FROM sites WHERE session = ?", (session,))
        return {r[0]: unpack(r[1]) for r in rows}

    def param_definitions(self, session: str) -> dict[str, dict[str, Any]]:
        """{name: ParamDef fields} as last defined by a process of the session."""
        rows = self._conn.execute("SELECT name, body FROM params WHERE session = ? ORDER BY name", (session,))
        return {r[0]: unpack(r[1]) for r in rows}

    def initial_params(self, session: str) -> dict[str, dict[str, Any]]:
        """Version 0: every parameter's first value seen, as {name: {"kind", "value"}}."""
        rows = self._conn.execute(
            "SELECT name, body, initial FROM params WHERE session = ? ORDER BY name", (session,)
        )
        return {r[0]: {"kind": _patch_kind(unpack(r[1])), "value": unpack(r[2])} for r in rows}

    # -- versions ---------------------------------------------------------

    def latest_version(self, session: str) -> int:
        row = self._conn.execute("SELECT latest_version FROM sessions WHERE name = ?", (session,)).fetchone()
        return row[0] if row else 0

    def version(self, session: str, version: int) -> VersionRecord:
        """Parameter version `version` of `session` (0 is the programs' own values)."""
        if version == 0:
            created = self.session(session).created
            return VersionRecord(session, 0, created, "initial", self.initial_params(session))
        row = self._conn.execute(
            "SELECT version, created, origin, step_id, rollback_of, params, changes FROM versions"
            " WHERE session = ? AND version = ?", (session, version)
        ).fetchone()
        if row is None:
            latest = self.latest_version(session)
            raise UnknownVersion(
                f"session {session!r} has no parameter version {version} (versions are 0..{latest})"
            )
        return _version_record(session, row)

    def versions(self, session: str) -> list[VersionRecord]:
        """Every stored version of `session`, oldest first (version 0 not included)."""
        rows = self._conn.execute(
            "SELECT version, created, origin, step_id, rollback_of, params, changes FROM versions"
            " WHERE session = ? ORDER BY version", (session,)
        ).fetchall()
        return [_version_record(session, r) for r in rows]

    def add_rollback_version(self, session: str, target: int) -> VersionRecord:
        """Store a new version equal to `target`; return it (its changes vs. the latest)."""
        with self._transaction() as conn:
            latest = self.latest_version(session)
            current = self.version(session, latest).params
            restored = self.version(session, target).params
            # A parameter defined after `target` keeps its current value.
            params = {**current, **restored}
            changes = diff_params(current, params)
            version = self._insert_version(conn, session, latest + 1, "rollback", params, changes,
                                           rollback_of=target)
        return self.version(session, version)

    def _insert_version(self, conn: sqlite3.Connection, session: str, version: int, origin: str,
                        params: dict[str, Any], changes: list[dict[str, Any]], *,
                        step_id: int | None = None, rollback_of: int | None = None) -> int:
        conn.execute(
            "INSERT INTO versions(session, version, created, origin, step_id, rollback_of, params, changes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (session, version, time.time(), origin, step_id, rollback_of, pack(params), pack(changes)),
        )
        conn.execute("UPDATE sessions SET latest_version = ? WHERE name = ?", (version, session))
        return version

    def record_application(self, session: str, version: int, client_id: int,
                           results: list[dict[str, Any]]) -> None:
        """Remember a process's PatchAck for `version` (per item: ok, or the error)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO applications(session, version, client_id, at, ok, results) VALUES (?, ?, ?, ?, ?, ?)",
                (session, version, client_id, time.time(), int(all(r["ok"] for r in results)), pack(results)),
            )
            for result in results:
                if not result["ok"]:
                    conn.execute(
                        "INSERT INTO rejections(session, version, name, reason, client_id, created)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (session, version, result["name"],
                         result.get("error") or "rejected without a reason", client_id, time.time()),
                    )

    def applications(self, session: str, version: int) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT a.client_id, c.pid, a.at, a.ok, a.results FROM applications a"
            " LEFT JOIN clients c ON c.id = a.client_id WHERE a.session = ? AND a.version = ? ORDER BY a.at",
            (session, version),
        )
        return [{"client_id": r[0], "pid": r[1], "at": r[2], "ok": bool(r[3]), "results": unpack(r[4])}
                for r in rows]

    # -- feedback, rejections, memory ---------------------------------------

    def add_feedback(self, session: str, client_id: int, episode: int, node: int, text: str,
                     score: float | None, *, episode_events: list[list] | None = None,
                     episode_dropped: int = 0) -> int:
        """Store pending feedback; return its id.

        `episode_events` (the events of the episode received so far, when
        this is its first pending feedback) are persisted in the same
        transaction, so after a crash the feedback never lacks its trace.
        """
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO feedback(session, client_id, episode, node, text, score, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session, client_id, episode, node, text, score, time.time()),
            )
            if episode_events is not None:
                self._insert_events(conn, session, client_id, episode, episode_events, episode_dropped)
            return int(cur.lastrowid)

    def append_episode_events(self, session: str, client_id: int, episode: int, events: list[list],
                              dropped: int = 0) -> None:
        """Persist more events of an episode that pending feedback refers to."""
        with self._transaction() as conn:
            self._insert_events(conn, session, client_id, episode, events, dropped)

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, session: str, client_id: int, episode: int,
                       events: list[list], dropped: int) -> None:
        if events or dropped:
            conn.execute(
                "INSERT INTO episode_events(session, client_id, episode, events, dropped) VALUES (?, ?, ?, ?, ?)",
                (session, client_id, episode, pack(events), dropped),
            )

    def forget_episode_events(self, session: str, client_id: int, episode: int) -> None:
        """Delete the persisted events of one episode (its graph is no longer kept)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM episode_events WHERE session = ? AND client_id = ? AND episode = ?",
                         (session, client_id, episode))

    def persisted_episodes(self, session: str) -> list[PersistedEpisode]:
        """The persisted episodes of `session` that pending feedback refers to, by (client, episode).

        Chunks whose feedback a step already consumed are left out (and
        deleted by the next step's commit).
        """
        rows = self._conn.execute(
            "SELECT e.client_id, e.episode, e.events, e.dropped FROM episode_events e"
            " WHERE e.session = ? AND EXISTS (SELECT 1 FROM feedback f WHERE f.session = e.session"
            " AND f.client_id = e.client_id AND f.episode = e.episode AND f.step_id IS NULL)"
            " ORDER BY e.client_id, e.episode, e.id", (session,)
        )
        episodes: dict[tuple[int, int], PersistedEpisode] = {}
        damaged: set[tuple[int, int]] = set()
        for client_id, number, blob, dropped in rows:
            key = (client_id, number)
            try:
                events = unpack(blob)
                if not isinstance(events, list):
                    raise ValueError(f"expected a list of events, found {type(events).__name__}")
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # A partial graph would mislead the optimizer; without one the
                # step still gets the feedback text and every trainable parameter.
                log.warning("session %s: persisted events of client %d episode %d are unreadable (%s); "
                            "the next step gets its feedback without its trace", session, client_id, number, exc)
                damaged.add(key)
                continue
            episode = episodes.get(key)
            if episode is None:
                episode = episodes[key] = PersistedEpisode(client_id, number, [], 0)
            episode.events.extend(events)
            episode.dropped += dropped
        return [e for key, e in episodes.items() if key not in damaged]

    def persisted_event_count(self, session: str) -> int:
        """How many readable events of `session` are persisted, consumed or not (for inspection and tests)."""
        count = 0
        for (blob,) in self._conn.execute("SELECT events FROM episode_events WHERE session = ?", (session,)):
            try:
                count += len(unpack(blob))
            except (ValueError, TypeError, msgpack.UnpackException):
                continue  # persisted_episodes() reports unreadable chunks
        return count

    def pending_feedback(self, session: str) -> list[PendingFeedback]:
        """Feedback given since the last step (across every process of the session)."""
        rows = self._conn.execute(
            "SELECT id, client_id, episode, node, text, score FROM feedback"
            " WHERE session = ? AND step_id IS NULL ORDER BY id", (session,)
        )
        return [PendingFeedback(*r) for r in rows]

    def pending_rejections(self, session: str) -> list[tuple[int, str]]:
        """(id, message) of rejections no step has been told about yet."""
        rows = self._conn.execute(
            "SELECT r.id, r.version, r.name, r.reason, c.pid FROM rejections r"
            " LEFT JOIN clients c ON c.id = r.client_id WHERE r.session = ? AND r.step_id IS NULL ORDER BY r.id",
            (session,),
        )
        out = []
        for rid, version, name, reason, pid in rows:
            who = f"process {pid}" if pid is not None else "validation"
            out.append((rid, f"version {version}: {who} rejected {name!r}: {reason}"))
        return out

    def memory(self, session: str, limit: int) -> list[MemoryEntry]:
        """The last `limit` (params, feedback) pairs of the session, oldest first."""
        if limit <= 0:
            return []
        rows = self._conn.execute(
            "SELECT params, feedback FROM memory WHERE session = ? ORDER BY id DESC LIMIT ?", (session, limit)
        ).fetchall()
        return [MemoryEntry(params=unpack(r[0]), feedback=r[1]) for r in reversed(rows)]

    # -- steps --------------------------------------------------------------

    def step_count(self, session: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM steps WHERE session = ?", (session,)).fetchone()[0]

    def commit_step(self, record: StepRecord, *, feedback_ids: list[int], rejection_ids: list[int],
                    new_params: dict[str, dict[str, Any]] | None, changes: list[dict[str, Any]],
                    memory: tuple[dict[str, Any], str] | None) -> tuple[int, int | None]:
        """Persist one step atomically; return (step id, new version or None).

        In one transaction: the step row, the new parameter version (if the
        step changed anything), the memory entry, and the feedback and
        rejections it consumed, and the persisted events of episodes no pending
        feedback refers to any more. A crash leaves either all of it or none.
        """
        calls = record.llm_calls
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO steps(session, step_index, started, finished, ok, error, error_kind, prompt,"
                " response, reasoning, suggestion, rejected, llm_calls, llm_call_count, prompt_tokens,"
                " completion_tokens, cost_usd, latency_s, subgraph)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.session, record.step_index, record.started, record.finished, int(record.ok),
                 record.error, record.error_kind, record.prompt, record.response, record.reasoning,
                 pack(record.suggestion), pack(record.rejected), pack(calls), len(calls),
                 sum(int(c.get("prompt_tokens") or 0) for c in calls),
                 sum(int(c.get("completion_tokens") or 0) for c in calls),
                 sum(float(c.get("cost_usd") or 0.0) for c in calls),
                 record.finished - record.started, record.subgraph_json),
            )
            step_id = int(cur.lastrowid)
            version = None
            if new_params is not None:
                version = self._insert_version(conn, record.session, self.latest_version(record.session) + 1,
                                               "step", new_params, changes, step_id=step_id)
                conn.execute("UPDATE steps SET version = ? WHERE id = ?", (version, step_id))
            if memory is not None:
                conn.execute("INSERT INTO memory(session, step_id, params, feedback) VALUES (?, ?, ?, ?)",
                             (record.session, step_id, pack(memory[0]), memory[1]))
            conn.executemany("UPDATE feedback SET step_id = ? WHERE id = ?", [(step_id, i) for i in feedback_ids])
            if feedback_ids:
                # The trace of consumed feedback goes with it, atomically:
                # a crash leaves either pending feedback with its events or neither.
                conn.execute(_DELETE_CONSUMED_EVENTS, (record.session,))
            conn.executemany("UPDATE rejections SET step_id = ? WHERE id = ?",
                             [(step_id, i) for i in rejection_ids])
            for name, reason in record.rejected.items():
                # Validation rejections are feedback for the next step too.
                conn.execute(
                    "INSERT INTO rejections(session, version, name, reason, client_id, created)"
                    " VALUES (?, ?, ?, ?, NULL, ?)",
                    (record.session, self.latest_version(record.session), name, reason, time.time()),
                )
        return step_id, version

    def steps(self, session: str) -> list[dict[str, Any]]:
        """Every step of `session`, oldest first, with prompts, responses and usage."""
        rows = self._conn.execute(
            "SELECT id, step_index, started, finished, ok, error, error_kind, version, prompt, response,"
            " reasoning, suggestion, rejected, llm_calls, llm_call_count, prompt_tokens, completion_tokens,"
            " cost_usd, latency_s FROM steps WHERE session = ? ORDER BY id", (session,)
        ).fetchall()
        keys = ("id", "step_index", "started", "finished", "ok", "error", "error_kind", "version", "prompt",
                "response", "reasoning", "suggestion", "rejected", "llm_calls", "llm_call_count",
                "prompt_tokens", "completion_tokens", "cost_usd", "latency_s")
        out = []
        for row in rows:
            step = dict(zip(keys, row))
            step["ok"] = bool(step["ok"])
            for key in ("suggestion", "rejected", "llm_calls"):
                step[key] = unpack(step[key])
            out.append(step)
        return out

    def step_subgraph(self, step_id: int) -> Any:
        """The node_link data of the feedback subgraph a step was given (None if not kept)."""
        row = self._conn.execute("SELECT subgraph FROM steps WHERE id = ?", (step_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def llm_totals(self, session: str | None = None) -> dict[str, Any]:
        """LLM calls, tokens and cost so far (one session, or all), from the LLM layer's ledger.

        The ledger (optimizer_service/llm/store.py) counts every provider call,
        retries and cache hits included, so it is the authority; the steps
        table keeps per-step usage for history.
        """
        from optimizer_service.llm.store import session_totals
        totals = session_totals(self._conn, session).as_dict()
        totals["tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
        return totals


def _patch_kind(pdef: dict[str, Any]) -> str:
    return "source" if pdef.get("kind") == "source" else "value"


def _version_record(session: str, row: tuple) -> VersionRecord:
    version, created, origin, step_id, rollback_of, params, changes = row
    return VersionRecord(session, version, created, origin, unpack(params), unpack(changes),
                         step_id, rollback_of)


def diff_params(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Changes from `old` to `new` as [{"name", "kind", "old", "new"}], by name."""
    changes = []
    for name in sorted(new):
        before = old.get(name, {}).get("value")
        after = new[name].get("value")
        if name not in old or before != after or type(before) is not type(after):
            changes.append({"name": name, "kind": new[name]["kind"], "old": before, "new": after})
    return changes

