"""What a tool may know about the conversation that called it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from ..mentions import neutralise_mentions


@dataclass(frozen=True)
class ToolContext:
    """Injected into any tool parameter typed ``ToolContext`` (and left out of the schema)."""

    user_id: str
    user_name: str
    team: str
    channel: str
    thread_ts: str
    slack: AsyncWebClient | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("bot.tools"))
    is_admin: bool = False
    allow_mass_mentions: bool = False
    # the thread has messages from people who are not admins (they may steer the agent)
    thread_has_others: bool = False

    async def post(self, text: str, **kwargs: Any) -> str | None:
        """Post a message in the conversation's thread; returns its ts."""
        if self.slack is None:
            raise RuntimeError("no Slack client in this context (running from the command line?)")
        if not self.allow_mass_mentions:
            text = neutralise_mentions(text)
        response = await self.slack.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text, unfurl_links=False, **kwargs
        )
        return response.get("ts")
