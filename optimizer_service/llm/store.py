"""The LLM layer's tables in the daemon's SQLite database: response cache and ledger.

`llm_cache` maps a request key (provider, model, messages, parameters) to the
response text, so a session can be replayed deterministically and repeated
prompts cost nothing. `llm_calls` is the ledger: one row per call (cache hits
included, flagged) with tokens, latency and cost, per session and step.
`session_totals` is what `trace-daemon status` shows.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimizer_service.migrations import apply_migrations

MIGRATIONS: list[str] = [
    """
    CREATE TABLE llm_cache (
        key TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        response TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE llm_calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        step INTEGER,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        cost_usd REAL,
        cached INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX llm_calls_session ON llm_calls(session);
    """,
]


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or upgrade the LLM tables (idempotent)."""
    apply_migrations(conn, "llm", MIGRATIONS)


def request_key(provider: str, model: str, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
    """A stable hash of everything that determines the answer."""
    canonical = json.dumps({"provider": provider, "model": model, "messages": messages, "params": dict(params)},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SessionTotals:
    """What a session's LLM use added up to. cost_usd covers priced calls only."""

    calls: int               # provider calls (cache hits excluded)
    cached_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_calls: int      # calls to models without a known price
    latency_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LLMStore:
    """Cache and ledger over one SQLite connection, safe to share between threads.

    The connection is the daemon's (or one opened on its database file with
    check_same_thread=False); every use is serialised by a lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        with self._lock:
            ensure_schema(conn)

    @classmethod
    def open(cls, path: str) -> "LLMStore":
        """Open (creating if needed) a database file in WAL mode."""
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        return cls(conn)

    # -- cache -------------------------------------------------------------
    def cache_get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT response, prompt_tokens, completion_tokens FROM llm_cache WHERE key = ?", (key,)
            ).fetchone()
        return CachedResponse(*row) if row else None

    def cache_put(self, key: str, provider: str, model: str, request: Any, response: str,
                  prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO llm_cache(key, provider, model, request, response, prompt_tokens,"
                " completion_tokens, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, provider, model, json.dumps(request, default=str), response, prompt_tokens,
                 completion_tokens, time.time()))

    # -- ledger ------------------------------------------------------------
    def record_call(self, *, session: str, step: int | None, provider: str, model: str, prompt_tokens: int,
                    completion_tokens: int, latency_s: float, cost_usd: float | None, cached: bool,
                    attempts: int) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO llm_calls(session, step, provider, model, prompt_tokens, completion_tokens,"
                " latency_s, cost_usd, cached, attempts, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session, step, provider, model, prompt_tokens, completion_tokens, latency_s, cost_usd,
                 int(cached), attempts, time.time()))

    def session_totals(self, session: str) -> SessionTotals:
        with self._lock:
            return session_totals(self._conn, session)


def session_totals(conn: sqlite3.Connection, session: str | None = None) -> SessionTotals:
    """Totals of the ledger for one session (or all sessions when None).

    For `trace-daemon status`: works on any connection to the daemon's
    database; returns zeros when the LLM tables do not exist yet.
    """
    where, args = ("WHERE session = ?", (session,)) if session is not None else ("", ())
    try:
        row = conn.execute(
            "SELECT COALESCE(SUM(cached = 0), 0), COALESCE(SUM(cached = 1), 0),"
            " COALESCE(SUM(CASE WHEN cached = 0 THEN prompt_tokens END), 0),"
            " COALESCE(SUM(CASE WHEN cached = 0 THEN completion_tokens END), 0),"
            " COALESCE(SUM(CASE WHEN cached = 0 THEN cost_usd END), 0.0),"
            " COALESCE(SUM(cached = 0 AND cost_usd IS NULL), 0),"
            f" COALESCE(SUM(latency_s), 0.0) FROM llm_calls {where}", args).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return SessionTotals(0, 0, 0, 0, 0.0, 0, 0.0)
        raise
    return SessionTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]), int(row[5]),
                         float(row[6]))
