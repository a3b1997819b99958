"""Slack text in: what a person typed, made readable for the agent.

Slack sends ``<@U123>`` for mentions, ``<#C123|name>`` for channels, ``<url|label>`` for
links and escapes ``& < >`` as entities. The agent should read what a person reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

_TOKEN = re.compile(r"<([^<>]*)>")
NameLookup = Callable[[str], Awaitable[str]]


class UserDirectory:
    """Display names and time zones from ``users.info``, channel names from
    ``conversations.info``: cached (they rarely change within an hour)."""

    def __init__(self, client: AsyncWebClient, ttl_s: float = 3600.0) -> None:
        self._client = client
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str, str | None]] = {}
        self._channels: dict[str, tuple[float, str]] = {}

    async def _user(self, user_id: str) -> tuple[str, str | None]:
        hit = self._cache.get(user_id)
        if hit and hit[0] > time.monotonic():
            return hit[1], hit[2]
        timezone: str | None = None
        try:
            response = await self._client.users_info(user=user_id)
            user: dict[str, Any] = response.get("user") or {}
            profile = user.get("profile") or {}
            name = profile.get("display_name") or profile.get("real_name") or user.get("name") or user_id
            timezone = user.get("tz") or None
        except SlackApiError:
            name = user_id  # unknown or no permission: keep the id rather than fail the turn
        self._cache[user_id] = (time.monotonic() + self._ttl, name, timezone)
        return name, timezone

    async def display_name(self, user_id: str) -> str:
        return (await self._user(user_id))[0]

    async def timezone(self, user_id: str) -> str | None:
        return (await self._user(user_id))[1]

    async def channel_name(self, channel: str) -> str:
        hit = self._channels.get(channel)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            response = await self._client.conversations_info(channel=channel)
            name = str((response.get("channel") or {}).get("name") or "")
        except SlackApiError:
            name = ""
        self._channels[channel] = (time.monotonic() + self._ttl, name)
        return name


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def slack_to_agent_text(
    text: str,
    *,
    bot_user_id: str | None,
    names: NameLookup,
    files: list[dict[str, Any]] | None = None,
) -> str:
    """The message as the agent should read it (bot mention removed, entities decoded)."""
    parts: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        parts.append(unescape(text[position : match.start()]))
        parts.append(await _token(match.group(1), bot_user_id, names))
        position = match.end()
    parts.append(unescape(text[position:]))
    readable = re.sub(r"[ \t]{2,}", " ", "".join(parts)).strip()
    if files:
        listed = ", ".join(_file_label(f) for f in files)
        readable = f"{readable}\n\n[Attached files: {listed}]".strip()
    return readable


async def _token(inner: str, bot_user_id: str | None, names: NameLookup) -> str:
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        user_id = target[1:]
        if user_id == bot_user_id:
            return ""
        return "@" + (unescape(label) if label else await names(user_id))
    if target.startswith("#"):
        return "#" + (unescape(label) if label else target[1:])
    if target.startswith("!"):
        command = target[1:]
        if command in ("here", "channel", "everyone"):
            return "@" + command
        if command.startswith("subteam^"):
            return unescape(label) if label else "@group"
        return unescape(label) if label else ""
    url = unescape(target)
    if url.startswith("mailto:"):
        return unescape(label) if label else url.removeprefix("mailto:")
    if label and unescape(label) != url:
        return f"{unescape(label)} ({url})"
    return url


def _file_label(file: dict[str, Any]) -> str:
    name = file.get("name") or file.get("title") or "file"
    return f"{name} ({file.get('filetype') or file.get('mimetype') or 'file'})"
