"""Which LLM to call and how: one `LLMConfig`, built from wherever the user said it.

Sources, later ones winning: defaults, the environment (TRACE_LLM and the
SDKs' own OPENAI_* / ANTHROPIC_* variables), `[tool.trace]` in pyproject.toml
(a mapping handed over by the runner), `--llm PROVIDER:MODEL` (a string).
`llm_config_from` takes any of the last two and the environment.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimizer_service.llm.errors import LLMConfigError

PROVIDERS = ("openai", "anthropic")
CACHE_MODES = ("use", "refresh", "replay", "off")
DEFAULT_MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6"}


@dataclass(frozen=True)
class LLMConfig:
    """Everything the LLM client needs; every field has a usable default except the key."""

    provider: str = "openai"
    model: str = DEFAULT_MODELS["openai"]
    api_key: str | None = None          # None: the SDK reads OPENAI_API_KEY / ANTHROPIC_API_KEY
    base_url: str | None = None         # None: the SDK reads OPENAI_BASE_URL / ANTHROPIC_BASE_URL
    timeout_s: float = 120.0            # per HTTP attempt
    max_retries: int = 4                # retries after the first attempt (429, 5xx, timeouts)
    backoff_base_s: float = 1.0         # first retry waits about this long, doubling each time
    backoff_max_s: float = 60.0         # no single wait is longer (retry-after included)
    max_tokens: int = 4096              # completion length
    temperature: float | None = None    # None: the provider's default
    json_mode: str = "auto"             # "auto": ask for JSON where the endpoint accepts it; "on"; "off"
    cache: str = "use"                  # use | refresh | replay | off (see llm/cache.py)
    max_llm_calls: int | None = None    # per session, counting provider calls (cache hits are free)
    max_cost_usd: float | None = None   # per session

    def replace(self, **changes: Any) -> "LLMConfig":
        return dataclasses.replace(self, **changes)


# Config keys as users write them ([tool.trace] / StepInput.options) -> field.
_KEYS: dict[str, str] = {
    "provider": "provider", "model": "model", "api_key": "api_key", "base_url": "base_url",
    "timeout": "timeout_s", "timeout_s": "timeout_s", "max_retries": "max_retries",
    "backoff": "backoff_base_s", "backoff_base_s": "backoff_base_s", "backoff_max": "backoff_max_s",
    "backoff_max_s": "backoff_max_s", "max_tokens": "max_tokens", "temperature": "temperature",
    "json_mode": "json_mode", "cache": "cache", "max_llm_calls": "max_llm_calls",
    "max_cost": "max_cost_usd", "max_cost_usd": "max_cost_usd",
}
# Keys of [tool.trace] that belong to other parts (targets, session, ...) are
# ignored when they do not start with "llm"; inside an `llm` table every key
# must be known, so a typo is reported rather than silently dropped.
_FLOAT_FIELDS = {"timeout_s", "backoff_base_s", "backoff_max_s", "temperature", "max_cost_usd"}
_INT_FIELDS = {"max_retries", "max_tokens", "max_llm_calls"}


def parse_llm_spec(spec: str) -> tuple[str, str]:
    """Split "provider:model" (or a bare provider) into (provider, model)."""
    text = spec.strip()
    provider, sep, model = text.partition(":")
    provider = provider.strip().lower()
    model = model.strip()
    if provider not in PROVIDERS:
        raise LLMConfigError(
            f"unknown LLM provider {provider!r} in {spec!r}: write PROVIDER:MODEL with PROVIDER one of "
            f"{', '.join(PROVIDERS)} (e.g. openai:gpt-4o, anthropic:claude-sonnet-4-6); any OpenAI-compatible "
            f"server works as openai:MODEL with OPENAI_BASE_URL")
    if sep and not model:
        raise LLMConfigError(f"missing model name after {provider!r} in {spec!r}: write {provider}:MODEL")
    return provider, model or DEFAULT_MODELS[provider]


def llm_config_from(source: Mapping[str, Any] | str | LLMConfig | None = None,
                    env: Mapping[str, str] | None = None, *, base: LLMConfig | None = None) -> LLMConfig:
    """Build the effective LLMConfig.

    `source` is the runner's view of the user's choice: a `--llm` string
    ("openai:gpt-4o"), a `[tool.trace]` mapping (either `llm = "openai:gpt-4o"`
    with optional `llm_*` keys such as `llm_timeout`, or an `llm` table with
    the keys of `_KEYS`), an LLMConfig, or None. `env` defaults to os.environ;
    TRACE_LLM and the SDK variables fill in what `source` leaves open.
    Raises LLMConfigError naming the bad key or value.
    """
    env = os.environ if env is None else env
    config = base or LLMConfig()
    if isinstance(source, LLMConfig):
        return source
    values: dict[str, Any] = {}

    if env.get("TRACE_LLM"):
        values["provider"], values["model"] = parse_llm_spec(env["TRACE_LLM"])

    if isinstance(source, str):
        values["provider"], values["model"] = parse_llm_spec(source)
    elif isinstance(source, Mapping):
        values.update(_values_from_mapping(source))
    elif source is not None:
        raise LLMConfigError(f"LLM configuration must be a 'provider:model' string or a mapping, "
                             f"not {type(source).__name__}")

    provider = values.get("provider", config.provider)
    if values.get("api_key") is None:
        key_var = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        if env.get(key_var):
            values["api_key"] = env[key_var]
    if values.get("base_url") is None:
        url_var = "OPENAI_BASE_URL" if provider == "openai" else "ANTHROPIC_BASE_URL"
        if env.get(url_var):
            values["base_url"] = env[url_var]
    return _checked(config.replace(**values))


def apply_options(config: LLMConfig, options: Mapping[str, Any]) -> LLMConfig:
    """Per-step overrides from StepInput.options (only LLM keys; others are ignored)."""
    values = {_KEYS[k]: v for k, v in options.items() if k in _KEYS and k not in ("api_key", "base_url")}
    if "llm" in options and isinstance(options["llm"], str):
        values["provider"], values["model"] = parse_llm_spec(options["llm"])
    return _checked(config.replace(**_coerced(values))) if values else config


def _values_from_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    spec = mapping.get("llm")
    if isinstance(spec, str):
        values["provider"], values["model"] = parse_llm_spec(spec)
    elif isinstance(spec, Mapping):
        for key, value in spec.items():
            if key == "llm" and isinstance(value, str):
                values["provider"], values["model"] = parse_llm_spec(value)
                continue
            if key not in _KEYS:
                raise LLMConfigError(f"unknown key llm.{key} in the LLM configuration; known keys: "
                                     f"{', '.join(sorted(_KEYS))}")
            values[_KEYS[key]] = value
    elif spec is not None:
        raise LLMConfigError(f"'llm' must be a 'provider:model' string or a table, not {type(spec).__name__}")
    for key, value in mapping.items():
        if key.startswith("llm_"):
            short = key[4:]
            if short not in _KEYS:
                raise LLMConfigError(f"unknown key {key} in the LLM configuration; known: "
                                     f"{', '.join('llm_' + k for k in sorted(_KEYS))}")
            values[_KEYS[short]] = value
    if "provider" in values:
        values["provider"] = str(values["provider"]).lower()
        if "model" not in values:
            values["model"] = DEFAULT_MODELS.get(values["provider"], "")
    return _coerced(values)


def _coerced(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for name, value in values.items():
        if value is None:
            continue
        try:
            if name in _FLOAT_FIELDS:
                if isinstance(value, bool):
                    raise ValueError
                out[name] = float(value)
            elif name in _INT_FIELDS:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out[name] = int(value)
        except (TypeError, ValueError):
            raise LLMConfigError(f"LLM setting {name} must be a number, got {value!r}") from None
        if name == "cache" and isinstance(value, bool):
            out[name] = "use" if value else "off"
        if name == "json_mode" and isinstance(value, bool):
            out[name] = "on" if value else "off"
    return out


def _checked(config: LLMConfig) -> LLMConfig:
    if config.provider not in PROVIDERS:
        raise LLMConfigError(f"unknown LLM provider {config.provider!r}; use one of {', '.join(PROVIDERS)}")
    if not config.model:
        raise LLMConfigError("no LLM model configured: set TRACE_LLM=provider:model or pass --llm provider:model")
    if config.cache not in CACHE_MODES:
        raise LLMConfigError(f"cache must be one of {', '.join(CACHE_MODES)} (or true/false), got {config.cache!r}")
    if config.json_mode not in ("auto", "on", "off"):
        raise LLMConfigError(f"json_mode must be auto, on or off, got {config.json_mode!r}")
    for name in ("timeout_s", "backoff_base_s", "backoff_max_s"):
        value = getattr(config, name)
        if not (value >= 0 and math.isfinite(value)):
            raise LLMConfigError(f"LLM setting {name} must be a finite number >= 0, got {value!r}")
    if config.max_retries < 0:
        raise LLMConfigError(f"max_retries must be >= 0, got {config.max_retries}")
    if config.max_tokens <= 0:
        raise LLMConfigError(f"max_tokens must be > 0, got {config.max_tokens}")
    if config.max_llm_calls is not None and config.max_llm_calls < 0:
        raise LLMConfigError(f"max_llm_calls must be >= 0, got {config.max_llm_calls}")
    if config.max_cost_usd is not None and config.max_cost_usd < 0:
        raise LLMConfigError(f"max_cost must be >= 0, got {config.max_cost_usd}")
    return config
