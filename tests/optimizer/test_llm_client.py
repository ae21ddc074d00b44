"""The LLM layer through the real openai/anthropic SDKs against the loopback fake server."""
from __future__ import annotations

import sqlite3

import pytest

from optimizer_service.llm import (BudgetExhausted, LLMAuthError, LLMCacheMiss, LLMClient, LLMConfigError,
                                   LLMModelNotFound, LLMStore, LLMUnavailable, llm_config_from, session_totals)
from optimizer_service.step_types import LLMError
from tests.support.fake_llm import Reply

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


def test_openai_call_returns_text_and_usage_and_asks_for_json(fake_llm, make_client):
    fake_llm.add_replies(Reply('{"a": 1}', usage={"prompt_tokens": 120, "completion_tokens": 30}))
    call = make_client("openai", cache="off").complete(MESSAGES, session="s")
    assert call.response == '{"a": 1}'
    assert (call.provider, call.model, call.prompt_tokens, call.completion_tokens) == ("openai", "gpt-4o", 120, 30)
    assert call.cost_usd == pytest.approx((120 * 2.5 + 30 * 10.0) / 1e6)
    sent = fake_llm.requests[0]
    assert sent.provider == "openai"
    assert sent.body["response_format"] == {"type": "json_object"}
    assert sent.body["messages"] == MESSAGES
    assert sent.headers["authorization"] == "Bearer test-key"


def test_anthropic_call_sends_system_separately(fake_llm, make_client):
    fake_llm.add_replies(Reply("hello", usage={"prompt_tokens": 10, "completion_tokens": 2}))
    call = make_client("anthropic", cache="off").complete(MESSAGES, session="s")
    assert call.response == "hello"
    assert (call.prompt_tokens, call.completion_tokens) == (10, 2)
    sent = fake_llm.requests[0]
    assert sent.provider == "anthropic"
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [{"role": "user", "content": "Say hi."}]
    # the SDK sends the key as x-api-key or (newer releases) as a bearer token
    assert "test-key" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))


def test_rate_limit_is_retried_after_the_servers_retry_after(fake_llm, make_client, sleeps):
    fake_llm.add_replies(Reply.error(429, retry_after=0.25), Reply("ok"))
    call = make_client(max_retries=3).complete(MESSAGES, session="s")
    assert call.response == "ok"
    assert fake_llm.request_count == 2
    # backoff alone would be ~1 ms; the server asked for 250 ms
    assert sleeps.waits == [pytest.approx(0.25)]


def test_backoff_grows_exponentially_with_jitter_below_the_cap(fake_llm, make_client, sleeps):
    fake_llm.add_replies(*[Reply.error(503)] * 4, Reply("ok"))
    make_client(max_retries=4, backoff=1.0, backoff_max=3.0).complete(MESSAGES, session="s")
    assert len(sleeps.waits) == 4
    for attempt, wait in enumerate(sleeps.waits, start=1):
        assert 0 <= wait <= min(3.0, 2 ** (attempt - 1))


def test_server_errors_until_retries_run_out_raise_llm_unavailable(fake_llm, make_client):
    fake_llm.add_replies(*[Reply.error(500)] * 5)
    with pytest.raises(LLMUnavailable, match="failed 3 times.*HTTP 500"):
        make_client(max_retries=2).complete(MESSAGES, session="s")
    assert fake_llm.request_count == 3


def test_a_timed_out_attempt_is_retried(fake_llm, make_client):
    fake_llm.add_replies(Reply("too late", delay=1.0), Reply("in time"))
    call = make_client(timeout=0.2, max_retries=1).complete(MESSAGES, session="s")
    assert call.response == "in time"
    assert fake_llm.request_count == 2


def test_timeouts_on_every_attempt_raise_with_a_timeout_message(fake_llm, make_client):
    fake_llm.add_replies(Reply("late", delay=1.0), Reply("late", delay=1.0))
    with pytest.raises(LLMUnavailable, match="timed out after 0.2s"):
        make_client(timeout=0.2, max_retries=1).complete(MESSAGES, session="s")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_authentication_error_fails_at_once_without_retry(fake_llm, make_client, sleeps, provider):
    fake_llm.add_replies(Reply.error(401, "invalid x-api-key"), Reply("never served"))
    key_var = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    with pytest.raises(LLMAuthError, match=key_var):
        make_client(provider, max_retries=4).complete(MESSAGES, session="s")
    assert fake_llm.request_count == 1
    assert sleeps.waits == []


def test_unknown_model_fails_at_once_naming_the_model(fake_llm, make_client):
    fake_llm.add_replies(Reply.error(404, "The model `gpt-nope` does not exist", code="model_not_found"))
    with pytest.raises(LLMModelNotFound, match="'gpt-nope'"):
        make_client(model="gpt-nope", max_retries=4).complete(MESSAGES, session="s")
    assert fake_llm.request_count == 1


def test_json_mode_is_dropped_for_a_server_that_rejects_it(fake_llm, make_client):
    fake_llm.add_replies(Reply.error(400, "response_format is not supported by this model"), Reply("plain"),
                         Reply("plain again"))
    client = make_client(cache="off")
    assert client.complete(MESSAGES, session="s").response == "plain"
    assert client.complete(MESSAGES, session="s").response == "plain again"
    assert "response_format" in fake_llm.requests[0].body
    assert "response_format" not in fake_llm.requests[1].body
    assert "response_format" not in fake_llm.requests[2].body


def test_a_model_that_wants_max_completion_tokens_gets_it(fake_llm, make_client):
    fake_llm.add_replies(Reply.error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                          "Use 'max_completion_tokens' instead."), Reply("ok"))
    assert make_client(model="o4-mini", max_tokens=1000).complete(MESSAGES, session="s").response == "ok"
    assert fake_llm.requests[1].body["max_completion_tokens"] == 1000
    assert "max_tokens" not in fake_llm.requests[1].body


def test_cache_hit_makes_no_http_call(fake_llm, make_client):
    fake_llm.add_replies(Reply("first"))
    client = make_client()
    first = client.complete(MESSAGES, session="s")
    second = client.complete(MESSAGES, session="s")
    assert fake_llm.request_count == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.response == "first"
    assert second.cost_usd == 0.0


def test_cache_key_includes_the_model_and_messages(fake_llm, make_client):
    fake_llm.add_replies(Reply("a"), Reply("b"), Reply("c"))
    make_client().complete(MESSAGES, session="s")
    make_client(model="gpt-4o-mini").complete(MESSAGES, session="s")
    make_client().complete(MESSAGES + [{"role": "user", "content": "again"}], session="s")
    assert fake_llm.request_count == 3


def test_cache_can_be_switched_off_per_step(fake_llm, make_client):
    fake_llm.add_replies(Reply("a"), Reply("b"))
    client = make_client()
    client.complete(MESSAGES, session="s")
    call = client.complete(MESSAGES, session="s", options={"cache": False})
    assert call.response == "b"
    assert fake_llm.request_count == 2


def test_replay_mode_answers_from_another_clients_cache(fake_llm, make_client):
    fake_llm.add_replies(Reply("recorded"))
    make_client().complete(MESSAGES, session="s")          # a first run records
    replay = make_client(cache="replay")                     # a later daemon replays it
    assert replay.complete(MESSAGES, session="s2").response == "recorded"
    with pytest.raises(LLMCacheMiss, match="replay mode"):
        replay.complete([{"role": "user", "content": "something new"}], session="s2")
    assert fake_llm.request_count == 1


def test_ledger_totals_per_session(fake_llm, make_client, db_path):
    fake_llm.add_replies(Reply("a", usage={"prompt_tokens": 1000, "completion_tokens": 100}),
                         Reply("b", usage={"prompt_tokens": 500, "completion_tokens": 50}))
    client = make_client()
    client.complete(MESSAGES, session="s")
    client.complete(MESSAGES, session="s")                   # cache hit
    client.complete([{"role": "user", "content": "other"}], session="t")
    conn = sqlite3.connect(db_path)
    s = session_totals(conn, "s")
    assert (s.calls, s.cached_calls, s.prompt_tokens, s.completion_tokens) == (1, 1, 1000, 100)
    assert s.cost_usd == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert session_totals(conn, None).calls == 2


def test_unknown_model_reports_tokens_without_cost(fake_llm, make_client, db_path):
    fake_llm.add_replies(Reply("a", usage={"prompt_tokens": 7, "completion_tokens": 3}))
    call = make_client(model="my-local-llama").complete(MESSAGES, session="s")
    assert call.cost_usd is None
    totals = session_totals(sqlite3.connect(db_path), "s")
    assert (totals.prompt_tokens, totals.unpriced_calls, totals.cost_usd) == (7, 1, 0.0)


def test_session_totals_on_a_database_without_llm_tables_are_zero(tmp_path):
    assert session_totals(sqlite3.connect(str(tmp_path / "empty.db")), "s").calls == 0


def test_call_budget_stops_before_calling_the_provider(fake_llm, make_client):
    fake_llm.add_replies(Reply("a"), Reply("b"), Reply("c"))
    client = make_client(max_llm_calls=2, cache="off")
    client.complete(MESSAGES, session="s")
    client.complete(MESSAGES, session="s")
    with pytest.raises(BudgetExhausted, match="max_llm_calls=2"):
        client.complete(MESSAGES, session="s")
    assert fake_llm.request_count == 2
    # the budget is per session and survives a new client (a daemon restart)
    assert make_client(max_llm_calls=2, cache="off").complete(MESSAGES, session="other").response == "c"
    with pytest.raises(BudgetExhausted):
        make_client(max_llm_calls=2, cache="off").complete(MESSAGES, session="s")


def test_cost_budget_stops_once_spent(fake_llm, make_client):
    fake_llm.add_replies(Reply("a", usage={"prompt_tokens": 1_000_000, "completion_tokens": 0}), Reply("b"))
    client = make_client(max_cost=2.0, cache="off")
    client.complete(MESSAGES, session="s")                   # $2.50
    with pytest.raises(BudgetExhausted, match=r"max_cost=\$2.0000"):
        client.complete(MESSAGES, session="s")
    assert fake_llm.request_count == 1


def test_llm_errors_are_step_errors_with_the_llm_kind(fake_llm, make_client):
    fake_llm.add_replies(Reply.error(401))
    with pytest.raises(LLMError) as info:
        make_client().complete(MESSAGES, session="s")
    assert info.value.kind == "llm_error"


def test_store_schema_is_created_once_and_reopened(db_path):
    LLMStore.open(db_path)
    LLMStore.open(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT version FROM schema_versions WHERE component = 'llm'").fetchone() == (1,)


@pytest.mark.parametrize("provider, key_var", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_missing_api_key_fails_with_what_to_set_and_no_request(fake_llm, provider, key_var):
    url_var = "OPENAI_BASE_URL" if provider == "openai" else "ANTHROPIC_BASE_URL"
    url = fake_llm.openai_base_url if provider == "openai" else fake_llm.anthropic_base_url
    client = LLMClient(llm_config_from(provider, env={url_var: url}))
    with pytest.raises(LLMConfigError, match=key_var):
        client.complete(MESSAGES, session="s")
    assert fake_llm.request_count == 0


def test_unreachable_server_is_retried_then_reported_with_its_address(tmp_path, sleeps):
    import socket

    with socket.socket() as probe:          # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = llm_config_from({"llm": {"llm": "openai:gpt-4o", "base_url": f"http://127.0.0.1:{port}/v1",
                                      "api_key": "k", "max_retries": 2, "backoff": 0.001}}, env={})
    client = LLMClient(config, store=LLMStore.open(str(tmp_path / "db")), sleep=sleeps)
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}"):
        client.complete(MESSAGES, session="s")
    assert len(sleeps.waits) == 2
