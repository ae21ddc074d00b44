"""Where the LLM configuration comes from: TRACE_LLM, SDK variables, [tool.trace], --llm."""
from __future__ import annotations

import pytest

from optimizer_service.llm import LLMConfigError, apply_options, llm_config_from


def test_trace_llm_names_provider_and_model():
    config = llm_config_from(None, env={"TRACE_LLM": "anthropic:claude-3-5-haiku-latest", "ANTHROPIC_API_KEY": "k"})
    assert (config.provider, config.model, config.api_key) == ("anthropic", "claude-3-5-haiku-latest", "k")


def test_openai_base_url_from_the_sdk_variable_selects_a_compatible_server():
    config = llm_config_from(None, env={"TRACE_LLM": "openai:llama3", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert (config.model, config.base_url) == ("llama3", "http://127.0.0.1:9/v1")


def test_command_line_string_overrides_the_environment():
    config = llm_config_from("anthropic:claude-opus-4", env={"TRACE_LLM": "openai:gpt-4o"})
    assert (config.provider, config.model) == ("anthropic", "claude-opus-4")


def test_pyproject_mapping_with_llm_prefixed_keys():
    config = llm_config_from({"llm": "openai:gpt-4o-mini", "llm_timeout": 30, "llm_max_cost": "1.5",
                              "targets": ["app:main"]}, env={})
    assert (config.model, config.timeout_s, config.max_cost_usd) == ("gpt-4o-mini", 30.0, 1.5)


def test_pyproject_llm_table():
    config = llm_config_from({"llm": {"provider": "anthropic", "model": "claude-sonnet-4", "max_retries": 1,
                                      "cache": False}}, env={})
    assert (config.provider, config.model, config.max_retries, config.cache) == \
        ("anthropic", "claude-sonnet-4", 1, "off")


def test_bare_provider_gets_its_default_model():
    assert llm_config_from("anthropic", env={}).model.startswith("claude")


@pytest.mark.parametrize("spec, message", [
    ("gemini:pro", "unknown LLM provider 'gemini'"),
    ("openai:", "missing model name"),
])
def test_bad_spec_is_rejected_with_what_to_write(spec, message):
    with pytest.raises(LLMConfigError, match=message):
        llm_config_from(spec, env={})


def test_typo_in_llm_table_is_reported_not_ignored():
    with pytest.raises(LLMConfigError, match="unknown key llm.timout"):
        llm_config_from({"llm": {"timout": 3}}, env={})


def test_non_numeric_setting_is_rejected():
    with pytest.raises(LLMConfigError, match="max_retries must be a number"):
        llm_config_from({"llm_max_retries": "many"}, env={})


def test_step_options_override_cache_and_budget_only_for_that_step():
    base = llm_config_from("openai:gpt-4o", env={})
    step = apply_options(base, {"cache": "off", "max_llm_calls": 3, "granularity": "op"})
    assert (step.cache, step.max_llm_calls) == ("off", 3)
    assert (base.cache, base.max_llm_calls) == ("use", None)
