"""The Slack surface: Bolt ``AsyncApp`` wiring, in Socket Mode or HTTP mode.

Bolt runs with ``process_before_response``: the filters (``filters``) and the durable
intake run before Slack gets its ack (well inside Slack's 3 s); the answer runs after it.
Buttons are acked at once and handled in the background.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.listener.async_builtins import AsyncTokenRevocationListeners
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.web.async_client import AsyncWebClient

from .. import telemetry
from ..logs import log
from ..metrics import CONTENT_TYPE_LATEST, Metrics
from ..plugins.registry import Registry
from ..store import AuditEntry, Store
from ..store.audit import AuditTrail
from .assistant import AssistantPane
from .confirm import APPROVE_ACTION, DENY_ACTION, SlackConfirmer
from .filters import AllowList, FirstDelivery, RunLimits, follow_up_only, person_message
from .sink import Turn, TurnSink
from .workspaces import Workspaces
from .writer import ASK_AGAIN_ACTION, FEEDBACK_ACTION, STOP_ACTION

logger = logging.getLogger("bot.slack.app")

TOOLS_COMMAND = "/agent-tools"
MAX_BODY_BYTES = 1024 * 1024


def _turn_attributes(turn: Turn) -> dict[str, str]:
    """The ids operators search a trace by."""
    return {
        "slack.event_id": turn.event_id,
        "slack.team": turn.team,
        "slack.channel": turn.channel,
        "slack.thread_ts": turn.thread_ts,
        "slack.user": turn.user,
    }


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
    """Turns Slack events into ``Turn``s for the pipeline (a ``TurnSink``). What may reach a
    listener (allow-lists, people's messages only, first delivery, run limits) is decided by
    the Bolt middleware in ``filters``; the listeners only act."""

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
        audit: AuditTrail | None = None,
        workspaces: Workspaces | None = None,
        installations: AsyncInstallationStore | None = None,
        allowed_teams: frozenset[str] = frozenset(),
        allowed_channels: frozenset[str] = frozenset(),
        user_per_minute: int = 10,
        channel_per_minute: int = 40,
        pane: AssistantPane | None = None,
    ) -> None:
        self.app = app
        self.pane = pane  # Slack's assistant side pane (greeting, prompts, status, title)
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.bot_user_id = bot_user_id
        self.admins = admins
        self.confirmer = confirmer
        self.registry = registry
        self.audit = audit  # admin actions, for `python -m bot audit`
        self.workspaces = workspaces
        self.tasks: set[asyncio.Task[None]] = set()
        self.allow_list = AllowList(allowed_teams, allowed_channels)
        limits = RunLimits(
            store,
            metrics,
            self._limited,
            user_per_minute=user_per_minute,
            channel_per_minute=channel_per_minute,
        )
        person, self.once = person_message(bot_user_id), FirstDelivery(store)
        once = self.once.middleware
        app.use(self.allow_list.middleware)
        if pane is not None:
            app.assistant(pane.middleware())
        app.event("app_mention", middleware=[person, once, limits.middleware])(self._on_message)
        app.event(
            "message", middleware=[person, follow_up_only(store, bot_user_id), once, limits.middleware]
        )(self._on_message)
        app.action(STOP_ACTION)(self._on_stop)
        app.action(ASK_AGAIN_ACTION)(self._on_ask_again)
        app.action(FEEDBACK_ACTION)(self._on_feedback)
        app.action(APPROVE_ACTION)(self._on_confirm)
        app.action(DENY_ACTION)(self._on_confirm)
        app.command(TOOLS_COMMAND)(self._on_tools_command)
        if installations is not None:  # installed through OAuth: uninstalls and revocations clean up
            self.revocations = AsyncTokenRevocationListeners(installations)
            app.event("app_uninstalled")(self._on_uninstalled)
            app.event("tokens_revoked")(self._on_tokens_revoked)

    def allowed(self, team: str, channel: str) -> bool:
        return self.allow_list.allows(team, channel)

    async def _on_message(self, context: AsyncBoltContext) -> None:
        """Runs before Bolt acks Slack (``process_before_response``): the durable intake only;
        the answer goes on in the background."""
        turn: Turn = context["turn"]
        with telemetry.span("slack.event", _turn_attributes(turn)):
            turn = replace(turn, traceparent=telemetry.traceparent())
            in_pane = await self._in_pane(turn)
            if in_pane:
                turn = replace(turn, surface="assistant")
            try:
                receipt = await self.sink.receive(turn)
            except BaseException:
                await self.once.release(context)  # not taken in: Slack's retry may take it
                raise
            # taken in: answered from here on, whatever becomes of the marks below (should they
            # fail, Slack's retry finds the turn stored and answered, and takes nothing twice)
            self._spawn(self.sink.answer(receipt, turn))
            if in_pane and self.pane is not None and self.workspaces is not None:
                self._spawn(self.pane.working(self.workspaces.client(turn.team), turn))
            await self.once.received(context)

    async def _in_pane(self, turn: Turn) -> bool:
        """A DM thread the person opened as Slack's assistant pane."""
        if self.pane is None or turn.thread_ts == turn.ts or not turn.channel.startswith("D"):
            return False
        return await self.pane.threads.context(turn.channel, turn.thread_ts) is not None

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _limited(self, turn: Turn, who: str) -> None:
        self._spawn(self._limited_note(turn, who))

    async def _limited_note(self, turn: Turn, who: str) -> None:
        client = self.workspaces.client(turn.team) if self.workspaces is not None else self.app.client
        try:
            await client.chat_postEphemeral(
                channel=turn.channel,
                user=turn.user,
                thread_ts=turn.thread_ts,
                text=f"Sorry, {who} asking faster than I can answer. Please try again in a minute.",
            )
        except Exception as exc:
            log(logger, "turn.limit_note_failed", logging.INFO, error=repr(exc))

    async def _on_uninstalled(self, context: AsyncBoltContext) -> None:
        """The app was removed from a workspace: its installation (tokens) goes."""
        await self.revocations.handle_app_uninstalled_events(context)
        await self._forget_workspace(context, "uninstalled")

    async def _on_tokens_revoked(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        await self.revocations.handle_tokens_revoked_events(event, context)
        await self._forget_workspace(context, "tokens_revoked")

    async def _forget_workspace(self, context: AsyncBoltContext, why: str) -> None:
        team = context.team_id or ""
        if self.workspaces is not None:
            self.workspaces.forget(team)
        log(logger, "slack.workspace_removed", team=team, why=why)
        await self._audit(AuditEntry("install", team, "", "", "slack", why))

    async def _on_stop(
        self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        self._spawn(self._stop(body, client, respond))

    async def _stop(self, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond) -> None:
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id", "")
        answer = await self.sink.stop(action.get("value", ""), user)
        channel = (body.get("channel") or {}).get("id")
        if (body.get("container") or {}).get("is_ephemeral"):
            # the Stop a streamed reply offered privately: the button gives way to the outcome
            try:
                await respond(text=answer, replace_original=True)
            except Exception as exc:
                log(logger, "stop.respond_failed", logging.INFO, error=repr(exc))
        elif channel and answer != "Stopping…":
            thread_ts = (body.get("message") or {}).get("thread_ts")
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=answer, thread_ts=thread_ts)
            except Exception as exc:
                log(logger, "stop.ephemeral_failed", logging.INFO, error=repr(exc))

    async def _on_feedback(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self._spawn(self._feedback(body, client))

    async def _feedback(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A thumbs up / down: counted, logged and kept in the audit trail (``python -m bot
        feedback`` sums it up), and acknowledged to the clicker only."""
        action = (body.get("actions") or [{}])[0]
        parts = str(action.get("value") or "").split("|")
        rating, turn_id, route, run_id = [*parts, "", "", "", ""][:4]
        if rating not in ("good", "bad") or not turn_id:
            log(logger, "feedback.unreadable", logging.WARNING, value=str(action.get("value"))[:80])
            return
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id", "")
        message = body.get("message") or {}
        team = (body.get("team") or {}).get("id", "") or (body.get("user") or {}).get("team_id", "")
        self.metrics.feedback.labels(rating).inc()
        log(
            logger,
            "feedback",
            rating=rating,
            turn=turn_id,
            agent=route or "default",
            run_id=run_id,
            user=user,
        )
        await self._audit(
            AuditEntry(
                "feedback",
                team,
                channel,
                user,
                route or "default",
                rating,
                thread_ts=str(message.get("thread_ts") or ""),
                ids={"turn": turn_id, "run": run_id, "message_ts": str(message.get("ts") or "")},
            )
        )
        note = (
            "Thanks: your feedback on this answer is recorded."
            if rating == "good"
            else ("Thanks: your feedback is recorded, and helps the people who run this agent improve it.")
        )
        try:
            await client.chat_postEphemeral(
                channel=channel, user=user, text=note, thread_ts=message.get("thread_ts")
            )
        except Exception as exc:
            log(logger, "feedback.ephemeral_failed", logging.INFO, error=repr(exc))

    async def _on_ask_again(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self._spawn(self._ask_again(body, client))

    async def _ask_again(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Receive the kept question as a new turn (answered in the same thread), and take the
        button off the cut reply so nobody asks twice; a refusal is told to the clicker only."""
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id", "")
        message = body.get("message") or {}
        again = await self.sink.ask_again(action.get("value", ""), user)
        if isinstance(again, str):
            try:
                await client.chat_postEphemeral(
                    channel=channel, user=user, text=again, thread_ts=message.get("thread_ts")
                )
            except Exception as exc:
                log(logger, "ask_again.ephemeral_failed", logging.INFO, error=repr(exc))
            return
        receipt = await self.sink.receive(again)
        self._spawn(self.sink.answer(receipt, again))
        blocks = [b for b in message.get("blocks") or [] if b.get("type") != "actions"]
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<@{user}> asked again."}]}
        )
        try:
            await client.chat_update(
                channel=channel, ts=message.get("ts", ""), text=message.get("text", ""), blocks=blocks
            )
        except Exception as exc:  # the question is asked again either way
            log(logger, "ask_again.update_failed", logging.INFO, error=repr(exc))

    async def _on_confirm(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
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
        tools = self.registry.tools if self.registry is not None else {}
        if verb == "list":
            disabled = await self.store.disabled_tools(team, channel)
            listing = _tool_listing(self.registry, disabled, admin=user in self.admins)
            speaker = self.sink.speaker(team, channel)
            await ack(text=f"*Agent answering here:* {speaker}\n{listing}" if speaker else listing)
            return
        if verb in ("enable", "disable") and len(words) == 2:
            name = words[1]
            setting = AuditEntry("tool_setting", team, channel, user, name, outcome="")
            if user not in self.admins:
                await ack(text="Only admins (BOT_ADMINS) can turn tools on or off.")
                setting.outcome = f"refused: {verb} by a non-admin"
                await self._audit(setting)
                return
            if name not in tools:
                await ack(text=f"There is no tool named `{name}`. Try `{TOOLS_COMMAND} list`.")
                return
            await self.store.set_tool_enabled(team, channel, name, verb == "enable", user)
            log(logger, "tools.toggled", tool=name, enabled=verb == "enable", channel=channel, user=user)
            await ack(text=f"`{name}` is now {'on' if verb == 'enable' else 'off'} in this channel.")
            setting.outcome = f"{verb}d"
            await self._audit(setting)
            return
        await ack(
            text=f"Usage: `{TOOLS_COMMAND} list`, `{TOOLS_COMMAND} enable NAME`, "
            f"`{TOOLS_COMMAND} disable NAME`"
        )

    async def _audit(self, entry: AuditEntry) -> None:
        if self.audit is not None:
            await self.audit.record(entry)

    async def drain(self, grace_s: float = 30.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)


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
    add_install_routes(app, bolt)
    return app


def add_install_routes(app: web.Application, bolt: AsyncApp) -> None:
    """``GET /slack/install`` (the *Add to Slack* page) and ``GET /slack/oauth_redirect``
    (where Slack sends the person back with a code), when the app installs through OAuth."""
    flow = bolt.oauth_flow
    if flow is None:
        return

    async def install(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_installation(await to_bolt_request(request)))

    async def redirect(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))

    app.router.add_get(flow.install_path, install)
    app.router.add_get(flow.redirect_uri_path, redirect)


def install_app(bolt: AsyncApp, ready: asyncio.Event | None = None) -> web.Application:
    """Socket Mode takes events over the socket, but an install still comes back over HTTP."""
    app = web.Application(client_max_size=64 * 1024)
    add_install_routes(app, bolt)
    app.router.add_get("/healthz", _health(ready, None))
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
