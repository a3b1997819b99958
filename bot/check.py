"""``python -m bot check``: every part the bot needs, tried the way ``run`` uses it.

Each part is checked whatever the others say (a bad endpoint is reported even when no
agent is named), and each finding is one line: ``ok``, ``!`` (works, but looks wrong) or
``x`` with the fix. Never a traceback: an operator runs this when something is wrong.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from .cli_store import STORE_ERRORS, redacted_url
from .settings import Settings

if TYPE_CHECKING:
    from .agents import AgentInfo

SLACK_HELP = (
    "create a Slack app from manifest.yml (https://api.slack.com/apps -> Create New App -> "
    "From an app manifest), install it to your workspace, then set SLACK_BOT_TOKEN (OAuth & "
    "Permissions, xoxb-...) and either SLACK_APP_TOKEN (Basic Information -> App-Level Tokens, "
    "xapp-..., scope connections:write) for Socket Mode or SLACK_SIGNING_SECRET (Basic "
    "Information) for HTTP mode"
)
ENDPOINT_SHAPE = "https://<resource>.services.ai.azure.com/api/projects/<project>"
LOGIN_FIX = (
    "run `az login` (or use a managed identity) or set AGENTS_ACCESS_TOKEN; the identity "
    "needs the Azure AI User role on the project"
)
UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)  # a call that never got there
CHECK_RETRY_S = 5.0  # how long check retries a failing agent service before saying so
CHECKED_WORKSPACES = 20  # installs checked one by one; the rest are counted
TOKEN_KINDS = {
    "xoxb-": "a bot token",
    "xoxp-": "a user token",
    "xapp-": "an app-level token",
    "xoxe": "a refresh token",
}


class Report:
    """What ``check`` prints, and whether anything failed."""

    def __init__(self) -> None:
        self.failed = False

    def ok(self, text: str) -> None:
        print(f"ok {text}")

    def warn(self, text: str, fix: str | None = None) -> None:
        print(f"! {text}" + (f"\n  fix: {fix}" if fix else ""))

    def fail(self, text: str, fix: str | None = None) -> None:
        self.failed = True
        print(f"x {text}" + (f"\n  fix: {fix}" if fix else ""))


def _kind_of(token: str) -> str:
    return next(
        (kind for prefix, kind in TOKEN_KINDS.items() if token.startswith(prefix)), "not a Slack token"
    )


# -- Slack ---------------------------------------------------------------------------------


def check_slack_settings(settings: Settings, report: Report) -> bool:
    """Token shapes and the run mode's needs, as ``run`` enforces them. False: do not call Slack."""
    bot_token = settings.secret("slack_bot_token")
    app_token = settings.secret("slack_app_token")
    usable = True
    if settings.multi_workspace:
        usable = _check_oauth_settings(settings, report)
    elif not bot_token:
        report.fail("SLACK_BOT_TOKEN is not set", SLACK_HELP)
        usable = False
    elif not bot_token.startswith("xoxb-"):
        report.fail(
            f"SLACK_BOT_TOKEN is {_kind_of(bot_token)}, not a bot token (xoxb-...)",
            "copy the Bot User OAuth Token from OAuth & Permissions",
        )
        usable = False
    if app_token and not app_token.startswith("xapp-"):
        report.fail(
            f"SLACK_APP_TOKEN is {_kind_of(app_token)}, not an app-level token (xapp-...)",
            "Basic Information -> App-Level Tokens: generate one with the connections:write scope",
        )
    if not app_token and not settings.slack_signing_secret:
        report.fail(
            "neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET (HTTP mode) is set",
            "set one: `run` needs it to receive events",
        )
    secret = settings.secret("slack_signing_secret")
    if secret and not re.fullmatch(r"[0-9a-f]{32}", secret):
        report.warn(
            "SLACK_SIGNING_SECRET does not look like Slack's (32 hex characters): "
            "Slack's requests may all be refused"
        )
    return usable


def _check_oauth_settings(settings: Settings, report: Report) -> bool:
    if settings.secret("slack_bot_token"):
        report.fail(
            "both SLACK_BOT_TOKEN and SLACK_CLIENT_ID/SLACK_CLIENT_SECRET are set",
            "unset SLACK_BOT_TOKEN to install in many workspaces, or the client settings for one",
        )
        return False
    if not re.fullmatch(r"\d+\.\d+", settings.slack_client_id or ""):
        report.warn("SLACK_CLIENT_ID does not look like Slack's (digits.digits, from Basic Information)")
    return True


async def check_installs(settings: Settings, report: Report) -> None:
    """Installed through OAuth: the install store opens, and each workspace's token works."""
    from slack_sdk.errors import SlackApiError
    from sqlalchemy import select

    from .slack.installs import InstallStoreError, open_installs
    from .slack.workspaces import InstalledWorkspaces

    try:
        installs = await open_installs(settings.install_store_url, settings.slack_client_id or "")
    except InstallStoreError as exc:
        report.fail(str(exc), "BOT_INSTALL_STORE_URL: postgresql://user@host/db (replicas) or sqlite:///path")
        return
    try:
        bots = installs.installations.bots
        query = select(bots.c.team_id).where(bots.c.client_id == settings.slack_client_id).distinct()
        async with installs.engine.connect() as conn:
            teams = sorted(str(row[0]) for row in await conn.execute(query) if row[0])
        report.ok(f"install store: {redacted_url(settings.install_store_url)}")
        if not teams:
            report.warn(
                "no workspace has installed the app yet",
                "open https://<your host>/slack/install and click Allow (the redirect URL on the "
                "app's OAuth & Permissions page must be https://<your host>/slack/oauth_redirect)",
            )
        workspaces = InstalledWorkspaces(
            installs.installations,
            client_id=settings.slack_client_id or "",
            client_secret=settings.secret("slack_client_secret") or "",
            base_url=settings.slack_api_url,
        )
        for team in teams[:CHECKED_WORKSPACES]:
            try:
                identity = await workspaces.client(team).auth_test()
            except SlackApiError as exc:
                report.fail(
                    f"workspace {team}: Slack refused its token ({exc.response.get('error')})",
                    "install the app there again at /slack/install",
                )
                continue
            except UNREACHABLE as exc:
                report.fail(f"cannot reach Slack at {settings.slack_api_url}: {exc or type(exc).__name__}")
                return
            report.ok(f"workspace {identity.get('team')} ({team}) as bot user {identity.get('user')}")
        if len(teams) > CHECKED_WORKSPACES:
            report.ok(f"... and {len(teams) - CHECKED_WORKSPACES} more workspaces (not checked)")
    finally:
        await installs.aclose()


async def check_slack(settings: Settings, report: Report) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    if not check_slack_settings(settings, report):
        return
    if settings.multi_workspace:
        await check_installs(settings, report)
        await _check_app_token(settings, report)
        return
    client = AsyncWebClient(token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url)
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        report.fail(
            f"Slack refused the bot token: {exc.response.get('error')}",
            "copy the Bot User OAuth Token (xoxb-...) from OAuth & Permissions, after installing the app",
        )
        return
    except UNREACHABLE as exc:
        report.fail(f"cannot reach Slack at {settings.slack_api_url}: {exc or type(exc).__name__}")
        return
    report.ok(f"Slack workspace {identity.get('team')} as bot user {identity.get('user')}")
    await _check_app_token(settings, report)


async def _check_app_token(settings: Settings, report: Report) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    app_token = settings.secret("slack_app_token")
    if app_token and app_token.startswith("xapp-"):
        try:  # what Socket Mode does first; the URL it answers is not used
            await AsyncWebClient(base_url=settings.slack_api_url).apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            report.fail(
                f"Slack refused SLACK_APP_TOKEN: {exc.response.get('error')}",
                "Basic Information -> App-Level Tokens: a token with connections:write, "
                "and Socket Mode enabled for the app",
            )
            return
        except UNREACHABLE as exc:
            report.fail(f"cannot reach Slack at {settings.slack_api_url}: {exc or type(exc).__name__}")
            return
        report.ok("Socket Mode: SLACK_APP_TOKEN opens a connection (run uses Socket Mode)")
    elif settings.slack_signing_secret and not app_token:
        report.ok("HTTP mode: Slack must send events to https://<your host>/slack/events")


# -- the agent service ---------------------------------------------------------------------


def check_endpoint_shape(settings: Settings, report: Report) -> bool:
    endpoint = settings.project_endpoint
    if not endpoint:
        report.fail("PROJECT_ENDPOINT is not set", f"use your Foundry project's endpoint, {ENDPOINT_SHAPE}")
        return False
    parts = urlsplit(endpoint)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "/api/projects/" not in parts.path + "/"
    ):
        report.fail(f"PROJECT_ENDPOINT {endpoint} is not a project endpoint", f"use {ENDPOINT_SHAPE}")
        return False
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        report.warn(f"PROJECT_ENDPOINT {endpoint} is plain http: tokens would travel unencrypted")
    return True


async def check_project(settings: Settings, report: Report) -> bool:
    """Reach the project with the credential, agent or not."""
    from .agents import (
        AgentConnectionError,
        AgentServiceError,
        AuthenticationError,
        NotFoundError,
        reach_project,
    )
    from .agents.auth import NO_CREDENTIAL

    try:
        await reach_project(settings)
    except ValueError as exc:
        report.fail(str(exc))
        return False
    except AuthenticationError as exc:
        if str(exc).startswith(NO_CREDENTIAL):
            report.fail(str(exc))
        else:
            report.fail(f"authentication failed: {exc}", LOGIN_FIX)
        return False
    except NotFoundError:
        report.fail(
            f"PROJECT_ENDPOINT {settings.project_endpoint} answered 404: no such project",
            f"copy the endpoint from the project's overview page ({ENDPOINT_SHAPE})",
        )
        return False
    except AgentConnectionError as exc:
        report.fail(f"cannot reach the agent service at {settings.project_endpoint}: {exc}")
        return False
    except AgentServiceError as exc:
        report.fail(f"the agent service failed: {exc}")
        return False
    report.ok(f"agent service project {settings.project_endpoint} reached")
    return True


async def check_agent(settings: Settings, report: Report) -> None:
    """The AGENT_* agent, or every agent of the routing file (``BOT_ROUTES``)."""
    targets = [("", settings)]
    if settings.routes:
        routed = check_routes(settings, report)
        if routed is None:
            return
        targets = routed
    reached: dict[str | None, bool] = {}
    for _, target in targets:  # each project once, agent or not
        if target.project_endpoint not in reached:
            shaped = check_endpoint_shape(target, report)
            reached[target.project_endpoint] = shaped and await check_project(target, report)
    for name, target in targets:
        if not target.agent_ref:
            report.fail(
                "no agent: set AGENT_ID (asst_..., classic agents) or AGENT_NAME "
                "(new Foundry agents; AGENT_VERSION to pin a version)"
            )
        elif reached.get(target.project_endpoint):
            await check_one_agent(target, report, name)


def check_routes(settings: Settings, report: Report) -> list[tuple[str, Settings]] | None:
    """The routing file, checked; the agents it names (None: it cannot be used)."""
    from .agents import make_backend
    from .agents.routing import AgentRouter, RoutesError, load_routes

    try:
        routes = load_routes(settings.routes)
        router = AgentRouter(settings, routes, make_backend)
    except RoutesError as exc:
        report.fail(str(exc), "see the README's routing section for the file's shape")
        return None
    report.ok(
        f"routing file {settings.routes}: {len(routes.agents)} agent(s), {len(routes.routes)} route(s), "
        f"default {router.label(router.default_key)}"
    )
    return [(f"{key} " if key else "", router.settings_for(key)) for key in router.keys()]


async def check_one_agent(settings: Settings, report: Report, name: str = "") -> None:
    from .agents import AgentServiceError, AuthenticationError, NotFoundError, make_backend

    try:
        backend = make_backend(settings)
    except ValueError as exc:
        report.fail(f"{name}{exc}")
        return
    try:
        info = await backend.describe()
    except AuthenticationError as exc:
        report.fail(f"{name}authentication failed: {exc}", LOGIN_FIX)
        return
    except NotFoundError as exc:
        report.fail(
            f"{name}not found: {exc}",
            f"check AGENT_ID / AGENT_NAME / AGENT_VERSION (or the routing file) and that the "
            f"endpoint is {ENDPOINT_SHAPE}",
        )
        return
    except AgentServiceError as exc:
        report.fail(f"{name}the agent service failed: {exc}")
        return
    finally:
        await backend.aclose()
    kind = (
        "new Foundry agent (Responses API)" if info.backend == "foundry" else "classic agent (threads/runs)"
    )
    report.ok(
        f"{name}{kind} {info.label} (model {info.model}) with {len(info.function_tools)} function tool(s)"
        f" and {len(info.other_tools)} other tool(s)"
    )
    check_tools(settings, info, report)


def check_tools(settings: Settings, info: AgentInfo, report: Report) -> None:
    """New agents run only the function tools their version holds: every plugin must be there."""
    from .agents import function_tool, tool_drift
    from .plugins import discover

    registry = discover(settings.tools_dir)
    for broken in registry.broken:  # the bot runs without it: worth knowing, not fatal
        report.warn(f"tool plugin {broken.source} is left out: {broken.error}")
    problems = tool_drift(info, [function_tool(spec.definition()) for spec in registry.tools.values()])
    if problems:
        report.fail(
            f"agent {info.label} lacks the bot's tools: {', '.join(problems)}",
            "run `python -m bot tools sync` (it creates an agent version with them), "
            "then unset AGENT_VERSION or pin the new version",
        )


# -- the store -----------------------------------------------------------------------------


async def check_store(settings: Settings, report: Report) -> None:
    from .store import open_store

    shown = redacted_url(settings.store_url)
    try:
        store = await open_store(settings.store_url)
    except ValueError as exc:
        report.fail(str(exc))
        return
    except STORE_ERRORS as exc:  # Redis down, a path that cannot be written
        report.fail(
            f"cannot open the store {shown}: {exc or type(exc).__name__}",
            "BOT_STORE_URL: sqlite:///<writable path> (one process) or redis://host:6379/0 (replicas)",
        )
        return
    try:
        await store.lease_owner("check")  # one round trip
    finally:
        await store.close()
    report.ok(f"store {shown}")


async def check(settings: Settings) -> int:
    """Say what works and, for what does not, how to fix it. An operator waits for the
    answer: a service that keeps failing is reported after a few seconds of retries, not after
    the bot's own retry deadline."""
    settings = settings.model_copy(
        update={"agents_retry_seconds": min(settings.agents_retry_seconds, CHECK_RETRY_S)}
    )
    report = Report()
    await check_agent(settings, report)
    await check_slack(settings, report)
    await check_store(settings, report)
    return 1 if report.failed else 0
