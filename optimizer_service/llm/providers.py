"""Adapters from our (messages, config) to the official SDKs, and back.

Each adapter makes exactly one HTTP attempt per `complete` call (the SDK's
own retries are off) and turns the SDK's exceptions into ours: transient
ones (429, 5xx, timeouts, connection failures) into `TransientFailure` for
the retry loop, permanent ones into specific `LLMError`s with a message that
says what to do.
"""
from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from typing import Any

from optimizer_service.llm.config import LLMConfig
from optimizer_service.llm.errors import (LLMAuthError, LLMConfigError, LLMError, LLMModelNotFound,
                                          LLMRequestRejected)
from optimizer_service.llm.retry import TransientFailure

# Statuses the official SDKs themselves treat as retryable.
_TRANSIENT_STATUSES = {408, 409, 429}


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


def _retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait, from retry-after-ms or retry-after (seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
    except (TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _classify(exc: Exception, sdk: Any, config: LLMConfig) -> Exception:
    """Map an SDK exception to TransientFailure or a specific LLMError."""
    where = f"{config.provider}:{config.model}" + (f" at {config.base_url}" if config.base_url else "")
    if isinstance(exc, sdk.APITimeoutError):
        return TransientFailure(f"timed out after {config.timeout_s:g}s", kind="timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return TransientFailure(f"connection failed: {exc}", kind="connection")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        message = _error_message(exc)
        if status in _TRANSIENT_STATUSES or status >= 500:
            return TransientFailure(f"HTTP {status}: {message}",
                                    retry_after=_retry_after_seconds(getattr(exc.response, "headers", None)),
                                    kind="rate_limit" if status == 429 else "server")
        if status in (401, 403):
            key_var = "OPENAI_API_KEY" if config.provider == "openai" else "ANTHROPIC_API_KEY"
            return LLMAuthError(f"{where} refused the credentials (HTTP {status}: {message}); "
                                f"check {key_var} (or the api_key in the LLM configuration)")
        lowered = message.lower()
        if status == 404 or ("model" in lowered and ("not found" in lowered or "does not exist" in lowered
                                                     or "unknown" in lowered)):
            return LLMModelNotFound(f"{where}: model {config.model!r} is not available (HTTP {status}: "
                                    f"{message}); check the model name in TRACE_LLM / --llm")
        return LLMRequestRejected(f"{where} rejected the request (HTTP {status}: {message})")
    if isinstance(exc, LLMError):
        return exc
    return LLMError(f"{where}: unexpected {type(exc).__name__}: {exc}")


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))


class OpenAIProvider:
    """Chat completions through the `openai` SDK (any OpenAI-compatible server)."""

    name = "openai"

    def __init__(self, config: LLMConfig) -> None:
        import openai

        self._sdk = openai
        self._config = config
        try:
            self._client = openai.OpenAI(api_key=config.api_key, base_url=config.base_url,
                                         timeout=config.timeout_s, max_retries=0)
        except openai.OpenAIError as exc:
            raise LLMConfigError(f"cannot create the OpenAI client: {str(exc).rstrip('.')}. Set OPENAI_API_KEY "
                                 f"(and OPENAI_BASE_URL for an OpenAI-compatible server)") from None
        # Models whose endpoint refused response_format: do not ask again.
        self._no_json_mode: set[str] = set()
        # Models that want max_completion_tokens instead of max_tokens (OpenAI's reasoning models).
        self._completion_tokens_models: set[str] = set()
        self._lock = threading.Lock()

    def request_params(self, config: LLMConfig) -> dict[str, Any]:
        limit = "max_completion_tokens" if config.model in self._completion_tokens_models else "max_tokens"
        params: dict[str, Any] = {limit: config.max_tokens}
        if config.temperature is not None:
            params["temperature"] = config.temperature
        if config.json_mode == "on" or (config.json_mode == "auto" and config.model not in self._no_json_mode):
            params["response_format"] = {"type": "json_object"}
        return params

    def complete(self, messages: list[dict[str, Any]], config: LLMConfig) -> Completion:
        params = self.request_params(config)
        try:
            response = self._client.chat.completions.create(model=config.model, messages=messages,
                                                            timeout=config.timeout_s, **params)
        except self._sdk.BadRequestError as exc:
            message = str(exc)
            # Many compatible servers and older models reject JSON mode; OptoPrime
            # itself falls back to a plain request, and so do we (once per model).
            if config.json_mode == "auto" and "response_format" in params and \
                    ("response_format" in message or "json" in message.lower()):
                with self._lock:
                    self._no_json_mode.add(config.model)
                return self.complete(messages, config)
            if "max_tokens" in params and "max_completion_tokens" in message:
                with self._lock:
                    self._completion_tokens_models.add(config.model)
                return self.complete(messages, config)
            raise _classify(exc, self._sdk, config) from None
        except Exception as exc:  # noqa: BLE001 - every SDK failure is classified
            raise _classify(exc, self._sdk, config) from None
        if not response.choices:
            raise TransientFailure("the response has no choices", kind="empty")
        text = response.choices[0].message.content or ""
        usage = response.usage
        return Completion(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


class AnthropicProvider:
    """Messages through the `anthropic` SDK."""

    name = "anthropic"

    def __init__(self, config: LLMConfig) -> None:
        import anthropic

        self._sdk = anthropic
        self._config = config
        try:
            self._client = anthropic.Anthropic(api_key=config.api_key, base_url=config.base_url,
                                               timeout=config.timeout_s, max_retries=0)
        except anthropic.AnthropicError as exc:
            raise LLMConfigError(f"cannot create the Anthropic client: {exc}. Set ANTHROPIC_API_KEY") from None

    def request_params(self, config: LLMConfig) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": config.max_tokens}
        if config.temperature is not None:
            params["temperature"] = config.temperature
        return params

    def complete(self, messages: list[dict[str, Any]], config: LLMConfig) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [m for m in messages if m["role"] != "system"]
        params = self.request_params(config)
        if system:
            params["system"] = system
        try:
            response = self._client.messages.create(model=config.model, messages=chat,
                                                    timeout=config.timeout_s, **params)
        except TypeError as exc:
            # The SDK resolves credentials lazily and reports none found as a TypeError.
            if "authentication" in str(exc).lower():
                raise LLMConfigError(f"no Anthropic credentials: {exc}. Set ANTHROPIC_API_KEY") from None
            raise _classify(exc, self._sdk, config) from None
        except Exception as exc:  # noqa: BLE001 - every SDK failure is classified
            raise _classify(exc, self._sdk, config) from None
        text = "".join(getattr(block, "text", "") for block in response.content
                       if getattr(block, "type", "") == "text")
        usage = response.usage
        return Completion(text, getattr(usage, "input_tokens", 0) or 0, getattr(usage, "output_tokens", 0) or 0)


def make_provider(config: LLMConfig) -> OpenAIProvider | AnthropicProvider:
    if config.provider == "openai":
        return OpenAIProvider(config)
    if config.provider == "anthropic":
        return AnthropicProvider(config)
    raise LLMConfigError(f"unknown LLM provider {config.provider!r}")
