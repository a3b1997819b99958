"""A reply's own messages found again in its thread: each page of a reply names its turn
(and page) in Slack's message metadata, so a reply can pick up messages an earlier process
posted, remove copies another replica left, and find a post whose answer was lost on the way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ..logs import log
from .reads import replies_page

logger = logging.getLogger("bot.slack.reply_thread")

REPLY_EVENT = "agent_reply"  # the message metadata type that names a reply's turn and page
READ_WAIT_S = 60.0  # how long a thread read waits out 429s before the reply goes on without it
READ_PAGES = 5  # pages of 200 thread messages read at most


def reply_metadata(turn: str, page: int) -> dict[str, Any]:
    return {"event_type": REPLY_EVENT, "event_payload": {"turn": turn, "page": page}}


@dataclass
class ReplyThread:
    """The thread one reply (``turn``) is written in."""

    client: AsyncWebClient
    channel: str
    thread_ts: str
    turn: str
    log_fields: dict[str, Any]

    def page_named(self, message: dict[str, Any]) -> int | None:
        """Which of this turn's pages a message says it is (by its metadata), if any."""
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if meta.get("event_type") == REPLY_EVENT and payload.get("turn") == self.turn:
            return int(payload.get("page") or 0)
        return None

    async def own(self, *, deadline: float) -> list[tuple[int, str]] | None:
        """(page, ts) of every message in the thread that names this turn; None when the
        thread could not be read."""
        messages = await self.messages(deadline=deadline)
        if messages is None:
            return None
        return [(page, str(m["ts"])) for m in messages if (page := self.page_named(m)) is not None]

    async def messages(self, *, deadline: float) -> list[dict[str, Any]] | None:
        """The thread's messages with their metadata; None when it could not be read."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            for _ in range(READ_PAGES):
                response = await replies_page(
                    self.client,
                    give_up_at=min(deadline, time.monotonic() + READ_WAIT_S),
                    channel=self.channel,
                    ts=self.thread_ts,
                    include_all_metadata=True,
                    limit=200,
                    cursor=cursor,
                )
                found.extend(m for m in response.get("messages") or [] if isinstance(m, dict) and m.get("ts"))
                cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
        except (SlackApiError, ValueError, TypeError, KeyError) as exc:
            log(logger, "slack.thread_unreadable", logging.INFO, error=repr(exc), **self.log_fields)
            return None
        return found

    async def lost_post(
        self, page: int, known: set[str], started: set[str], *, deadline: float
    ) -> list[tuple[str, str | None]] | None:
        """Where a post (or stream start) of ``page`` whose answer never came ended up:
        (ts, the text a stream start held, or None for a post), oldest first; None when the
        thread could not be read. A post names its page; a stream carries no metadata until
        it stops, so it is the app's unnamed message holding exactly what a lost start sent."""
        messages = await self.messages(deadline=deadline)
        if messages is None:
            return None
        found: list[tuple[str, str | None]] = []
        for message in messages:
            ts = str(message["ts"])
            if ts in known or ts == self.thread_ts or not message.get("bot_id") or message.get("files"):
                continue
            text = str(message.get("text") or "")
            if self.page_named(message) == page:
                found.append((ts, None))
            elif not message.get("metadata") and text in started:
                found.append((ts, text))
        return found
