"""Slack's assistant side pane (Agents & AI Apps): a greeting and suggested prompts when a
person opens it, the channel they are looking at kept for the agent, a status line while
the agent works (instead of a placeholder) and a title from the first message.

Bolt's ``AsyncAssistant`` carries the pane's own events; the person's messages in the pane
are ordinary DM messages and take the usual way in (durable intake, queue, writer), marked
as the pane's so the reply waits for its first words instead of posting *Thinking…*.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.context.say.async_say import AsyncSay
from slack_bolt.context.set_suggested_prompts.async_set_suggested_prompts import AsyncSetSuggestedPrompts
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ..logs import log
from ..store import Store
from .native import error_of
from .sink import Turn

logger = logging.getLogger("bot.slack.assistant")

PANE_TTL_S = 30 * 86400.0  # how long a pane thread's context is kept after it was opened
TITLE_CHARS = 80
STATUS = "is thinking…"
LOADING_MESSAGES = ["Reading your message…", "Asking the agent…", "Putting the answer together…"]
DEFAULT_GREETING = "Hi! Ask me anything, or pick one of the prompts below."
MAX_PROMPTS = 4  # Slack shows at most four


@dataclass(frozen=True)
class Prompt:
    title: str
    message: str


DEFAULT_PROMPTS = (
    Prompt("Summarize {channel}", "Summarize the recent discussion in {channel}."),
    Prompt("What can you do?", "What can you help me with, and which tools can you use?"),
    Prompt("Draft a message", "Help me draft a short, clear message to my team."),
)


def prompts_from(pairs: list[tuple[str, str]]) -> tuple[Prompt, ...]:
    """``BOT_SUGGESTED_PROMPTS`` as parsed by the settings; none: the defaults."""
    return tuple(Prompt(title, message) for title, message in pairs) or DEFAULT_PROMPTS


def plain_title(text: str) -> str:
    """A message as a thread title: Slack's markup as a person reads it, on one line."""
    text = re.sub(r"<#[A-Z0-9]+\|([^>]+)>", r"#\1", text)
    text = re.sub(r"<#[A-Z0-9]+>", "a channel", text)
    text = re.sub(r"<@([A-Z0-9]+)(?:\|([^>]+))?>", lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2", text)
    text = re.sub(r"<(https?://[^>]+)>", r"\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())[:TITLE_CHARS]


class PaneThreads:
    """Which DM threads are assistant panes and what each person is looking at, in the store
    (any replica may take the person's next message)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _key(channel: str, thread_ts: str) -> str:
        return f"pane:{channel}:{thread_ts}"

    async def remember(self, channel: str, thread_ts: str, context: dict[str, Any]) -> None:
        kept = {k: str(v) for k, v in (context or {}).items() if k in ("channel_id", "team_id") and v}
        await self.store.put_approval(self._key(channel, thread_ts), {"context": kept}, PANE_TTL_S)

    async def context(self, channel: str, thread_ts: str) -> dict[str, str] | None:
        """The pane's context (``channel_id``: the channel the person is looking at); None
        when this thread is not a pane."""
        found = await self.store.get_approval(self._key(channel, thread_ts))
        if found is None:
            return None
        return dict(found[0].get("context") or {})

    async def first_message(self, channel: str, thread_ts: str) -> bool:
        """True once per pane thread: its first message names it."""
        return await self.store.claim("pane-title", f"{channel}:{thread_ts}", PANE_TTL_S)


class AssistantPane:
    def __init__(
        self, threads: PaneThreads, *, prompts: tuple[Prompt, ...] = DEFAULT_PROMPTS, greeting: str = ""
    ) -> None:
        self.threads = threads
        self.prompts = prompts
        self.greeting = greeting or DEFAULT_GREETING

    def middleware(self) -> AsyncAssistant:
        assistant = AsyncAssistant()
        assistant.thread_started(self._started)
        assistant.thread_context_changed(self._context_changed)
        return assistant

    def prompts_for(self, viewing: str | None, name: str = "") -> list[dict[str, str]]:
        """The prompts to offer, ``{channel}`` filled in (or the prompt left out)."""
        chosen = []
        for prompt in self.prompts:
            if "{channel}" in prompt.title + prompt.message:
                if not viewing:
                    continue
                where = f"<#{viewing}|{name}>" if name else f"<#{viewing}>"
                prompt = Prompt(
                    prompt.title.replace("{channel}", "this channel"),
                    prompt.message.replace("{channel}", where),
                )
            chosen.append({"title": prompt.title, "message": prompt.message})
        return chosen[:MAX_PROMPTS]

    async def _started(
        self,
        event: dict[str, Any],
        say: AsyncSay,
        set_suggested_prompts: AsyncSetSuggestedPrompts,
        client: AsyncWebClient,
    ) -> None:
        thread = event.get("assistant_thread") or {}
        context = thread.get("context") or {}
        channel, thread_ts = str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or "")
        await self.threads.remember(channel, thread_ts, context)
        try:
            await say(self.greeting)
            viewing = context.get("channel_id")
            prompts = self.prompts_for(viewing, await channel_name(client, viewing) if viewing else "")
            if prompts:
                await set_suggested_prompts(prompts=prompts, title="Try one of these")
        except SlackApiError as exc:  # the pane still works: the person can type
            log(logger, "assistant.greeting_failed", logging.WARNING, error=error_of(exc), channel=channel)
        log(
            logger,
            "assistant.thread_started",
            channel=channel,
            thread_ts=thread_ts,
            viewing=context.get("channel_id"),
        )

    async def _context_changed(self, event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        channel, thread_ts = str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or "")
        await self.threads.remember(channel, thread_ts, thread.get("context") or {})

    async def working(self, client: AsyncWebClient, turn: Turn) -> None:
        """While the agent works: the pane's status line (Slack clears it when the reply is
        posted), and the thread's title from its first message."""
        try:
            await client.assistant_threads_setStatus(
                channel_id=turn.channel,
                thread_ts=turn.thread_ts,
                status=STATUS,
                loading_messages=LOADING_MESSAGES,
            )
            if await self.threads.first_message(turn.channel, turn.thread_ts):
                title = plain_title(turn.text) or "New chat"
                await client.assistant_threads_setTitle(
                    channel_id=turn.channel, thread_ts=turn.thread_ts, title=title
                )
        except SlackApiError as exc:  # a status or title is a nicety: the answer goes on
            log(logger, "assistant.status_failed", logging.INFO, error=error_of(exc), channel=turn.channel)


async def channel_name(client: AsyncWebClient, channel: str) -> str:
    """The channel's name, so a prompt reads "#general" (empty when Slack will not say)."""
    try:
        info = await client.conversations_info(channel=channel)
    except SlackApiError:
        return ""
    return str((info.get("channel") or {}).get("name") or "")
