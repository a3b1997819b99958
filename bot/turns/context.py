"""What a turn knows besides the message: earlier messages of the thread (read once, on the
first mention), who asks and where (for the agent and for the tools), and which tools the
bot offers."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError

from ..agents import FunctionTool, TurnContext, function_tool
from ..logs import log
from ..plugins.context import ToolContext
from ..slack.assistant import PaneThreads, channel_name
from ..slack.reads import replies_page
from ..slack.sink import Turn
from ..slack.text import UserDirectory, slack_to_agent_text
from ..slack.workspaces import Workspaces
from ..store import ConversationKey, Store
from .ports import ToolRunner

logger = logging.getLogger("bot.turns")

BOT_THREAD_TTL_S = 90 * 86400.0
CONTEXT_PAGES = 5  # pages of 200 read at most for a first mention's context
CONTEXT_WAIT_S = 5.0  # how long a first mention waits out 429s to read its thread


@dataclass
class ThreadContext:
    """What a first mention learns of its thread: the latest messages as lines for the agent,
    and the files shared in those messages (oldest first)."""

    lines: list[str]
    files: list[dict[str, Any]]


NO_CONTEXT = ThreadContext([], [])
PEOPLES_SUBTYPES = (None, "file_share", "thread_broadcast")  # what a person wrote


@dataclass
class ContextReader:
    workspaces: Workspaces
    store: Store
    admins: frozenset[str]
    tools: ToolRunner | None
    allow_mass_mentions: bool = False
    context_messages: int = 15
    context_chars: int = 8_000
    panes: PaneThreads | None = None  # asked in Slack's assistant pane: what the person looks at
    _directories: dict[str, UserDirectory] = field(default_factory=dict)
    _channel_names: dict[tuple[str, str], str] = field(default_factory=dict)

    def users(self, team: str) -> UserDirectory:
        """Names and time zones as one workspace's bot sees them (cached per workspace)."""
        directory = self._directories.get(team)
        if directory is None:
            directory = self._directories[team] = UserDirectory(self.workspaces.client(team))
        return directory

    async def message_text(self, turn: Turn) -> str:
        """The message as the agent should read it (asked in the assistant pane: with the
        channel the person is looking at, so "this channel" means something)."""
        text = turn.text
        if turn.surface == "assistant" and self.panes is not None:
            viewing = (await self.panes.context(turn.channel, turn.thread_ts) or {}).get("channel_id")
            if viewing:
                where = await self._channel_ref(turn.team, viewing)
                text = f"{text}\n\n(Asked from Slack's assistant pane while looking at {where}.)"
        return await slack_to_agent_text(
            text,
            bot_user_id=await self.workspaces.bot_user_id(turn.team),
            names=self.users(turn.team).display_name,
            files=list(turn.files),
        )

    async def _channel_ref(self, team: str, channel: str) -> str:
        """``<#C123|name>`` (the agent then reads ``#name``); the bare id when Slack will not say."""
        name = self._channel_names.get((team, channel))
        if name is None:  # "" when it is not a channel this bot may read: the id is all there is
            name = self._channel_names[(team, channel)] = await channel_name(
                self.workspaces.client(team), channel
            )
        return f"<#{channel}|{name}>" if name else f"<#{channel}>"

    async def mark_others(self, key: ConversationKey) -> None:
        """Someone who is not an admin wrote in this thread (admin-only tools then ask first)."""
        await self.store.acquire_lease(f"others:{key.as_str()}", "1", BOT_THREAD_TTL_S)

    async def tool_context(self, turn: Turn) -> ToolContext:
        others = await self.store.lease_owner(f"others:{turn.key.as_str()}") is not None
        return ToolContext(
            user_id=turn.user,
            user_name=await self.users(turn.team).display_name(turn.user),
            team=turn.team,
            channel=turn.channel,
            thread_ts=turn.thread_ts,
            slack=self.workspaces.client(turn.team),
            logger=logging.getLogger("bot.tools"),
            is_admin=turn.user in self.admins,
            allow_mass_mentions=self.allow_mass_mentions,
            thread_has_others=others,
        )

    async def turn_context(self, turn: Turn, context: ToolContext) -> TurnContext:
        direct, users = turn.channel.startswith("D"), self.users(turn.team)
        return TurnContext(
            user_id=turn.user,
            user_name=context.user_name,
            timezone=await users.timezone(turn.user),
            channel_id=turn.channel,
            channel_name="" if direct else await users.channel_name(turn.channel),
            is_direct_message=direct,
        )

    async def function_tools(self, context: ToolContext) -> list[FunctionTool]:
        if self.tools is None:
            return []
        return [function_tool(d) for d in await self.tools.definitions(context)]

    async def thread_context(self, turn: Turn) -> ThreadContext:
        """The latest messages before the first mention in a human thread (the thread's own
        start matters less than what was just said), bounded by count and size, with the
        files shared in them; read once, when the conversation starts."""
        recent: deque[dict[str, Any]] = deque(maxlen=self.context_messages)
        cursor: str | None = None
        give_up_at = time.monotonic() + CONTEXT_WAIT_S  # a 429 delays the answer this long at most
        for _ in range(CONTEXT_PAGES):  # pages run oldest to newest: keep the tail
            try:
                response = await replies_page(
                    self.workspaces.client(turn.team),
                    give_up_at=give_up_at,
                    channel=turn.channel,
                    ts=turn.thread_ts,
                    latest=turn.ts,
                    inclusive=False,
                    limit=200,
                    cursor=cursor,
                )
            except SlackApiError as exc:
                log(logger, "turn.context_unavailable", logging.INFO, error=str(exc.response.get("error")))
                break
            recent.extend(
                m
                for m in response.get("messages") or []
                if m.get("ts") != turn.ts and not m.get("bot_id") and m.get("subtype") in PEOPLES_SUBTYPES
            )
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return await self._render(turn, list(recent))

    async def _render(self, turn: Turn, messages: list[dict[str, Any]]) -> ThreadContext:
        lines: list[str] = []
        users, bot_user_id = self.users(turn.team), await self.workspaces.bot_user_id(turn.team)
        for message in messages:
            if message.get("user") not in self.admins:
                await self.mark_others(turn.key)
            who = await users.display_name(message.get("user", "someone"))
            text = await slack_to_agent_text(
                message.get("text", ""),
                bot_user_id=bot_user_id,
                names=users.display_name,
                files=message.get("files"),
            )
            lines.append(f"@{who}: {text}")
        while lines and sum(len(line) + 1 for line in lines) > self.context_chars:
            lines.pop(0)  # keep the most recent
        if not lines:
            return NO_CONTEXT
        kept = messages[len(messages) - len(lines) :]
        return ThreadContext(
            ["Earlier messages in this Slack thread, for context:\n" + "\n".join(lines)],
            [file for message in kept for file in message.get("files") or []],
        )
