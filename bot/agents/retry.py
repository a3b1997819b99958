"""Retries of calls to the agent service: backoff with full jitter that never waits less
than the service asked (Retry-After), ending at a deadline, never after a number of tries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from ..logs import log

logger = logging.getLogger("bot.agents")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    within_s: float = 60.0  # a call is tried again until this long after its first try
    max_attempts: int | None = None  # AGENTS_MAX_ATTEMPTS, when an operator caps the tries too
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # A Retry-After longer than this is not waited for: the caller gets RateLimitedError.
    max_retry_after: float = 60.0

    def deadline(self) -> float:
        return time.monotonic() + self.within_s

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        jitter = random.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))
        return max(retry_after or 0.0, jitter)

    def may_retry(self, deadline: float, attempt: int, delay: float) -> bool:
        """Another try still ends before the deadline (and within an operator's cap)."""
        if self.max_attempts is not None and attempt + 1 >= self.max_attempts:
            return False
        return time.monotonic() + delay < deadline


class RetryingTransport(httpx.AsyncBaseTransport):
    """Retries connect errors and 408/429/5xx answers until the policy's deadline, for the
    ``openai`` client (whose own retries end after a number of tries). Only a request whose
    body can be sent again is retried (a streamed upload is not)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replayable = isinstance(request.stream, httpx.ByteStream)
        deadline, attempt = self.policy.deadline(), 0
        while True:
            try:
                response = await self.inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                delay = self.policy.delay(attempt, None)
                if not replayable or not self.policy.may_retry(deadline, attempt, delay):
                    raise
                await _wait(request, attempt, delay, f"connect error: {exc!r}")
                attempt += 1
                continue
            if response.status_code not in RETRYABLE_STATUS or not replayable:
                return response
            retry_after = retry_after_seconds(response.headers)
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                return response
            delay = self.policy.delay(attempt, retry_after)
            if not self.policy.may_retry(deadline, attempt, delay):
                return response
            await response.aclose()
            await _wait(request, attempt, delay, f"HTTP {response.status_code}")
            attempt += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _wait(request: httpx.Request, attempt: int, delay: float, why: str) -> None:
    log(
        logger,
        "agent.retry",
        logging.WARNING,
        method=request.method,
        path=request.url.path,
        attempt=attempt + 1,
        delay_s=round(delay, 3),
        why=why,
    )
    await asyncio.sleep(delay)


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
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
