"""Model prices, in one place: USD per million tokens (input, output).

Prices change; update this table (and only this table) when they do. A model
that is not listed reports its tokens with cost None, never a guessed cost.
Dated snapshots ("gpt-4o-2024-08-06") fall back to the longest listed prefix.
"""
from __future__ import annotations

from typing import Final

# (provider, model prefix) -> (USD per 1M input tokens, USD per 1M output tokens)
PRICES_PER_MILLION: Final[dict[tuple[str, str], tuple[float, float]]] = {
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4.1-nano"): (0.10, 0.40),
    ("openai", "gpt-4.1-mini"): (0.40, 1.60),
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("openai", "gpt-4-turbo"): (10.00, 30.00),
    ("openai", "gpt-3.5-turbo"): (0.50, 1.50),
    ("openai", "o3-mini"): (1.10, 4.40),
    ("openai", "o4-mini"): (1.10, 4.40),
    ("anthropic", "claude-3-5-haiku"): (0.80, 4.00),
    ("anthropic", "claude-3-5-sonnet"): (3.00, 15.00),
    ("anthropic", "claude-3-7-sonnet"): (3.00, 15.00),
    ("anthropic", "claude-3-haiku"): (0.25, 1.25),
    ("anthropic", "claude-3-opus"): (15.00, 75.00),
    ("anthropic", "claude-sonnet-4"): (3.00, 15.00),
    ("anthropic", "claude-opus-4"): (15.00, 75.00),
    ("anthropic", "claude-opus-4-5"): (5.00, 25.00),
    ("anthropic", "claude-haiku-4"): (1.00, 5.00),
}


def price_for(provider: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for the model, or None when unknown."""
    best: tuple[float, float] | None = None
    best_len = -1
    for (listed_provider, prefix), price in PRICES_PER_MILLION.items():
        if listed_provider == provider and model.startswith(prefix) and len(prefix) > best_len:
            best, best_len = price, len(prefix)
    return best


def cost_usd(provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What the call cost, or None when the model has no known price."""
    price = price_for(provider, model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
