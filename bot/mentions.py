"""Mass mentions made harmless: shared by the Slack writer and the plugins' ``ToolContext.post``
(a leaf module, so the plugin layer needs nothing from the Slack layer)."""

from __future__ import annotations

import re

_MASS = re.compile(
    r"<!(here|channel|everyone)(?:\|[^>]*)?>|<!subteam\^([A-Z0-9]+)(?:\|([^>]*))?>|(?<![\w`])@(here|channel|everyone)\b"
)


def neutralise_mentions(text: str) -> str:
    """``<!channel>``, ``<!here>``, ``<!everyone>`` and user-group pings (and their plain
    ``@here`` forms) shown, but unable to notify anyone: a zero-width space breaks them."""

    def quiet(match: re.Match[str]) -> str:
        if match.group(1) or match.group(4):
            return "@\u200b" + (match.group(1) or match.group(4))
        return "@\u200b" + (match.group(3) or "group").lstrip("@")

    return _MASS.sub(quiet, text)


def escape_mrkdwn(text: str) -> str:
    """Text from outside (an agent, a tool) shown as itself in Slack mrkdwn: entities escaped
    (so no ``<!channel>`` or ``<url|label>`` forms), formatting marks made literal, mass
    mentions defused."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"([*~`])", "\u200b\\1\u200b", text)  # `_` only styles at word edges
    return neutralise_mentions(text)
