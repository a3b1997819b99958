"""Built-in plugin: a Slack profile by name or email."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from slack_sdk.errors import SlackApiError

from bot.plugins import ToolContext, tool


def _profile(user: dict[str, Any]) -> dict[str, Any]:
    profile = user.get("profile") or {}
    return {
        "id": user.get("id"),
        "name": profile.get("display_name") or user.get("name"),
        "real_name": profile.get("real_name") or user.get("real_name"),
        "title": profile.get("title") or "",
        "email": profile.get("email") or "",
        "time_zone": user.get("tz") or "",
        "is_bot": bool(user.get("is_bot")),
    }


@tool
async def lookup_slack_user(
    ctx: ToolContext,
    query: Annotated[str, Field(min_length=1, description="A display name, real name or email address")],
) -> list[dict[str, Any]]:
    """Find people in this Slack workspace by name or email; returns their profiles."""
    if ctx.slack is None:
        raise RuntimeError("no Slack client in this context")
    if "@" in query and "." in query.split("@")[-1]:
        try:
            response = await ctx.slack.users_lookupByEmail(email=query)
            return [_profile(response["user"])]
        except SlackApiError as exc:
            if exc.response.get("error") == "users_not_found":
                return []
            raise
    wanted = query.lstrip("@").lower()
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):  # pages of 200: a large workspace is bounded, not scanned forever
        response = await ctx.slack.users_list(limit=200, cursor=cursor)
        for user in response.get("members") or []:
            profile = _profile(user)
            names = (str(profile["name"] or ""), str(profile["real_name"] or ""))
            if not user.get("deleted") and any(wanted in name.lower() for name in names):
                found.append(profile)
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor or len(found) >= 10:
            break
    return found[:10]
