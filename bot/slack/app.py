"""The Slack surface: Bolt ``AsyncApp`` wiring, in Socket Mode or HTTP mode.

Every event is acked at once (Bolt answers before the listener runs; Slack retries after
3 s) and the turn runs after the ack. Retries and the double delivery of one mention
(``app_mention`` plus ``message``) are deduplicated in the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from ..logs import log
from ..metrics import CONTENT_TYPE_LATEST, Metrics
from ..plugins.registry import Registry
from ..store import Store
from .confirm import APPROVE_ACTION, DENY_ACTION, SlackConfirmer
from .sink import Turn, TurnSink
from .writer import STOP_ACTION

logger = logging.getLogger("bot.slack.app")

DEDUPE_TTL_S = 3600.0
ALLOWED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
TOOLS_COMMAND = "/agent-tools"
MAX_BODY_BYTES = 1024 * 1024


def _tool_listing(registry: Registry | None, disabled: set[str], *, admin: bool) -> str:
    if registry is None or (not registry.tools and not registry.broken):
        return "No tools are installed. Admins add them to BOT_TOOLS_DIR (see tools/README.md)."
    lines = ["*Tools in this channel*"]
    for name, spec in sorted(registry.tools.items()):
        flags = [flag for flag, on in (("asks first", spec.confirm), ("admins only", spec.admin_only)) if on]
        state = "off" if name in disabled else "on"
        extra = f" ({', '.join(flags)})" if flags else ""
        lines.append(f"• `{name}` {state}{extra}: {spec.description.splitlines()[0]}")
    for broken in registry.broken:  # the error can name hosts, paths, accounts: admins only
        detail = f": {broken.error}" if admin else " (an admin can see why)"
        lines.append(f"• broken: {broken.source}{detail}")
    return "\n".join(lines)


class SlackSurface:
    """Turns Slack events into ``Turn``s for the pipeline (a ``TurnSink``)."""

    def __init__(
        self,
        app: AsyncApp,
        sink: TurnSink,
        *,
        store: Store,
        metrics: Metrics,
        bot_user_id: str | None,
        admins: frozenset[str] = frozenset(),
        confirmer: SlackConfirmer | None = None,
        registry: Registry | None = None,
        allowed_teams: frozenset[str] = frozenset(),
        allowed_channels: frozenset[str] = frozenset(),
        user_per_minute: int = 10,
        channel_per_minute: int = 40,
    ) -> None:
        self.allowed_teams = allowed_teams
        self.allowed_channels = allowed_channels
        self.user_per_minute = user_per_minute
        self.channel_per_minute = channel_per_minute
        self.app = app
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.bot_user_id = bot_user_id
        self.admins = admins
        self.confirmer = confirmer
        self.registry = registry
        self.tasks: set[asyncio.Task[None]] = set()
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.action(STOP_ACTION)(self._on_stop)
        app.action(APPROVE_ACTION)(self._on_confirm)
        app.action(DENY_ACTION)(self._on_confirm)
        app.command(TOOLS_COMMAND)(self._on_tools_command)

    async def _first_time(self, body: dict[str, Any], event: dict[str, Any]) -> bool:
        """False for a Slack retry, the second delivery of one post, or a place we do not serve."""
        if not self.allowed(event.get("team") or body.get("team_id") or "", event.get("channel") or ""):
            log(logger, "event.not_allowed", channel=event.get("channel"), team=body.get("team_id"))
            return False
        event_id = body.get("event_id") or ""
        post = f"{event.get('channel')}:{event.get('ts')}"
        fresh_event, fresh_post = await asyncio.gather(
            self.store.claim("event", event_id, DEDUPE_TTL_S) if event_id else _true(),
            self.store.claim("post", post, DEDUPE_TTL_S),
        )
        return fresh_event and fresh_post

    async def _start(self, turn: Turn) -> None:
        """Run in the listener, before Bolt acks Slack (``process_before_response``): the run
        limits and the durable intake; the answer itself goes on in the background."""
        if not await self._admit(turn):
            return
        receipt = await self.sink.receive(turn)
        self._spawn(self.sink.answer(receipt, turn))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def allowed(self, team: str, channel: str) -> bool:
        if self.allowed_teams and team not in self.allowed_teams:
            return False
        return not self.allowed_channels or channel in self.allowed_channels or channel.startswith("D")

    async def _admit(self, turn: Turn) -> bool:
        """Per-user and per-channel limits on starting runs, with a friendly private note."""
        user_hits, channel_hits = await asyncio.gather(
            self.store.hit("user-runs", f"{turn.team}/{turn.user}", 60),
            self.store.hit("channel-runs", f"{turn.team}/{turn.channel}", 60),
        )
        if user_hits > self.user_per_minute or channel_hits > self.channel_per_minute:
            who = "you are" if user_hits > self.user_per_minute else "this channel is"
            log(logger, "turn.limited", user=turn.user, channel=turn.channel, event_id=turn.event_id)
            self.metrics.turns_ended.labels("limited").inc()
            self._spawn(self._limited_note(turn, who))
            return False
        return True

    async def _limited_note(self, turn: Turn, who: str) -> None:
        try:
            await self.app.client.chat_postEphemeral(
                channel=turn.channel,
                user=turn.user,
                thread_ts=turn.thread_ts,
                text=f"Sorry, {who} asking faster than I can answer. Please try again in a minute.",
            )
        except Exception as exc:
            log(logger, "turn.limit_note_failed", logging.INFO, error=repr(exc))

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        turn = turn_from_event(body, event)
        if turn is None or event.get("bot_id") or not await self._first_time(body, event):
            return
        await self._start(turn)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") not in ALLOWED_SUBTYPES or not event.get("user"):
            return
        if event.get("user") == self.bot_user_id:
            return
        turn = turn_from_event(body, event)
        if turn is None:
            return
        is_dm = event.get("channel_type") == "im"
        bot_mention = f"<@{self.bot_user_id}>" in turn.text
        if not is_dm:
            if turn.thread_ts == turn.ts or bot_mention:
                return  # a channel message is ours only as a follow-up in a thread we answer
            if await self.store.lease_owner(f"bot-thread:{turn.key.as_str()}") is None:
                return
        if not await self._first_time(body, event):
            return
        await self._start(turn)

    def _action_allowed(self, body: dict[str, Any]) -> bool:
        """Buttons obey the allow-lists too: a click from elsewhere is acked and ignored."""
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or ""
        channel = (body.get("channel") or {}).get("id") or ""
        if self.allowed(team, channel):
            return True
        log(logger, "action.not_allowed", team=team, channel=channel)
        return False

    async def _on_stop(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if self._action_allowed(body):
            self._spawn(self._stop(body, client))

    async def _stop(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id", "")
        answer = await self.sink.stop(action.get("value", ""), user)
        channel = (body.get("channel") or {}).get("id")
        if channel and answer != "Stopping…":
            thread_ts = (body.get("message") or {}).get("thread_ts")
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=answer, thread_ts=thread_ts)
            except Exception as exc:
                log(logger, "stop.ephemeral_failed", logging.INFO, error=repr(exc))

    async def _on_confirm(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if self._action_allowed(body):
            self._spawn(self._confirm(body, client))

    async def _confirm(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id", "")
        if self.confirmer is None:
            return
        note = await self.confirmer.answer(
            action.get("value", ""), user, action.get("action_id") == APPROVE_ACTION
        )
        channel = (body.get("channel") or {}).get("id")
        if note and channel:
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=note)
            except Exception as exc:
                log(logger, "confirm.ephemeral_failed", logging.INFO, error=repr(exc))

    async def _on_tools_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/agent-tools [list | enable NAME | disable NAME]``, answered privately."""
        words = (command.get("text") or "").split()
        verb = words[0].lower() if words else "list"
        team, channel, user = (
            command.get("team_id", ""),
            command.get("channel_id", ""),
            command.get("user_id", ""),
        )
        if not self.allowed(team, channel):
            log(logger, "command.not_allowed", team=team, channel=channel, user=user)
            await ack(text="This bot is not available in this channel.")
            return
        tools = self.registry.tools if self.registry is not None else {}
        if verb == "list":
            disabled = await self.store.disabled_tools(team, channel)
            await ack(text=_tool_listing(self.registry, disabled, admin=user in self.admins))
            return
        if verb in ("enable", "disable") and len(words) == 2:
            if user not in self.admins:
                await ack(text="Only admins (BOT_ADMINS) can turn tools on or off.")
                return
            name = words[1]
            if name not in tools:
                await ack(text=f"There is no tool named `{name}`. Try `{TOOLS_COMMAND} list`.")
                return
            await self.store.set_tool_enabled(team, channel, name, verb == "enable", user)
            log(logger, "tools.toggled", tool=name, enabled=verb == "enable", channel=channel, user=user)
            await ack(text=f"`{name}` is now {'on' if verb == 'enable' else 'off'} in this channel.")
            return
        await ack(
            text=f"Usage: `{TOOLS_COMMAND} list`, `{TOOLS_COMMAND} enable NAME`, "
            f"`{TOOLS_COMMAND} disable NAME`"
        )

    async def drain(self, grace_s: float = 30.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)


def turn_from_event(body: Any, event: Any) -> Turn | None:
    """A Slack message event as a ``Turn``; None for anything that is not a usable message
    (Slack sends what it sends: a malformed event is ignored, never a crash)."""
    if not isinstance(body, dict) or not isinstance(event, dict):
        return None
    channel, ts = event.get("channel"), event.get("ts")
    if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
        return None
    thread_ts = event.get("thread_ts")
    files = event.get("files")
    return Turn(
        team=_text(event.get("team")) or _text(body.get("team_id")),
        channel=channel,
        thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts else ts,
        ts=ts,
        user=_text(event.get("user")),
        text=_text(event.get("text")),
        event_id=_text(body.get("event_id")),
        files=tuple(f for f in files if isinstance(f, dict)) if isinstance(files, list) else (),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def _true() -> bool:
    return True


def http_app(
    bolt: AsyncApp,
    ready: asyncio.Event | None = None,
    *,
    signing_secret: str | None,
    draining: asyncio.Event | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    """The public Slack port: ``POST /slack/events`` (events and interactions, signature
    checked by Bolt) and ``GET /healthz``. Never without a signing secret: an unsigned
    ``/slack/events`` would take a slash command or a mention from anyone, as anyone."""
    if not signing_secret:
        raise ValueError(
            "refusing to serve /slack/events without request verification: set SLACK_SIGNING_SECRET"
        )

    async def events(request: web.Request) -> web.Response:
        if draining is not None and draining.is_set():
            # stopping: Slack retries, and the load balancer sends it to another replica
            return web.json_response({"ok": False, "error": "shutting_down"}, status=503)
        if request.content_length is not None and request.content_length > max_body_bytes:
            return web.json_response({"ok": False, "error": "request_too_large"}, status=413)
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", _health(ready, draining))
    return app


def ops_app(
    ready: asyncio.Event | None = None, *, draining: asyncio.Event | None = None, metrics: Metrics
) -> web.Application:
    """The operators' port (``BOT_METRICS_HOST``:``BOT_METRICS_PORT``): ``/metrics`` and
    ``/healthz`` only, never Slack's routes."""

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", _health(ready, draining))
    return app


def _health(ready: asyncio.Event | None, draining: asyncio.Event | None) -> Any:
    async def healthz(request: web.Request) -> web.Response:
        if draining is not None and draining.is_set():
            return web.json_response({"ok": False, "status": "stopping"}, status=503)
        if ready is not None and not ready.is_set():
            return web.json_response({"ok": False, "status": "starting"}, status=503)
        return web.json_response({"ok": True})

    return healthz
