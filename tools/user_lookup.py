"""Built-in plugin: a Slack profile by name or email.

The directory is for the workspace's own people: by default only full members of the home
team (and admins) may look people up, not guests or Slack Connect users from another
organisation. ``BOT_USER_LOOKUP_ACCESS`` changes that: ``members`` (default), ``admins``
(admins only) or ``everyone``.
"""

from __future__ import annotations

import os
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
    refusal = await _refusal(ctx)
    if refusal:
        return [{"refused": refusal}]
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


async def _refusal(ctx: ToolContext) -> str | None:
    """Why the person asking may not read the directory, or None when they may."""
    access = os.environ.get("BOT_USER_LOOKUP_ACCESS", "members").strip().lower()
    if ctx.is_admin or access == "everyone":
        return None
    if access == "admins":
        return "the people directory is open to workspace admins only"
    assert ctx.slack is not None
    try:
        asker = (await ctx.slack.users_info(user=ctx.user_id)).get("user") or {}
    except SlackApiError:
        return "could not check who is asking, so the people directory stays closed"
    if asker.get("is_restricted") or asker.get("is_ultra_restricted"):
        return "guests cannot look people up in this workspace's directory"
    home = ctx.team
    if (asker.get("team_id") and home and asker.get("team_id") != home) or asker.get("is_stranger"):
        return "people from another organisation (Slack Connect) cannot look up this workspace's directory"
    return None
