"""LLMClient: one completion = budget check, cache, provider call with retries, ledger.

    client = LLMClient(llm_config_from(None), store=LLMStore.open(db_path))
    call = client.complete(messages, session="s", step=3)
    call.response            # the text; call.cached, call.cost_usd, ... (step_types.LLMCall)
"""
from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from optimizer_service.llm.config import LLMConfig, apply_options, llm_config_from
from optimizer_service.llm.errors import BudgetExhausted, LLMCacheMiss, LLMUnavailable
from optimizer_service.llm.prices import cost_usd
from optimizer_service.llm.providers import AnthropicProvider, OpenAIProvider, make_provider
from optimizer_service.llm.retry import RetryPolicy, TransientFailure, call_with_retries
from optimizer_service.llm.store import LLMStore, SessionTotals, request_key
from optimizer_service.step_types import LLMCall

Messages = list[dict[str, Any]]


class LLMClient:
    """Calls the configured LLM for the optimizer; thread-safe.

    `store` is where the cache and the ledger live: an LLMStore, a sqlite3
    connection to the daemon's database, a database path, or None for a
    private in-memory database (nothing persists). `sleep` and `rng` are the
    retry loop's clock and jitter source (tests pass fast ones).
    """

    def __init__(self, config: LLMConfig | Mapping[str, Any] | str | None = None, *,
                 store: LLMStore | sqlite3.Connection | str | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        self.config = config if isinstance(config, LLMConfig) else llm_config_from(config)
        if isinstance(store, LLMStore):
            self.store = store
        elif isinstance(store, sqlite3.Connection):
            self.store = LLMStore(store)
        else:
            self.store = LLMStore.open(store or ":memory:")
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._providers: dict[tuple[Any, ...], OpenAIProvider | AnthropicProvider] = {}
        self._lock = threading.Lock()

    def effective_config(self, options: Mapping[str, Any] | None) -> LLMConfig:
        """The config with per-step overrides (StepInput.options) applied."""
        return apply_options(self.config, options) if options else self.config

    def totals(self, session: str) -> SessionTotals:
        return self.store.session_totals(session)

    def complete(self, messages: Messages, *, session: str = "default", step: int | None = None,
                 options: Mapping[str, Any] | None = None,
                 accept: Callable[[str], bool] | None = None) -> LLMCall:
        """Answer `messages` (OpenAI-style role/content dicts) and record the call.

        `accept(text)` says whether an answer is usable (e.g. parses): only
        usable answers are cached, and a cached answer it refuses counts as a
        miss, so a retried step never replays an unreadable answer.

        Raises BudgetExhausted before calling a provider when the session's
        max_llm_calls or max_cost is reached; LLMAuthError / LLMModelNotFound /
        LLMRequestRejected at once; LLMUnavailable when retries run out;
        LLMCacheMiss in replay mode without a cached answer.
        """
        config = self.effective_config(options)
        provider = self._provider(config)
        params = provider.request_params(config)
        key = request_key(config.provider, config.model, messages, params)

        if config.cache in ("use", "replay"):
            started = time.perf_counter()
            hit = self.store.cache_get(key)
            if hit is not None and accept is not None and not _accepts(accept, hit.text):
                hit = None
            if hit is not None:
                latency = time.perf_counter() - started
                self.store.record_call(session=session, step=step, provider=config.provider, model=config.model,
                                       prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens,
                                       latency_s=latency, cost_usd=0.0, cached=True, attempts=0)
                return LLMCall(provider=config.provider, model=config.model, prompt_tokens=hit.prompt_tokens,
                               completion_tokens=hit.completion_tokens, latency_s=latency, cost_usd=0.0,
                               cached=True, request=messages, response=hit.text)
            if config.cache == "replay":
                raise LLMCacheMiss(
                    f"replay mode: no cached response for this prompt ({config.provider}:{config.model}, "
                    f"key {key[:12]}); the session diverged from the recorded one. Use cache='use' to call "
                    f"the provider for new prompts")

        self._check_budget(config, session)
        policy = RetryPolicy(config.max_retries, config.backoff_base_s, config.backoff_max_s)
        where = f"{config.provider}:{config.model}"
        started = time.perf_counter()
        try:
            completion, outcome = call_with_retries(lambda: provider.complete(messages, config), policy,
                                                    describe=f"LLM call to {where}", sleep=self._sleep,
                                                    rng=self._rng)
        except TransientFailure as failure:
            advice = {"timeout": "Raise the timeout (llm_timeout) or check the server.",
                      "connection": f"Check that the server at {config.base_url or 'the provider'} is reachable "
                                    f"(OPENAI_BASE_URL / ANTHROPIC_BASE_URL)."}.get(
                failure.kind, "Try again later or raise max_retries.")
            raise LLMUnavailable(f"{where} failed {config.max_retries + 1} times, last: {failure}. {advice}") from None
        latency = time.perf_counter() - started
        cost = cost_usd(config.provider, config.model, completion.prompt_tokens, completion.completion_tokens)
        self.store.record_call(session=session, step=step, provider=config.provider, model=config.model,
                               prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens, latency_s=latency,
                               cost_usd=cost, cached=False, attempts=outcome.attempts)
        if config.cache in ("use", "refresh") and (accept is None or _accepts(accept, completion.text)):
            self.store.cache_put(key, config.provider, config.model, messages, completion.text,
                                 completion.prompt_tokens, completion.completion_tokens)
        return LLMCall(provider=config.provider, model=config.model, prompt_tokens=completion.prompt_tokens,
                       completion_tokens=completion.completion_tokens, latency_s=latency, cost_usd=cost,
                       cached=False, request=messages, response=completion.text)

    def _check_budget(self, config: LLMConfig, session: str) -> None:
        if config.max_llm_calls is None and config.max_cost_usd is None:
            return
        totals = self.store.session_totals(session)
        if config.max_llm_calls is not None and totals.calls >= config.max_llm_calls:
            raise BudgetExhausted(
                f"session {session!r} has used its LLM call budget ({totals.calls} of max_llm_calls="
                f"{config.max_llm_calls}); optimisation stops here. Raise max_llm_calls or start a new session")
        if config.max_cost_usd is not None and totals.cost_usd >= config.max_cost_usd:
            raise BudgetExhausted(
                f"session {session!r} has spent ${totals.cost_usd:.4f} of its max_cost=${config.max_cost_usd:.4f} "
                f"on LLM calls; optimisation stops here. Raise max_cost or start a new session")

    def _provider(self, config: LLMConfig) -> OpenAIProvider | AnthropicProvider:
        ident = (config.provider, config.base_url, config.api_key, config.timeout_s)
        with self._lock:
            provider = self._providers.get(ident)
            if provider is None:
                provider = self._providers[ident] = make_provider(config)
            return provider


def _accepts(accept: Callable[[str], bool], text: str) -> bool:
    try:
        return bool(accept(text))
    except Exception:  # a checker that fails on odd text means "not usable"
        return False
