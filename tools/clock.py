"""Built-in plugin: the current date and time in a time zone."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field

from bot.plugins import tool


@tool
def current_time(
    timezone: Annotated[str, Field(description="An IANA time zone such as Europe/Paris, or UTC")] = "UTC",
) -> dict[str, str]:
    """The current date and time in a time zone. Use it for "what time is it in ...?"."""
    try:
        zone = dt.UTC if timezone.upper() in ("UTC", "Z", "GMT") else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        close = sorted(z for z in available_timezones() if timezone.lower() in z.lower())[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown time zone {timezone!r}.{hint}") from None
    now = dt.datetime.now(zone)
    return {
        "timezone": timezone,
        "iso": now.isoformat(timespec="seconds"),
        "readable": now.strftime("%A %d %B %Y, %H:%M"),
    }
