"""Emulator of the Slack Web API and of Slack's event delivery, for the playground, the
tests and the benchmarks.

The real ``slack_sdk`` ``AsyncWebClient`` talks to it through ``base_url`` (it serves
``/api/<method>``). It keeps workspaces' messages, enforces per-method rate limits with
``429`` + ``Retry-After``, validates what Slack validates (``msg_too_long``,
``invalid_blocks``, ``message_not_found``, ``cant_update_message``), and records a timeline
of every call and of every state each message went through, so tests assert on what a
person in Slack would have seen.

It also plays the people: ``user_posts`` stores a message and delivers the Events API
callbacks Slack would send (``app_mention`` and ``message``), signed with the signing
secret, retried with ``X-Slack-Retry-Num`` when the app does not answer 200 in 3 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from aiohttp import web

from .slack_assistant import AssistantMethods
from .slack_ephemeral import EphemeralMethods, ResponseTarget
from .slack_files import SlackFiles
from .slack_oauth import IssuedToken, OAuthApp, SlackInstalls, Workspace
from .slack_streams import StreamMethods, _valid_metadata
from .socket_mode import SocketModeHub

logger = logging.getLogger("bot.emulators.slack")

TEXT_LIMIT = 40_000
MARKDOWN_LIMIT = 12_000
MAX_BLOCKS = 50
LB_DOWN_S = 10.0  # how long the emulated load balancer leaves out a replica that refused a connection
BLOCK_TYPES = frozenset(
    {
        "section",
        "markdown",
        "actions",
        "context",
        "divider",
        "header",
        "rich_text",
        "image",
        "context_actions",
    }
)


@dataclass
class Limit:
    """A token bucket: ``per_minute`` sustained, ``burst`` at once; ``scope`` team or channel."""

    per_minute: float
    burst: float
    scope: str = "team"


TIER2, TIER3, TIER4 = 20.0, 50.0, 100.0


def default_limits() -> dict[str, Limit]:
    return {
        "chat.update": Limit(TIER3, 10),
        "chat.delete": Limit(TIER3, 10),
        "chat.postMessage": Limit(60, 6, scope="channel"),
        "chat.postEphemeral": Limit(TIER4, 20),
        # a stream starts like a post (per channel); appends are Tier 4 (stops paced with them)
        "chat.startStream": Limit(60, 6, scope="channel"),
        "chat.appendStream": Limit(TIER4, 20),
        "chat.stopStream": Limit(TIER4, 20),
        "conversations.replies": Limit(TIER3, 10),
        "conversations.info": Limit(TIER3, 10),
        "users.info": Limit(TIER4, 20),
        "users.list": Limit(TIER2, 5),
        "users.lookupByEmail": Limit(TIER3, 10),
        "reactions.add": Limit(TIER3, 10),
        "files.getUploadURLExternal": Limit(TIER4, 20),
        "files.completeUploadExternal": Limit(TIER4, 20),
        "assistant.threads.setStatus": Limit(600, 60),
        "assistant.threads.setSuggestedPrompts": Limit(TIER3, 10),
        "assistant.threads.setTitle": Limit(TIER3, 10),
    }


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class Call:
    t: float
    method: str
    params: dict[str, Any]
    ok: bool
    error: str | None = None
    status: int = 200
    team: str = ""  # the workspace whose token made the call


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] | None = None
    files: list[dict[str, Any]] | None = None
    deleted: bool = False
    history: list[tuple[float, str, list[dict[str, Any]] | None]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None

    def as_dict(self, *, with_metadata: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "text": self.text,
            "user": self.user,
        }
        if self.bot_id:
            doc["bot_id"] = self.bot_id
            doc["app_id"] = "A0EMUAPP"
        if self.thread_ts:
            doc["thread_ts"] = self.thread_ts
        if self.blocks is not None:
            doc["blocks"] = self.blocks
        if self.files:
            doc["files"] = self.files
        if with_metadata and self.metadata is not None:
            doc["metadata"] = self.metadata
        return doc

    @property
    def visible_text(self) -> str:
        """What a person reads: the markdown blocks if any, else the text."""
        if self.blocks:
            parts = [b.get("text", "") for b in self.blocks if b.get("type") == "markdown"]
            if parts:
                return "\n".join(parts)
        return self.text


class SlackEmulator(StreamMethods, AssistantMethods, EphemeralMethods):
    """One emulated workspace. ``await start()`` returns the Web API base URL."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-emulator-token",
        signing_secret: str = "emulator-signing-secret",
        limits: dict[str, Limit] | None = None,
        enforce_limits: bool = True,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
        ack_timeout: float = 3.0,
        latency: float = 0.0,
        app_token: str = "xapp-1-A0EMUAPP-emulator",
    ) -> None:
        self.team_id = "T0EMU"
        self.bot_user = "U0BOT"
        self.bot_id = "B0BOT"
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.limits = limits if limits is not None else default_limits()
        self.enforce_limits = enforce_limits
        self.retry_delays = retry_delays
        self.ack_timeout = ack_timeout
        self.latency = latency  # seconds added to every Web API call ("a slow Slack")
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[Message]] = {}
        self.calls: list[Call] = []
        self.deliveries: list[dict[str, Any]] = []  # every events request sent, with its answer
        self.ephemerals: list[dict[str, Any]] = []  # chat.postEphemeral: seen by one person each
        self.events_url: str | None = None
        self.events_urls: list[str] = []  # set instead of events_url: a round-robin load balancer
        self.app_token = app_token
        # Socket Mode: once set, events, interactions and commands go out over websockets
        self.socket_mode = False
        self.sockets = SocketModeHub("A0EMUAPP", app_token, retry_delays)
        # every workspace the app can be in; tokens are each bound to one of them
        self.workspaces = {self.team_id: Workspace(self.team_id, "Emulated", self.bot_user, self.bot_id)}
        self.installs = SlackInstalls(tokens={bot_token: IssuedToken(self.team_id)})
        self.calling_team = ""  # the workspace of the call being answered
        self.files = SlackFiles(self.team_id, lambda token: self.installs.team_of(token)[0] is not None)
        self._rr = 0
        self._down: dict[str, float] = {}  # Request URL -> when it last refused a connection
        self.listeners: list[Any] = []  # callables taking one dict: messages and calls, as they happen
        self.forced: dict[str, list[tuple[str, float | None]]] = {}  # method -> [(error, retry_after)]
        self.storms: dict[str, float] = {}  # method -> monotonic time its 429 storm ends
        self.losing: dict[str, int] = {}  # method -> how many more answers are lost on the way
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._ts = itertools.count(1)
        self._epoch = int(time.time())
        self._runner: web.AppRunner | None = None
        self._delivery_tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.base_url = ""
        self._init_streams()
        self._init_assistant()
        self._init_ephemerals()
        self._add_user(self.bot_user, "agentbot", "Agent Bot", is_bot=True)
        self._add_user("U0ALICE", "alice", "Alice Liddell", email="alice@example.com")
        self._add_user("U0BOB", "bob", "Bob Builder", email="bob@example.com")
        self.add_channel("C0GENERAL", "general")
        self.add_channel("D0ALICE", None, im_user="U0ALICE")

    # -- set up -----------------------------------------------------------------------

    def _add_user(
        self,
        uid: str,
        name: str,
        real: str,
        *,
        is_bot: bool = False,
        email: str | None = None,
        guest: bool = False,
        team_id: str | None = None,
    ) -> None:
        self.users[uid] = {
            "id": uid,
            "team_id": team_id or self.team_id,
            "name": name,
            "real_name": real,
            "is_bot": is_bot,
            "is_restricted": guest,  # users.info: multi-channel guests
            "is_ultra_restricted": False,
            "deleted": False,
            "tz": "Europe/London",
            "profile": {"display_name": name, "real_name": real, "email": email},
        }

    def add_user(
        self,
        uid: str,
        name: str,
        real: str,
        email: str | None = None,
        *,
        guest: bool = False,
        team_id: str | None = None,
    ) -> None:
        """A person; ``guest`` for a (multi-channel) guest, ``team_id`` for a Slack Connect user."""
        self._add_user(uid, name, real, email=email, guest=guest, team_id=team_id)

    def add_channel(
        self, cid: str, name: str | None, *, im_user: str | None = None, team: str | None = None
    ) -> None:
        self.channels[cid] = {
            "team": team or self.team_id,
            "id": cid,
            "name": name,
            "is_channel": im_user is None,
            "is_im": im_user is not None,
            "is_private": False,
            "user": im_user,
            "created": self._epoch,
        }
        self.messages.setdefault(cid, [])

    def add_workspace(self, team_id: str, name: str, *, channel: tuple[str, str] | None = None) -> Workspace:
        """Another workspace (its own bot user, people and channels); the app gets a token for
        it by being installed there (``enable_oauth``, then the consent page)."""
        suffix = team_id.removeprefix("T")
        workspace = Workspace(team_id, name, f"U{suffix}BOT", f"B{suffix}BOT")
        self.workspaces[team_id] = workspace
        self._add_user(workspace.bot_user, "agentbot", "Agent Bot", is_bot=True, team_id=team_id)
        if channel is not None:
            self.add_channel(channel[0], channel[1], team=team_id)
        return workspace

    def enable_oauth(
        self,
        client_id: str,
        client_secret: str,
        *,
        redirect_urls: tuple[str, ...] = (),
        token_rotation: bool = False,
        token_ttl_s: int = 43_200,
    ) -> None:
        """The app's OAuth settings, as on its api.slack.com page."""
        self.installs.app = OAuthApp(client_id, client_secret, redirect_urls, token_rotation, token_ttl_s)

    def sign_in(self, team: str, user: str) -> None:
        """Who the browser that opens the consent page is signed in to Slack as."""
        self.installs.signed_in = (team, user)

    def uninstall(self, team: str) -> None:
        """An admin removes the app: its tokens stop working and the app is told."""
        self.installs.revoke(team)
        self.deliver({"type": "app_uninstalled", "event_ts": f"{time.time():.6f}"}, team=team)

    def revoke_bot_token(self, team: str) -> None:
        self.installs.revoke(team)
        tokens = {"oauth": [], "bot": [self.workspaces[team].bot_user]}
        self.deliver(
            {"type": "tokens_revoked", "tokens": tokens, "event_ts": f"{time.time():.6f}"}, team=team
        )

    def team_of_channel(self, channel: str) -> str:
        return str(self.channels.get(channel, {}).get("team") or self.team_id)

    def _workspace(self) -> Workspace:
        return self.workspaces[self.calling_team or self.team_id]

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self.sockets.websocket)
        app.router.add_post("/response/{key}", self._respond)
        self.installs.routes(app, self.workspaces)
        self.files.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        self.files.base_url = self.base_url
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.ack_timeout, connect=2.0))
        return self.api_url

    async def stop(self) -> None:
        for task in list(self._delivery_tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def force_error(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        times: int = 1,
        retry_after: float | None = 1.0,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (``ratelimited`` answers 429)."""
        self.forced.setdefault(method, []).extend([(error, retry_after)] * times)

    def lose_response(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are carried out, but the connection breaks
        before the answer is sent (a network failure after Slack did the work)."""
        self.losing[method] = self.losing.get(method, 0) + times

    def storm(self, methods: list[str], seconds: float) -> None:
        """Every call of these methods answers 429 (with Retry-After) for ``seconds``."""
        until = time.monotonic() + seconds
        for method in methods:
            self.storms[method] = until

    # -- queries for tests --------------------------------------------------------------

    def _notify(self, change: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(change)
            except Exception:
                logger.exception("slack emulator listener failed")

    def message_change(self, message: Message) -> dict[str, Any]:
        return {
            "kind": "message",
            "channel": message.channel,
            "ts": message.ts,
            "thread_ts": message.thread_ts,
            "user": message.user,
            "bot": bool(message.bot_id),
            "text": message.text,
            "blocks": message.blocks,
            "deleted": message.deleted,
            "files": message.files,
            **self._stream_fields(message),
        }

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if self.listeners:
            params = call.params
            self._notify(
                {
                    "kind": "call",
                    "t": call.t,
                    "method": call.method,
                    "ok": call.ok,
                    "error": call.error,
                    "status": call.status,
                    "channel": params.get("channel") or params.get("channel_id"),
                    "ts": params.get("ts"),
                    "thread_ts": params.get("thread_ts"),
                }
            )

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return [
            m
            for m in self.messages[channel]
            if not m.deleted and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]

    def bot_replies(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.thread(channel, thread_ts) if m.bot_id]

    def find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages.get(channel, []) if m.ts == ts), None)

    # -- the Web API --------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{self._epoch}.{next(self._ts):06d}"

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.read()
            ctype = request.content_type
            if ctype == "application/json" and raw:
                body = json.loads(raw)
                if isinstance(body, dict):
                    params.update(body)
            elif raw:
                params.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        for key in ("blocks", "attachments", "prompts", "metadata"):  # form posts: JSON text
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    params[key] = "__invalid__"
        return params

    def _take_token(self, method: str, params: dict[str, Any]) -> float | None:
        """None when the call may go; else the seconds to wait (Retry-After)."""
        limit = self.limits.get(method)
        if not self.enforce_limits or limit is None:
            return None
        scope = str(params.get("channel", "")) if limit.scope == "channel" else self.calling_team
        now = time.monotonic()
        bucket = self._buckets.setdefault((method, scope), _Bucket(limit.burst, now))
        rate = limit.per_minute / 60.0
        bucket.tokens = min(limit.burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / rate

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except ValueError:
            return self._answer(method, {}, {"ok": False, "error": "invalid_json"})
        if self.latency:
            await asyncio.sleep(self.latency)
        self.calling_team = ""
        if method == "oauth.v2.access":  # client credentials, not a token
            authorization = request.headers.get("Authorization", "")
            return self._answer(method, params, self.installs.access(authorization, params))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(params.pop("token", ""))
        if not token:
            return self._answer(method, params, {"ok": False, "error": "not_authed"})
        if method == "apps.connections.open":
            ws_base = (self.base_url or "").replace("http://", "ws://", 1)
            return self._answer(method, params, self.sockets.open_connection(token, ws_base))
        if token == self.app_token:  # an app-level token opens connections, nothing else
            return self._answer(method, params, {"ok": False, "error": "not_allowed_token_type"})
        team, refused = self.installs.team_of(token)
        if refused or team is None:
            return self._answer(method, params, {"ok": False, "error": refused or "invalid_auth"})
        self.calling_team = team
        storm_left = self.storms.get(method, 0.0) - time.monotonic()
        if storm_left > 0:
            return self._rate_limited(method, params, min(storm_left, 5.0))
        forced = self.forced.get(method)
        if forced:
            error, retry_after = forced.pop(0)
            if error == "ratelimited":
                return self._rate_limited(method, params, retry_after or 1.0)
            return self._answer(method, params, {"ok": False, "error": error})
        wait = self._take_token(method, params)
        if wait is not None:
            return self._rate_limited(method, params, wait)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._answer(method, params, {"ok": False, "error": "unknown_method"})
        answer = self._answer(method, params, handler(params))
        if self.losing.get(method) and request.transport is not None:
            self.losing[method] -= 1
            request.transport.abort()  # done, but the caller never hears of it
        return answer

    def _rate_limited(self, method: str, params: dict[str, Any], wait: float) -> web.Response:
        retry_after = max(1, int(wait + 0.999))  # Slack sends whole seconds
        self._record(Call(time.monotonic(), method, params, False, "ratelimited", 429, self.calling_team))
        return web.json_response(
            {"ok": False, "error": "ratelimited"},
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    def _answer(self, method: str, params: dict[str, Any], body: dict[str, Any]) -> web.Response:
        call = Call(
            time.monotonic(), method, params, bool(body.get("ok")), body.get("error"), team=self.calling_team
        )
        if body.get("ok") and method == "chat.postMessage":
            call.params = {**params, "ts": body.get("ts")}
        self._record(call)
        return web.json_response(body)

    # validation shared by post and update
    def _content_error(self, params: dict[str, Any]) -> str | None:
        text = params.get("text")
        blocks = params.get("blocks")
        if text is not None and len(str(text)) > TEXT_LIMIT:
            return "msg_too_long"
        if blocks is None:
            return None if text else "no_text"
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            return "invalid_blocks"
        markdown_total = 0
        for block in blocks:
            if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
                return "invalid_blocks"
            kind = block["type"]
            if kind == "markdown":
                if not isinstance(block.get("text"), str) or not block["text"]:
                    return "invalid_blocks"
                markdown_total += len(block["text"])
            elif kind == "actions":
                elements = block.get("elements")
                if not isinstance(elements, list) or not elements or len(elements) > 25:
                    return "invalid_blocks"
                for element in elements:
                    if element.get("type") == "button" and not (
                        element.get("text") and element.get("action_id")
                    ):
                        return "invalid_blocks"
            elif kind == "context_actions" and not _valid_context_actions(block):
                return "invalid_blocks"
            elif kind == "section":
                section = block.get("text") or {}
                if not block.get("fields") and len(str(section.get("text", ""))) > 3000:
                    return "invalid_blocks"
        if markdown_total > MARKDOWN_LIMIT:
            return "msg_too_long"
        return None

    def _channel_error(self, params: dict[str, Any]) -> str | None:
        channel = params.get("channel")
        if not channel:
            return "channel_not_found"
        if channel not in self.channels or self.team_of_channel(str(channel)) != self.calling_team:
            return "channel_not_found"  # another workspace's channel is not there for this token
        return None

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        workspace = self._workspace()
        return {
            "ok": True,
            "url": "https://emulated.slack.com/",
            "team": workspace.name,
            "user": "agentbot",
            "team_id": workspace.team_id,
            "user_id": workspace.bot_user,
            "bot_id": workspace.bot_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._channel_error(params) or self._content_error(params)
        if error:
            return {"ok": False, "error": error}
        thread_ts = params.get("thread_ts") or None
        if thread_ts and not self.find(params["channel"], str(thread_ts)):
            return {"ok": False, "error": "thread_not_found"}
        metadata = params.get("metadata")
        if metadata is not None and not _valid_metadata(metadata):
            return {"ok": False, "error": "invalid_metadata_format"}
        message = Message(
            params["channel"],
            self._next_ts(),
            str(params.get("text") or ""),
            self._workspace().bot_user,
            self._workspace().bot_id,
            str(thread_ts) if thread_ts else None,
            params.get("blocks"),
            metadata=metadata,
        )
        message.history.append((time.monotonic(), message.text, message.blocks))
        self.messages[message.channel].append(message)
        self._notify(self.message_change(message))
        self._app_replied(message.channel, message.thread_ts)
        self._deliver_message_event(message)
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "message": message.as_dict(),
        }

    def _new_bot_message(self, channel: str, thread_ts: str, text: str) -> Message:
        """A message the app starts streaming (a reply in ``thread_ts``)."""
        blocks = [{"type": "markdown", "text": text}] if text else None
        bot = self._workspace()
        message = Message(channel, self._next_ts(), text, bot.bot_user, bot.bot_id, thread_ts, blocks)
        self.messages[channel].append(message)
        self._changed(message)
        self._app_replied(channel, thread_ts)
        self._deliver_message_event(message)
        return message

    def _bot_post(self, channel: str, text: str) -> Message:
        """A message that appears as the app's without an API call (an assistant thread's root)."""
        bot = self.workspaces[self.team_of_channel(channel)]
        message = Message(channel, self._next_ts(), text, bot.bot_user, bot.bot_id)
        self.messages[channel].append(message)
        self._changed(message)
        return message

    def _deliver_event(self, event: dict[str, Any], team: str) -> None:
        if self.events_url is not None or self.events_urls or self.socket_mode:
            self.deliver(event, team=team)

    def _changed(self, message: Message) -> None:
        message.history.append((time.monotonic(), message.text, message.blocks))
        self._notify(self.message_change(message))

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._channel_error(params)
        if error:
            return {"ok": False, "error": error}
        message = self.find(params["channel"], str(params.get("ts", "")))
        if message is None or message.deleted:
            return {"ok": False, "error": "message_not_found"}
        if message.bot_id != self._workspace().bot_id:
            return {"ok": False, "error": "cant_update_message"}
        error = self._content_error(params)
        if error:
            return {"ok": False, "error": error}
        if "text" in params:
            message.text = str(params["text"])
        if "blocks" in params:
            message.blocks = params["blocks"]
        self.end_stream_by_update(message)
        message.history.append((time.monotonic(), message.text, message.blocks))
        self._notify(self.message_change(message))
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_dict(),
        }

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        if self._channel_error(params):
            return {"ok": False, "error": "channel_not_found"}
        message = self.find(str(params.get("channel", "")), str(params.get("ts", "")))
        if message is None or message.deleted:
            return {"ok": False, "error": "message_not_found"}
        if message.bot_id != self._workspace().bot_id:
            return {"ok": False, "error": "cant_delete_message"}
        message.deleted = True
        self._notify(self.message_change(message))
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._channel_error(params) or self._content_error(params)
        if error:
            return {"ok": False, "error": error}
        if params.get("user") not in self.users:
            return {"ok": False, "error": "user_not_found"}
        ts = self._next_ts()
        self._add_ephemeral(params, ts)
        return {"ok": True, "message_ts": ts}

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._channel_error(params)
        if error:
            return {"ok": False, "error": error}
        root = self.find(params["channel"], str(params.get("ts", "")))
        if root is None:
            return {"ok": False, "error": "thread_not_found"}
        thread = self.thread(params["channel"], root.thread_ts or root.ts)
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        if params.get("latest"):  # only messages before (or at, inclusive) this ts
            latest = float(params["latest"])
            thread = [m for m in thread if float(m.ts) < latest or (inclusive and float(m.ts) == latest)]
        if params.get("oldest"):
            oldest = float(params["oldest"])
            thread = [m for m in thread if float(m.ts) > oldest or (inclusive and float(m.ts) == oldest)]
        limit = int(params.get("limit") or 1000)
        start = int(params.get("cursor") or 0)
        page = thread[start : start + limit]
        more = start + limit < len(thread)
        return {
            "ok": True,
            "messages": [m.as_dict(with_metadata=with_metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        error = self._channel_error(params)
        return (
            {"ok": False, "error": error}
            if error
            else {"ok": True, "channel": self.channels[params["channel"]]}
        )

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_users_lookupByEmail(self, params: dict[str, Any]) -> dict[str, Any]:
        email = str(params.get("email", "")).lower()
        user = next(
            (u for u in self.users.values() if (u["profile"].get("email") or "").lower() == email), None
        )
        return {"ok": True, "user": user} if user else {"ok": False, "error": "users_not_found"}

    def _m_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        users = list(self.users.values())
        limit = int(params.get("limit") or 200)
        start = int(params.get("cursor") or 0)
        page = users[start : start + limit]
        more = start + limit < len(users)
        return {
            "ok": True,
            "members": page,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.find(str(params.get("channel", "")), str(params.get("timestamp", "")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.files.get_upload_url(params, self._workspace().bot_user)

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel_id")
        if channel and self._channel_error({"channel": channel}):
            return {"ok": False, "error": "channel_not_found"}
        answer, shared = self.files.complete(params)
        if answer.get("ok") and channel:  # shared in the channel (the thread) as the bot's message
            message = Message(
                channel, self._next_ts(), str(params.get("initial_comment") or ""),
                self._workspace().bot_user, self._workspace().bot_id,
                params.get("thread_ts") or None, None, shared,
            )  # fmt: skip
            message.history.append((time.monotonic(), message.text, None))
            self.messages[channel].append(message)
            self._notify(self.message_change(message))
        return answer

    def user_shares(
        self,
        user: str,
        channel: str,
        text: str,
        files: list[tuple[str, bytes, str]],
        *,
        thread_ts: str | None = None,
    ) -> str:
        """A person posts a message with files attached (name, bytes, MIME type each)."""
        shared = [self.files.share(user, name, content, mime) for name, content, mime in files]
        return self.user_posts(user, channel, text, thread_ts=thread_ts, files=shared, subtype="file_share")

    # -- people and event delivery ------------------------------------------------------

    def user_posts(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        subtype: str | None = None,
    ) -> str:
        """A person posts; Slack delivers the events. Returns the message ts."""
        message = Message(channel, self._next_ts(), text, user, None, thread_ts, None, files)
        message.history.append((time.monotonic(), text, None))
        self.messages[channel].append(message)
        self._notify(self.message_change(message))
        is_im, team = self.channels[channel]["is_im"], self.team_of_channel(channel)
        base = {
            **message.as_dict(),
            "channel": channel,
            "team": team,
            "event_ts": message.ts,
            "channel_type": "im" if is_im else "channel",
        }
        if subtype:
            base["subtype"] = subtype
        if f"<@{self.workspaces[team].bot_user}>" in text and not is_im and subtype in (None, "file_share"):
            mention = {k: v for k, v in base.items() if k != "channel_type"}
            self.deliver({**mention, "type": "app_mention"})
        self.deliver(base)
        return message.ts

    def _deliver_message_event(self, message: Message) -> None:
        if self.events_url is None and not self.events_urls and not self.socket_mode:
            return
        is_im = self.channels[message.channel]["is_im"]
        self.deliver(
            {
                **message.as_dict(),
                "channel": message.channel,
                "team": self.team_of_channel(message.channel),
                "event_ts": message.ts,
                "channel_type": "im" if is_im else "channel",
            }
        )

    def event_envelope(
        self, event: dict[str, Any], event_id: str | None = None, *, team: str | None = None
    ) -> dict[str, Any]:
        team = team or str(event.get("team") or "") or self.team_id
        workspace = self.workspaces.get(team) or self.workspaces[self.team_id]
        return {
            "token": "emulator-verification-token",
            "team_id": team,
            "api_app_id": "A0EMUAPP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team,
                    "user_id": workspace.bot_user,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": secrets.token_hex(8),
        }

    def deliver(
        self, event: dict[str, Any], event_id: str | None = None, *, team: str | None = None
    ) -> dict[str, Any]:
        """Send one event callback in the background, with Slack's retries."""
        envelope = self.event_envelope(event, event_id, team=team)
        if self.socket_mode:

            def seen(attempt: int, acked: bool, ms: float) -> None:
                self.deliveries.append(
                    {
                        "event_id": envelope["event_id"],
                        "ts": envelope["event"].get("ts"),
                        "attempt": attempt,
                        "status": 200 if acked else 0,
                        "ms": ms,
                    }
                )

            work = self.sockets.send("events_api", envelope, accepts_response_payload=False, on_attempt=seen)
            task = asyncio.get_running_loop().create_task(work)
            self._delivery_tasks.add(task)
            task.add_done_callback(self._delivery_tasks.discard)
        elif self.events_url is not None or self.events_urls:
            task = asyncio.get_running_loop().create_task(self._send_with_retries(envelope))
            self._delivery_tasks.add(task)
            task.add_done_callback(self._delivery_tasks.discard)
        return envelope

    async def drain(self) -> None:
        """Wait until every event delivery (and its retries) has finished."""
        while self._delivery_tasks:
            await asyncio.gather(*list(self._delivery_tasks), return_exceptions=True)

    @property
    def delivering(self) -> bool:
        """An event delivery (or a retry of one) is still under way."""
        return bool(self._delivery_tasks)

    def _next_url(self) -> str:
        """The app's Request URL; with several (replicas behind a load balancer), round robin."""
        if self.events_urls:
            # a replica that refused a connection is left out for a while, as a load
            # balancer's health check does (unless every replica is out)
            now = time.monotonic()
            up = [
                u for u in self.events_urls if now - self._down.get(u, -1e9) > LB_DOWN_S
            ] or self.events_urls
            url = up[self._rr % len(up)]
            self._rr += 1
            return url
        assert self.events_url is not None
        return self.events_url

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        digest = hmac.new(
            self.signing_secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}

    async def post_signed(
        self,
        body: bytes,
        content_type: str,
        *,
        retry: int = 0,
        reason: str = "http_timeout",
        timestamp: int | None = None,
    ) -> int:
        assert self._http is not None and (self.events_url is not None or self.events_urls)
        headers = {"Content-Type": content_type, **self.sign(body, timestamp)}
        if retry:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = reason
        # a load balancer in front of several replicas: one that refuses the connection is
        # left out for a while and the request goes to the next (nginx's proxy_next_upstream)
        for tries_left in range(max(1, len(self.events_urls)) - 1, -1, -1):
            url = self._next_url()
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.ConnectError:
                self._down[url] = time.monotonic()
                if tries_left:
                    continue
                raise
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                self._down[url] = time.monotonic()  # cut mid-request: not sent again here
                raise
            return response.status_code
        raise AssertionError("unreachable")

    async def _send_with_retries(self, envelope: dict[str, Any]) -> None:
        body = json.dumps(envelope).encode()
        reason = ""
        for attempt in range(len(self.retry_delays) + 1):
            started = time.monotonic()
            try:
                status = await self.post_signed(body, "application/json", retry=attempt, reason=reason)
                reason = "" if status == 200 else "http_error"
            except httpx.TimeoutException:
                status, reason = 0, "http_timeout"
            except httpx.HTTPError:
                status, reason = 0, "connection_failed"
            self.deliveries.append(
                {
                    "event_id": envelope["event_id"],
                    "ts": envelope["event"].get("ts"),
                    "attempt": attempt,
                    "status": status,
                    "ms": (time.monotonic() - started) * 1000,
                }
            )
            if status == 200:
                return
            if attempt < len(self.retry_delays):
                await asyncio.sleep(self.retry_delays[attempt])

    async def redeliver(self, envelope: dict[str, Any], retry: int = 1) -> int:
        """Resend an event exactly as Slack's retry would (same event_id); over the socket in
        Socket Mode (200 when acked)."""
        if self.socket_mode:
            answer, _ = await self.sockets.attempt("events_api", envelope, False, retry, "timeout")
            return 200 if answer is not None else 0
        return await self.post_signed(json.dumps(envelope).encode(), "application/json", retry=retry)

    async def slash_command(self, user: str, channel: str, command: str, text: str = "") -> dict[str, Any]:
        """A person runs a slash command; returns the app's (ephemeral) answer."""
        from urllib.parse import urlencode

        form = {
            "token": "emulator-verification-token",
            "team_id": self.team_of_channel(channel),
            "team_domain": "emulated",
            "channel_id": channel,
            "channel_name": self.channels[channel].get("name") or "directmessage",
            "user_id": user,
            "user_name": self.users[user]["name"],
            "command": command,
            "text": text,
            "api_app_id": "A0EMUAPP",
            "response_url": self.response_url(ResponseTarget(user, channel, None, "", None)),
            "trigger_id": secrets.token_hex(6),
        }
        if self.socket_mode:
            answer = await self.sockets.send("slash_commands", form, accepts_response_payload=True)
            return {"status": 200 if answer is not None else 0, **(answer or {})}
        assert self._http is not None and self.events_url is not None
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self.sign(body)}
        response = await self._http.post(self.events_url, content=body, headers=headers)
        # Slack takes a plain-text body as the message text, or a JSON message.
        if response.headers.get("content-type", "").startswith("application/json"):
            answer = response.json()
        else:
            answer = {"text": response.text} if response.text else {}
        return {"status": response.status_code, **answer}

    async def click(self, user: str, channel: str, message_ts: str, action_id: str, value: str) -> int:
        """A person clicks a button on a message, or on an ephemeral message only they see (a
        ``block_actions`` interaction; an ephemeral's payload carries no ``message``)."""
        ephemeral = self.ephemeral(channel, message_ts)
        if ephemeral is not None and (ephemeral["user"] != user or ephemeral.get("deleted")):
            raise ValueError(f"{user} does not see ephemeral {message_ts}: nobody can click it")
        message = self.find(channel, message_ts)
        kind, block_id = _clicked(ephemeral_view(ephemeral) if ephemeral else message, action_id, value)
        thread_ts = (ephemeral or {}).get("thread_ts") or (message.thread_ts if message else None)
        response_url = self.response_url(ResponseTarget(user, channel, thread_ts, message_ts, ephemeral))
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "team_id": self.team_of_channel(channel)},
            "api_app_id": "A0EMUAPP",
            "token": "emulator-verification-token",
            "team": {"id": self.team_of_channel(channel), "domain": "emulated"},
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": ephemeral is not None,
            },
            "channel": {"id": channel, "name": self.channels[channel].get("name")},
            "trigger_id": secrets.token_hex(6),
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "type": kind,
                    "action_ts": str(time.time()),
                }
            ],
        }
        if ephemeral is None:
            payload["message"] = message.as_dict() if message else {"ts": message_ts}
        from urllib.parse import urlencode

        if self.socket_mode:
            answer = await self.sockets.send("interactive", payload, accepts_response_payload=False)
            return 200 if answer is not None else 0
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self.post_signed(body, "application/x-www-form-urlencoded")


def _valid_context_actions(block: dict[str, Any]) -> bool:
    """A ``context_actions`` block: 1 to 5 feedback-buttons or icon-button elements; feedback
    buttons need a positive and a negative button, each with plain text and a value."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= 5:
        return False
    for element in elements:
        if not isinstance(element, dict) or element.get("type") not in ("feedback_buttons", "icon_button"):
            return False
        if element["type"] == "feedback_buttons":
            for side in ("positive_button", "negative_button"):
                button = element.get(side)
                if (
                    not isinstance(button, dict)
                    or not isinstance(button.get("value"), str)
                    or not button["value"]
                ):
                    return False
                text = button.get("text") or {}
                if text.get("type") != "plain_text" or not text.get("text"):
                    return False
    return True


def ephemeral_view(ephemeral: dict[str, Any]) -> Any:
    """An ephemeral message seen as a message (its blocks), for finding what was clicked."""
    from types import SimpleNamespace

    return SimpleNamespace(ts=ephemeral["ts"], blocks=ephemeral.get("blocks"), deleted=False)


def _clicked(message: Any, action_id: str, value: str) -> tuple[str, str]:
    """The clicked element's type and block id, as Slack reports them. Slack sends only
    actions that are on the message: a click on a button that is not there (never was, or
    was taken off by an update) is refused here, as no person could make it."""
    for block in (message.blocks if message and not message.deleted else None) or []:
        for element in block.get("elements") or []:
            if element.get("action_id") != action_id:
                continue
            if element.get("type") == "feedback_buttons":
                values = {element["positive_button"]["value"], element["negative_button"]["value"]}
                if value in values:
                    return "feedback_buttons", str(block.get("block_id") or "feedback")
                continue
            if element.get("type", "button") == "button" and element.get("value") != value:
                continue
            return str(element.get("type") or "button"), str(block.get("block_id") or "controls")
    where = f"message {message.ts}" if message else "no such message"
    raise ValueError(f"no {action_id!r} element with value {value!r} on {where}: nobody can click it")
