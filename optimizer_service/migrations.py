"""Versioned schema migrations for the daemon's SQLite database.

Several components keep tables in the same database (the daemon's sessions
and steps, the LLM layer's cache and ledger). Each one owns an ordered list
of migration scripts and its own row in `schema_versions`, so they evolve
independently and a database written by an older release is upgraded in
place, in order, inside one transaction per step.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence


class SchemaTooNew(RuntimeError):
    """The database was written by a newer release than this one."""


def apply_migrations(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> int:
    """Bring `component`'s tables up to len(migrations); return the version reached.

    `migrations[i]` is the SQL script that moves the component from version i
    to i + 1. Scripts already applied are never run again; never edit one
    that has shipped, append a new one instead.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    current = row[0] if row else 0
    if current > len(migrations):
        raise SchemaTooNew(
            f"the state database has {component} schema version {current}, but this "
            f"release knows only up to {len(migrations)}; upgrade trace-live or point "
            f"TRACE_STATE_DIR at another directory"
        )
    for version in range(current, len(migrations)):
        # executescript() commits any open transaction first, so wrap each
        # step explicitly: a crash mid-migration leaves the previous version.
        conn.executescript(
            "BEGIN;\n" + migrations[version] + "\n"
            f"INSERT INTO schema_versions(component, version) VALUES ('{component}', {version + 1})"
            f" ON CONFLICT(component) DO UPDATE SET version = excluded.version;\nCOMMIT;"
        )
    return len(migrations)
