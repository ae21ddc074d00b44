"""The LLM layer: configuration, official SDK providers, retries, cache, ledger, budgets.

Public surface:

- `llm_config_from(source, env)` -> `LLMConfig` (TRACE_LLM, SDK variables,
  `[tool.trace]` mapping, `--llm` string).
- `LLMClient(config, store=...)`.complete(messages, session=, step=, options=) -> `LLMCall`.
- `LLMStore` (cache + ledger tables in the daemon's SQLite database),
  `session_totals(conn, session)` for `trace-daemon status`.
- Errors: `LLMConfigError`, `LLMAuthError`, `LLMModelNotFound`,
  `LLMRequestRejected`, `LLMUnavailable`, `LLMCacheMiss` (all `LLMError`),
  `BudgetExhausted`.
"""
from optimizer_service.llm.client import LLMClient
from optimizer_service.llm.config import LLMConfig, apply_options, llm_config_from, parse_llm_spec
from optimizer_service.llm.errors import (BudgetExhausted, LLMAuthError, LLMCacheMiss, LLMConfigError, LLMError,
                                          LLMModelNotFound, LLMRequestRejected, LLMUnavailable)
from optimizer_service.llm.prices import PRICES_PER_MILLION, cost_usd, price_for
from optimizer_service.llm.store import MIGRATIONS, LLMStore, SessionTotals, ensure_schema, session_totals

__all__ = [
    "LLMClient", "LLMConfig", "apply_options", "llm_config_from", "parse_llm_spec",
    "BudgetExhausted", "LLMAuthError", "LLMCacheMiss", "LLMConfigError", "LLMError", "LLMModelNotFound",
    "LLMRequestRejected", "LLMUnavailable",
    "PRICES_PER_MILLION", "cost_usd", "price_for",
    "MIGRATIONS", "LLMStore", "SessionTotals", "ensure_schema", "session_totals",
]
