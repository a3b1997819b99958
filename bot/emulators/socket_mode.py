"""Slack's Socket Mode, server side: ``apps.connections.open`` hands out a one-use
websocket URL; each connection gets ``hello``; events, interactions and slash commands go
out as envelopes the app must ack within 3 s, and an envelope not acked (or sent while no
connection is up) is retried with ``retry_attempt``/``retry_reason``, as Slack does.

Sources: api.slack.com/apis/socket-mode (hello, envelopes, acks, ``disconnect`` with
``refresh_requested``/``warning``/``link_disabled``); api.slack.com/methods/apps.connections.open
(app-level token only: ``not_allowed_token_type`` for any other).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

ACK_TIMEOUT_S = 3.0


class SocketModeHub:
    def __init__(self, app_id: str, app_token: str, retry_delays: Sequence[float]) -> None:
        self.app_id = app_id
        self.app_token = app_token
        self.retry_delays = tuple(retry_delays)
        self.connections: list[tuple[web.WebSocketResponse, web.Request]] = []
        self.opened = 0  # connections ever opened (a reconnect adds one)
        self.envelopes: list[dict[str, Any]] = []  # every envelope sent, with its outcome
        self._tickets: set[str] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._rr = 0

    # -- apps.connections.open and the websocket -----------------------------------------

    def open_connection(self, token: str, ws_base: str) -> dict[str, Any]:
        if not token:
            return {"ok": False, "error": "not_authed"}
        if not token.startswith("xapp-"):  # a bot or user token cannot open a socket
            return {"ok": False, "error": "not_allowed_token_type"}
        if token != self.app_token:
            return {"ok": False, "error": "invalid_auth"}
        ticket = secrets.token_hex(12)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{ws_base}/link/?ticket={ticket}&app_id={self.app_id}"}

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:  # one use each, like Slack's
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append((ws, request))
        self.opened += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.connections),
                "debug_info": {"host": "emulator", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, AttributeError):
                    ack = json.loads(message.data)
                    waiter = self._acks.get(str(ack.get("envelope_id")))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(ack.get("payload") or {})
        finally:
            with contextlib.suppress(ValueError):
                self.connections.remove((ws, request))
        return ws

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        on_attempt: Callable[[int, bool, float], None] | None = None,
    ) -> dict | None:
        """One envelope, retried until acked (Slack's schedule); the ack's payload, or None
        when every attempt went unacked. ``on_attempt(attempt, acked, ms)`` sees each try."""
        reason = ""
        for attempt in range(len(self.retry_delays) + 1):
            started = time.monotonic()
            answer, reason = await self.attempt(kind, payload, accepts_response_payload, attempt, reason)
            ms = (time.monotonic() - started) * 1000
            self.envelopes.append({"type": kind, "attempt": attempt, "acked": answer is not None, "ms": ms})
            if on_attempt is not None:
                on_attempt(attempt, answer is not None, ms)
            if answer is not None:
                return answer
            if attempt < len(self.retry_delays):
                await asyncio.sleep(self.retry_delays[attempt])
        return None

    async def attempt(
        self, kind: str, payload: dict[str, Any], accepts: bool, attempt: int, reason: str
    ) -> tuple[dict[str, Any] | None, str]:
        """One try of one envelope (``retry_attempt`` = ``attempt``): the ack's payload (or
        None) and, when unacked, the reason Slack gives on the next try."""
        if not self.connections:
            return None, "no_connection"
        ws, _ = self.connections[self._rr % len(self.connections)]
        self._rr += 1
        envelope_id = str(uuid.uuid4())
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = waiter
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts,
            "retry_attempt": attempt,
            "retry_reason": reason,
        }
        try:
            await ws.send_json(envelope)
            return await asyncio.wait_for(waiter, ACK_TIMEOUT_S), ""
        except TimeoutError:
            return None, "timeout"
        except (ConnectionError, RuntimeError):
            return None, "connection_failed"
        finally:
            self._acks.pop(envelope_id, None)

    # -- what Slack does to connections --------------------------------------------------

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack asks every connection to reconnect (it closes them soon after)."""
        for ws, _ in list(self.connections):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(
                    {"type": "disconnect", "reason": reason, "debug_info": {"host": "emulator"}}
                )

    def drop(self) -> None:
        """Every connection lost at once, with no close frame (a network failure)."""
        for _, request in list(self.connections):
            if request.transport is not None:
                request.transport.abort()
