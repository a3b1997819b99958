"""Reading a thread back from Slack (``conversations.replies``, Tier 3): a 429 is waited out,
honouring Retry-After, until the caller's moment to give up, never for a number of tries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient


def retry_after(exc: SlackApiError) -> float:
    """Seconds Slack asked to wait (the header's name in any case; 1 s when it is missing)."""
    for name, value in (exc.response.headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                break
    return 1.0


async def replies_page(client: AsyncWebClient, *, give_up_at: float, **params: Any) -> Any:
    """One page of ``conversations.replies``; raises SlackApiError for anything but a 429,
    and for a 429 whose wait would end after ``give_up_at`` (``time.monotonic()``)."""
    while True:
        try:
            return await client.conversations_replies(**params)
        except SlackApiError as exc:
            if exc.response.status_code != 429:
                raise
            wait = retry_after(exc)
            if time.monotonic() + wait > give_up_at:
                raise
            await asyncio.sleep(wait)
