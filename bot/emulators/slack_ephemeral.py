"""Ephemeral messages and interaction ``response_url``s in the Slack emulator.

Sources (docs/service-contract.md): ``chat.postEphemeral`` (docs.slack.dev/reference/methods/
chat.postEphemeral: ``text`` or ``blocks``; shown to one ``user``; ``user_not_in_channel``);
"Modifying messages" (docs.slack.dev/messaging/modifying-messages: an ephemeral message cannot
be changed with ``chat.update``, only through the ``response_url`` of an interaction with it:
``replace_original`` / ``delete_original``); "Handling user interaction" (a ``response_url``
works up to five times within thirty minutes of the interaction).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .slack import Message

RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME_S = 30 * 60.0


@dataclass
class ResponseTarget:
    """What one interaction's ``response_url`` may change: the clicked message (an ordinary
    one or the clicker's ephemeral), for a few uses within half an hour."""

    user: str
    channel: str
    thread_ts: str | None
    message_ts: str
    ephemeral: dict[str, Any] | None
    issued: float = field(default_factory=time.monotonic)
    uses: int = 0


class EphemeralMethods:
    """Mixed into ``SlackEmulator``: ephemerals with blocks, clicks on them, response URLs."""

    # provided by SlackEmulator
    base_url: str
    ephemerals: list[dict[str, Any]]

    def _init_ephemerals(self) -> None:
        self.responses: dict[str, ResponseTarget] = {}
        self.responded: list[dict[str, Any]] = []  # every body posted to a response_url

    def ephemeral(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((e for e in self.ephemerals if e["channel"] == channel and e["ts"] == ts), None)

    def ephemerals_for(self, user: str, channel: str) -> list[dict[str, Any]]:
        """What one person has been shown privately in a channel, oldest first."""
        return [
            e
            for e in self.ephemerals
            if e["user"] == user and e["channel"] == channel and not e.get("deleted")
        ]

    def response_url(self, target: ResponseTarget) -> str:
        key = secrets.token_urlsafe(12)
        self.responses[key] = target
        return f"{self.base_url}/response/{key}"

    def _add_ephemeral(self, params: dict[str, Any], ts: str) -> dict[str, Any]:
        ephemeral = {
            "kind": "ephemeral",
            "channel": params["channel"],
            "user": params["user"],  # the one person who sees it
            "ts": ts,
            "thread_ts": params.get("thread_ts") or None,
            "text": str(params.get("text") or ""),
            "blocks": params.get("blocks") or None,
            "t": time.monotonic(),
        }
        self.ephemerals.append(ephemeral)
        self._notify(ephemeral)
        return ephemeral

    async def _respond(self, request: web.Request) -> web.Response:
        """A POST to an interaction's ``response_url``."""
        target = self.responses.get(request.match_info["key"])
        if target is None or time.monotonic() - target.issued > RESPONSE_URL_LIFETIME_S:
            return web.Response(status=404, text="expired_url")
        if target.uses >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        if body.get("response_type") == "in_channel":
            return web.Response(status=400, text="in_channel responses are not emulated")
        if not body.get("delete_original"):
            error = self._content_error({"text": body.get("text"), "blocks": body.get("blocks")})
            if error:
                return web.Response(status=400, text=error)
        target.uses += 1
        self.responded.append(body)
        self._respond_with(target, body)
        return web.Response(text="ok")

    def _respond_with(self, target: ResponseTarget, body: dict[str, Any]) -> None:
        text, blocks = str(body.get("text") or ""), body.get("blocks") or None
        if target.ephemeral is not None and (body.get("delete_original") or body.get("replace_original")):
            target.ephemeral.update(deleted=bool(body.get("delete_original")), text=text, blocks=blocks)
            self._notify({**target.ephemeral, "t": time.monotonic()})
            return
        message = self.find(target.channel, target.message_ts) if target.ephemeral is None else None
        if message is not None and body.get("delete_original"):
            message.deleted = True
            self._notify(self.message_change(message))
        elif message is not None and body.get("replace_original"):
            message.text, message.blocks = text, blocks
            self._changed(message)
        else:  # a new ephemeral to the person who clicked
            self._add_ephemeral(
                {"channel": target.channel, "user": target.user, "thread_ts": target.thread_ts, **body},
                self._next_ts(),
            )

    # provided by SlackEmulator
    def _notify(self, change: dict[str, Any]) -> None: ...
    def _content_error(self, params: dict[str, Any]) -> str | None: ...
    def find(self, channel: str, ts: str) -> Message | None: ...
    def message_change(self, message: Message) -> dict[str, Any]: ...
    def _changed(self, message: Message) -> None: ...
    def _next_ts(self) -> str: ...
