"""Retrying transient provider failures: exponential backoff, full jitter, retry-after.

The SDKs can retry by themselves, but they are built with max_retries=0 so
that this loop is the only one: it is testable (delays come from the
config), it logs every retry, and it honours the server's retry-after.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("optimizer_service.llm")

T = TypeVar("T")


class TransientFailure(Exception):
    """A provider failure worth retrying (429, 5xx, timeout, connection reset)."""

    def __init__(self, message: str, *, retry_after: float | None = None, kind: str = "transient") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    base_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (1-based).

        Full jitter (uniform in [0, base * 2**(attempt-1)]) spreads many
        clients apart; a server's retry-after is a floor, since retrying
        sooner only earns another 429. Both are capped at max_s.
        """
        backoff = rng.uniform(0, self.base_s * (2 ** (attempt - 1)))
        if retry_after is not None and retry_after >= 0:
            backoff = max(backoff, retry_after)
        return min(backoff, self.max_s)


@dataclass
class RetryOutcome:
    attempts: int
    waited_s: float


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, *, describe: str,
                      sleep: Callable[[float], None] = time.sleep,
                      rng: random.Random | None = None) -> tuple[T, RetryOutcome]:
    """Run fn(), retrying TransientFailure up to policy.max_retries times.

    Returns fn's result and how many attempts it took. Re-raises the last
    TransientFailure when the retries run out; any other exception passes
    through at once.
    """
    rng = rng or random.Random()
    waited = 0.0
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), RetryOutcome(attempts=attempt, waited_s=waited)
        except TransientFailure as failure:
            if attempt > policy.max_retries:
                log.warning("%s: giving up after %d attempts: %s", describe, attempt, failure)
                raise
            delay = policy.delay(attempt, failure.retry_after, rng)
            log.warning("%s: attempt %d failed (%s); retrying in %.3fs", describe, attempt, failure, delay)
            sleep(delay)
            waited += delay
