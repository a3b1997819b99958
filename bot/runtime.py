"""Builds the running bot from settings: store, agent client, Slack client, Bolt app,
orchestrator; and serves it in HTTP mode or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.web.async_client import AsyncWebClient

from . import telemetry
from .agents import AgentBackend, AgentServiceError, function_tool, make_backend, tool_drift
from .agents.routing import AgentRouter, load_routes
from .logs import log
from .metrics import Metrics
from .plugins import PluginToolRunner, discover
from .plugins.registry import specs_in
from .plugins.workers import ToolWorkers
from .recovery import Recovery
from .settings import Settings
from .slack.app import SlackSurface, http_app, install_app, ops_app
from .slack.assistant import AssistantPane, PaneThreads, prompts_from
from .slack.confirm import SlackConfirmer
from .slack.http_retry import slack_retry_handlers
from .slack.installs import BOT_SCOPES, STATE_EXPIRATION_S, Installs, authorize_url, open_installs
from .slack.native import NativeSupport
from .slack.pacing import Budgets
from .slack.workspaces import InstalledAuthorize, InstalledWorkspaces, OneWorkspace, Workspaces
from .store import Store, open_store
from .store.audit import AuditTrail
from .turns import Caps, ToolRunner, TurnOrchestrator
from .turns.files_in import FilesIn
from .turns.files_out import FilesOut

logger = logging.getLogger("bot.runtime")


@dataclass
class Bot:
    settings: Settings
    store: Store
    agents: AgentRouter
    slack: AsyncWebClient
    bolt: AsyncApp
    orchestrator: TurnOrchestrator
    surface: SlackSurface
    ready: asyncio.Event
    recovery: Recovery
    draining: asyncio.Event
    installs: Installs | None = None  # OAuth installs (many workspaces)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop taking events, let turns in flight finish within the grace period, mark
        the rest interrupted, then close."""
        grace = self.settings.shutdown_grace if grace_s is None else grace_s
        self.draining.set()
        log(logger, "bot.stopping", grace_s=grace, in_flight=len(self.orchestrator.answering))
        await self.surface.drain(grace_s=grace)
        leftovers = list(self.orchestrator.answering) + list(self.surface.tasks)
        for task in leftovers:
            task.cancel()  # each marks its reply interrupted on the way out
        if leftovers:
            await asyncio.wait(leftovers, timeout=15)
        await self.aclose()

    async def aclose(self) -> None:
        await self.recovery.stop()
        await self.orchestrator.aclose()
        await self.agents.aclose()
        await self.store.close()
        if self.installs is not None:
            await self.installs.aclose()
        await telemetry.shutdown()  # what is buffered is sent


async def build_bot(
    settings: Settings,
    *,
    tools: ToolRunner | None = None,
    budgets: Budgets | None = None,
    extra_tools: Sequence[Callable[..., Any]] = (),
) -> Bot:
    token = settings.secret("slack_bot_token")
    if token and settings.multi_workspace:
        raise ValueError(
            "set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET "
            "(installed in many workspaces), not both"
        )
    if not token and not settings.multi_workspace:
        raise ValueError("SLACK_BOT_TOKEN is not set (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)")
    if not settings.has_agent and not settings.routes:
        raise ValueError("PROJECT_ENDPOINT and AGENT_ID (or AGENT_NAME) must be set")
    routes = load_routes(settings.routes) if settings.routes else None  # before anything opens
    telemetry.configure(
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
        azure_connection_string=settings.secret("applicationinsights_connection_string") or "",
        service_name=settings.otel_service_name,
    )
    side = await _slack_side(settings)
    store: Store | None = None
    agents: AgentRouter | None = None
    try:
        store = await open_store(
            settings.store_url,
            retention_s=settings.retention_days * 86400,
            audit_retention_s=settings.audit_retention_days * 86400,
        )
        agents = AgentRouter(settings, routes, make_backend)
        return await _assemble(
            settings,
            side,
            store,
            agents,
            tools=tools,
            budgets=budgets,
            extra_tools=extra_tools,
        )
    except BaseException:  # nothing left open: a process that cannot start must exit
        if agents is not None:
            await agents.aclose()
        if store is not None:
            await store.close()
        if side.installs is not None:
            await side.installs.aclose()
        raise


@dataclass
class SlackSide:
    """The Slack client the app starts with, who the bot is (one workspace) and, installed
    through OAuth, where the installs are."""

    client: AsyncWebClient
    identity: dict[str, Any]
    installs: Installs | None
    workspaces: Workspaces

    def bolt(self, settings: Settings) -> AsyncApp:
        oauth: dict[str, Any] = {}
        if self.installs is not None:
            assert isinstance(self.workspaces, InstalledWorkspaces)
            oauth = {
                "authorize": InstalledAuthorize(self.workspaces),
                "installation_store": self.installs.installations,
                "oauth_settings": AsyncOAuthSettings(
                    client_id=settings.slack_client_id,
                    client_secret=settings.secret("slack_client_secret"),
                    scopes=list(BOT_SCOPES),
                    user_scopes=[],
                    redirect_uri=settings.slack_redirect_uri,
                    authorization_url=authorize_url(settings.slack_api_url),
                    installation_store=self.installs.installations,
                    state_store=self.installs.states,
                    state_expiration_seconds=STATE_EXPIRATION_S,
                ),
            }
        return AsyncApp(
            client=self.client,
            signing_secret=settings.secret("slack_signing_secret") or "",
            request_verification_enabled=bool(settings.slack_signing_secret),
            # the listener makes the turn durable before Slack gets its ack (a few ms, measured:
            # bench/intake.py); the answer runs in the background
            process_before_response=True,
            **oauth,
        )


async def _slack_side(settings: Settings) -> SlackSide:
    """One workspace: its token is checked first (a refused token leaves nothing open behind
    it). Many: a token-less client, and the install store every replica shares."""
    if not settings.multi_workspace:
        slack = AsyncWebClient(
            token=settings.secret("slack_bot_token"),
            base_url=settings.slack_api_url,
            retry_handlers=slack_retry_handlers(),
        )
        response = await slack.auth_test()
        identity = dict(response.data) if isinstance(response.data, dict) else {}
        return SlackSide(slack, identity, None, OneWorkspace(slack, identity.get("user_id")))
    installs = await open_installs(settings.install_store_url, settings.slack_client_id or "")
    workspaces = InstalledWorkspaces(
        installs.installations,
        client_id=settings.slack_client_id or "",
        client_secret=settings.secret("slack_client_secret") or "",
        base_url=settings.slack_api_url,
    )
    return SlackSide(AsyncWebClient(base_url=settings.slack_api_url), {}, installs, workspaces)


def _budgets(settings: Settings, store: Store) -> Budgets:
    """With a Redis store every replica spends one Slack budget per workspace (Slack counts
    per workspace, not per process); with SQLite (one process) the pacers are local."""
    from .store.redis import RedisStore

    if settings.shared_slack_budget and isinstance(store, RedisStore):
        from .store.buckets import RedisBuckets

        log(logger, "pacing.shared", store=store.prefix)
        return Budgets(shared=RedisBuckets(store.r, store.prefix))
    return Budgets()


async def _assemble(
    settings: Settings,
    side: SlackSide,
    store: Store,
    agents: AgentRouter,
    *,
    tools: ToolRunner | None,
    budgets: Budgets | None,
    extra_tools: Sequence[Callable[..., Any]],
) -> Bot:
    """The bot's parts, wired: Bolt, tools, the pipeline, the Slack surface, recovery."""
    slack, identity = side.client, side.identity
    bolt = side.bolt(settings)
    workspaces = side.workspaces
    registry = discover(settings.tools_dir)
    for spec in specs_in(list(extra_tools)):
        registry.add(spec, f"built in: {spec.source}")
    confirmer = SlackConfirmer(
        workspaces, store, admins=settings.admin_ids, timeout_s=settings.confirm_timeout
    )
    metrics = Metrics()
    audit = AuditTrail(store)
    if tools is None and registry.tools:
        tools = PluginToolRunner(
            registry,
            store=store,
            confirmer=confirmer,
            output_limit=settings.tool_output_limit,
            workers=ToolWorkers(settings.tool_threads),
            on_outcome=lambda outcome: metrics.tool_calls.labels(outcome).inc(),
            audit=audit,
        )
    panes = PaneThreads(store)
    orchestrator = TurnOrchestrator(
        lease_ttl_s=settings.heartbeat_ttl,
        metrics=metrics,
        allow_mass_mentions=settings.allow_mass_mentions,
        router=agents,
        approver=confirmer,
        delivery_deadline_s=settings.delivery_deadline_minutes * 60,
        caps=Caps(
            tool_rounds=settings.max_tool_rounds,
            reply_chars=settings.max_reply_chars,
            turn_seconds=settings.max_turn_minutes * 60,
        ),
        store=store,
        workspaces=workspaces,
        budgets=budgets or _budgets(settings, store),
        tools=tools,
        admins=settings.admin_ids,
        files_in=FilesIn(
            store,
            workspaces,
            max_bytes=int(settings.file_max_mb * 1024 * 1024),
            max_files=settings.max_files,
        ),
        files_out=FilesOut(workspaces),
        audit=audit,
        native=NativeSupport(settings.stream_mode, settings.task_display),
        panes=panes,
    )
    surface = SlackSurface(
        bolt,
        orchestrator,
        store=store,
        metrics=metrics,
        bot_user_id=identity.get("user_id"),
        admins=settings.admin_ids,
        confirmer=confirmer,
        registry=registry,
        audit=audit,
        workspaces=workspaces,
        installations=side.installs.installations if side.installs is not None else None,
        allowed_teams=settings.allowed_team_ids,
        allowed_channels=settings.allowed_channel_ids,
        user_per_minute=settings.user_runs_per_minute,
        channel_per_minute=settings.channel_runs_per_minute,
        pane=AssistantPane(
            panes, prompts=prompts_from(settings.prompts), greeting=settings.assistant_greeting
        ),
    )
    if registry.tools:
        for key in agents.keys():
            await warn_on_tool_drift(agents.backend(key), registry)
    recovery = Recovery(
        orchestrator, heartbeat_ttl_s=settings.heartbeat_ttl, interval_s=max(0.5, settings.heartbeat_ttl / 3)
    )
    await recovery.start()
    log(
        logger,
        "bot.ready",
        replica=orchestrator.replica_id,
        team=identity.get("team_id") or ("installed workspaces" if side.installs else None),
        bot_user=identity.get("user_id"),
        agent_id=settings.agent_ref,
        backend=settings.backend,
        routes=agents.describe() if agents.routed else None,
    )
    return Bot(
        settings,
        store,
        agents,
        slack,
        bolt,
        orchestrator,
        surface,
        asyncio.Event(),
        recovery,
        asyncio.Event(),
        side.installs,
    )


async def warn_on_tool_drift(backend: AgentBackend, registry: Any) -> list[str]:
    """New Foundry agents keep their function tools in the agent version: say which plugin
    tools the answering version lacks or has in another shape, and how to fix it."""
    try:
        info = await backend.describe()
    except AgentServiceError as exc:
        log(logger, "tools.drift_unchecked", logging.WARNING, error=str(exc))
        return []
    problems = tool_drift(info, [function_tool(spec.definition()) for spec in registry.tools.values()])
    if problems:
        log(
            logger,
            "tools.out_of_sync",
            logging.WARNING,
            agent=info.name,
            version=info.version,
            tools=", ".join(problems),
            fix="python -m bot tools sync (a new agent version with the bot's tools), then unset "
            "AGENT_VERSION or pin the new version",
        )
    return problems


async def serve_http(settings: Settings, host: str, port: int) -> None:
    if not settings.slack_signing_secret:
        raise ValueError("HTTP mode needs SLACK_SIGNING_SECRET to check Slack's signatures")
    bot = await build_bot(settings)
    app = http_app(
        bot.bolt, bot.ready, signing_secret=settings.secret("slack_signing_secret"), draining=bot.draining
    )
    runner = web.AppRunner(app, access_log=None)
    ops: web.AppRunner | None = None
    try:  # a port already taken ends here too, with nothing left running
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        ops = await serve_ops(settings, bot)
        bot.ready.set()
        print(f"slack-agent-bot listening on http://{host}:{port}/slack/events", flush=True)
        await _until_signal()
    finally:
        await bot.shutdown()
        await runner.cleanup()
        if ops is not None:
            await ops.cleanup()


SOCKET_PING_INTERVAL_S = 3.0


async def serve_socket(settings: Settings, host: str = "0.0.0.0", port: int = 3000) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    app_token = settings.secret("slack_app_token")
    if not app_token:
        raise ValueError("Socket Mode needs SLACK_APP_TOKEN (xapp-...)")
    bot = await build_bot(settings)
    # a lost connection is noticed within a ping or two (the client's default is 10 s, long
    # enough for Slack to spend a retry of an event on a dead socket)
    handler = AsyncSocketModeHandler(bot.bolt, app_token, ping_interval=SOCKET_PING_INTERVAL_S)
    ops: web.AppRunner | None = None
    installs: web.AppRunner | None = None
    try:  # a refused app token or a taken ops port ends here too, with nothing left running
        await handler.connect_async()
        ops = await serve_ops(settings, bot)
        if bot.bolt.oauth_flow is not None:  # installs come back over HTTP even in Socket Mode
            installs = web.AppRunner(install_app(bot.bolt, bot.ready), access_log=None)
            await installs.setup()
            await web.TCPSite(installs, host, port).start()
            print(f"slack-agent-bot installs at http://{host}:{port}/slack/install", flush=True)
        bot.ready.set()
        print("slack-agent-bot connected in Socket Mode", flush=True)
        await _until_signal()
    finally:
        await handler.close_async()  # stop taking events
        await bot.shutdown()
        for runner in (ops, installs):
            if runner is not None:
                await runner.cleanup()


async def serve_ops(settings: Settings, bot: Bot) -> web.AppRunner | None:
    """``/metrics`` and ``/healthz`` on their own port (``BOT_METRICS_PORT``), on loopback
    unless ``BOT_METRICS_HOST`` says otherwise; never the Slack routes."""
    if not settings.metrics_port:
        return None
    runner = web.AppRunner(
        ops_app(bot.ready, draining=bot.draining, metrics=bot.orchestrator.metrics), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    log(logger, "bot.metrics_listening", host=settings.metrics_host, port=settings.metrics_port)
    return runner


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
