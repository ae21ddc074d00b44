"""optimizer_service.store: what survives in SQLite."""
from __future__ import annotations

import sqlite3

import pytest

from optimizer_service.migrations import SchemaTooNew
from optimizer_service.store import (StepRecord, Store, StoreError, UnknownSession, UnknownVersion)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite3")
    s.ensure_session("s")
    s.save_definitions("s", [{"id": 1, "module": "m", "qualname": "f"}],
                       [{"name": "p", "kind": "global", "type": "str", "value": "v0"},
                        {"name": "code", "kind": "source", "type": "code", "value": "def f(): pass"}])
    return s


def commit(store, new_value, feedback_ids=(), memory=None):
    params = store.version("s", store.latest_version("s")).params
    params = {**params, "p": {"kind": "value", "value": new_value}}
    return store.commit_step(StepRecord("s", 0, 1.0, 2.0, True, suggestion={"p": new_value}),
                             feedback_ids=list(feedback_ids), rejection_ids=[], new_params=params,
                             changes=[], memory=memory)


def test_version_zero_is_the_programs_own_values(store):
    version = store.version("s", 0)
    assert version.params == {"p": {"kind": "value", "value": "v0"},
                              "code": {"kind": "source", "value": "def f(): pass"}}


def test_later_definitions_do_not_change_version_zero(store):
    store.save_definitions("s", [], [{"name": "p", "kind": "global", "type": "str", "value": "other"}])
    assert store.version("s", 0).params["p"]["value"] == "v0"
    assert store.param_definitions("s")["p"]["value"] == "other"


def test_step_commit_stores_version_memory_and_consumes_feedback(store):
    fid = store.add_feedback("s", 1, 1, 3, "bad", 0.5)
    step_id, version = commit(store, "v1", [fid], ({"p": "v0"}, "bad"))
    assert version == 1 and store.latest_version("s") == 1
    assert store.version("s", 1).params["p"]["value"] == "v1" and store.version("s", 1).step_id == step_id
    assert store.pending_feedback("s") == []
    assert [(e.params, e.feedback) for e in store.memory("s", 5)] == [({"p": "v0"}, "bad")]


def test_everything_survives_reopening_the_database(store, tmp_path):
    store.add_feedback("s", 1, 1, 3, "pending", None)
    commit(store, b"\x00bytes", memory=({"p": "v0"}, "x"))
    store.close()
    again = Store(tmp_path / "state.sqlite3")
    assert again.version("s", 1).params["p"]["value"] == b"\x00bytes"
    assert [f.text for f in again.pending_feedback("s")] == ["pending"]
    assert len(again.memory("s", 5)) == 1


def test_rollback_version_equals_the_older_one_and_lists_changes(store):
    commit(store, "v1")
    commit(store, "v2")
    record = store.add_rollback_version("s", 1)
    assert record.version == 3 and record.origin == "rollback" and record.rollback_of == 1
    assert record.params == store.version("s", 1).params
    assert record.changes == [{"name": "p", "kind": "value", "old": "v2", "new": "v1"}]


def test_unknown_session_and_version_are_specific_errors(store):
    with pytest.raises(UnknownSession, match="known sessions: s"):
        store.session("nope")
    with pytest.raises(UnknownVersion, match=r"versions are 0\.\.0"):
        store.version("s", 4)


def test_a_step_that_fails_half_way_through_its_commit_leaves_nothing_behind(store):
    fid = store.add_feedback("s", 1, 1, 3, "bad", None)
    with pytest.raises(TypeError):
        # The memory entry cannot be stored: the step row and the version
        # written before it in the same transaction must go too.
        commit(store, "v1", [fid], memory=({"p": object()}, "bad"))
    assert store.steps("s") == [] and store.latest_version("s") == 0
    assert [f.id for f in store.pending_feedback("s")] == [fid]


def test_patch_ack_failures_become_pending_rejections(store):
    client = store.add_client("s", pid=42, argv=["app.py"], python="3.12", name="", granularity="call")
    commit(store, "v1")
    store.record_application("s", 1, client, [{"name": "p", "ok": False, "error": "TypeError: no"}])
    (_, message), = store.pending_rejections("s")
    assert message == "version 1: process 42 rejected 'p': TypeError: no"
    assert store.applications("s", 1)[0]["pid"] == 42


def test_llm_totals_read_the_llm_ledger(store):
    from optimizer_service.llm.store import LLMStore
    ledger = LLMStore(store.connect())
    ledger.record_call(session="s", step=0, provider="openai", model="m", prompt_tokens=10, completion_tokens=5,
                       latency_s=0.1, cost_usd=0.25, cached=False, attempts=1)
    totals = store.llm_totals("s")
    assert (totals["calls"], totals["tokens"], totals["cost_usd"]) == (1, 15, 0.25)
    assert store.llm_totals("other")["calls"] == 0


def test_database_from_a_newer_release_is_refused_with_advice(tmp_path):
    path = tmp_path / "state.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'daemon'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="TRACE_STATE_DIR"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="move it away"):
        Store(path)
