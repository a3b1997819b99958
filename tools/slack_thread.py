"""Built-in plugin: read the Slack thread the conversation is in."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bot.plugins import ToolContext, tool
from bot.slack.text import UserDirectory, slack_to_agent_text


@tool
async def read_slack_thread(
    ctx: ToolContext,
    limit: Annotated[int, Field(ge=1, le=100, description="How many recent messages to read")] = 30,
) -> list[dict[str, str]]:
    """Read the messages of the current Slack thread (who said what), oldest first.

    Use it when the user refers to something said earlier in the thread.
    """
    if ctx.slack is None or not ctx.channel or not ctx.thread_ts:
        raise RuntimeError("there is no Slack thread in this context")
    response = await ctx.slack.conversations_replies(channel=ctx.channel, ts=ctx.thread_ts, limit=limit)
    names = UserDirectory(ctx.slack)
    messages = []
    for message in (response.get("messages") or [])[-limit:]:
        who = "the bot" if message.get("bot_id") else "@" + await names.display_name(message.get("user", "?"))
        text = await slack_to_agent_text(message.get("text", ""), bot_user_id=None, names=names.display_name)
        messages.append({"from": who, "ts": message.get("ts", ""), "text": text})
    return messages
