"""Backoff with full jitter that never waits less than the service asked (Retry-After)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # A Retry-After longer than this is not waited for: the caller gets RateLimitedError.
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        jitter = random.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))
        return max(retry_after or 0.0, jitter)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Azure sends ``retry-after-ms``/``x-ms-retry-after-ms``; HTTP has ``Retry-After``."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None
