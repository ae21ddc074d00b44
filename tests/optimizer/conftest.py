"""Fixtures for the optimizer and LLM tests: a fake LLM server and clients pointed at it."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from optimizer_service.llm import LLMClient, LLMStore, llm_config_from
from tests.support.fake_llm import FakeLLMServer


@pytest.fixture(autouse=True)
def _no_real_provider_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # A developer's own keys or TRACE_LLM must never leak into a test.
    for name in ("TRACE_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                 "ANTHROPIC_AUTH_TOKEN", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRACE_DAEMON_SOCKET", str(tmp_path / "daemon.sock"))


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


class SleepRecorder:
    """Stands in for time.sleep in the retry loop: records the waits, waits nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    return str(tmp_path / "state.db")


@pytest.fixture
def make_client(fake_llm: FakeLLMServer, db_path: str, sleeps: SleepRecorder) -> Callable[..., LLMClient]:
    """make_client(provider="openai", **settings) -> LLMClient talking to the fake server."""

    def make(provider: str = "openai", model: str | None = None, **settings: Any) -> LLMClient:
        model = model or ("gpt-4o" if provider == "openai" else "claude-sonnet-4-6")
        base_url = fake_llm.openai_base_url if provider == "openai" else fake_llm.anthropic_base_url
        table = {"llm": f"{provider}:{model}", "base_url": base_url, "api_key": "test-key",
                 "backoff": 0.001, "timeout": 5}
        table.update(settings)
        return LLMClient(llm_config_from({"llm": table}, env={}), store=LLMStore.open(db_path), sleep=sleeps,
                         rng=random.Random(0))

    return make
