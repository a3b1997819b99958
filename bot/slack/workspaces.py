"""Which token speaks for which Slack workspace.

One workspace (``SLACK_BOT_TOKEN``): one client, one bot user. Many workspaces (the OAuth
install, ``SLACK_CLIENT_ID``/``SLACK_CLIENT_SECRET``): each workspace's bot token is read from
the installation store when a call is made, and rotated shortly before it expires (Slack's
token rotation), so a client held by a long reply never speaks with a stale token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from ..logs import log
from .http_retry import slack_retry_handlers

logger = logging.getLogger("bot.slack.workspaces")

INSTALLATION_CACHE_S = 30.0  # a token read from the store is reused this long (uninstalls: at once here)
STALE_TOKEN_ERRORS = frozenset({"token_expired", "token_revoked", "invalid_auth"})
ROTATE_BEFORE_MINUTES = 120  # as Bolt's own authorize: rotate a token with less than this left
ROTATION_WAIT_S = 5.0  # how long to wait for another replica's rotated token to reach the store


class Workspaces(Protocol):
    """The Slack side of every workspace the bot answers in."""

    def client(self, team: str) -> AsyncWebClient:
        """A client that speaks for ``team`` (its token is resolved at each call)."""
        ...

    async def token(self, team: str) -> str:
        """The bot token for ``team`` now (for downloads that are not API calls)."""
        ...

    async def bot_user_id(self, team: str) -> str | None: ...

    def forget(self, team: str) -> None:
        """Drop what is cached for ``team`` (uninstalled, or its tokens revoked)."""
        ...


class OneWorkspace:
    """``SLACK_BOT_TOKEN``: the same client and bot user everywhere."""

    def __init__(self, client: AsyncWebClient, bot_user_id: str | None) -> None:
        self._client = client
        self._bot_user_id = bot_user_id

    def client(self, team: str) -> AsyncWebClient:
        return self._client

    async def token(self, team: str) -> str:
        return self._client.token or ""

    async def bot_user_id(self, team: str) -> str | None:
        return self._bot_user_id

    def forget(self, team: str) -> None:
        return None


class NotInstalled(SlackApiError):
    """The bot has no installation (or no bot token) in this workspace."""


class WorkspaceClient(AsyncWebClient):
    """An ``AsyncWebClient`` for one workspace whose bearer token is looked up at each call."""

    def __init__(self, team: str, workspaces: InstalledWorkspaces, *, base_url: str) -> None:
        super().__init__(token=None, base_url=base_url, retry_handlers=slack_retry_handlers())
        self.team = team
        self._workspaces = workspaces

    async def api_call(  # type: ignore[override]
        self, api_method: str, *, headers: dict[str, Any] | None = None, auth: Any = None, **kwargs: Any
    ) -> AsyncSlackResponse:
        if auth is not None:  # client-credential calls (oauth.v2.access) keep their Basic auth
            return await super().api_call(api_method, headers=headers, auth=auth, **kwargs)
        token = await self._workspaces.token(self.team)
        try:
            return await super().api_call(api_method, headers=_bearer(headers, token), **kwargs)
        except SlackApiError as exc:
            if exc.response is None or exc.response.get("error") not in STALE_TOKEN_ERRORS:
                raise
            # another replica rotated the token, or the app was reinstalled: read it again
            self._workspaces.forget(self.team)
            fresh = await self._workspaces.token(self.team)
            if fresh == token:
                raise
            return await super().api_call(api_method, headers=_bearer(headers, fresh), **kwargs)


def _bearer(headers: dict[str, Any] | None, token: str) -> dict[str, Any]:
    return {**(headers or {}), "Authorization": f"Bearer {token}"}


class InstalledWorkspaces:
    """Workspaces that installed the app through OAuth, read from the installation store."""

    def __init__(
        self,
        store: AsyncInstallationStore,
        *,
        client_id: str,
        client_secret: str,
        base_url: str,
        rotate_before_minutes: int = ROTATE_BEFORE_MINUTES,
    ) -> None:
        self.store = store
        self.base_url = base_url
        self.rotate_before_minutes = rotate_before_minutes
        self._rotator = AsyncTokenRotator(
            client_id=client_id, client_secret=client_secret, client=AsyncWebClient(base_url=base_url)
        )
        self._clients: dict[str, WorkspaceClient] = {}
        self._cache: dict[str, tuple[float, Installation]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def client(self, team: str) -> AsyncWebClient:
        client = self._clients.get(team)
        if client is None:
            client = self._clients[team] = WorkspaceClient(team, self, base_url=self.base_url)
        return client

    async def token(self, team: str) -> str:
        return str((await self.installation(team)).bot_token)

    async def bot_user_id(self, team: str) -> str | None:
        return (await self.installation(team)).bot_user_id

    def forget(self, team: str) -> None:
        self._cache.pop(team, None)

    async def installation(self, team: str) -> Installation:
        hit = self._cache.get(team)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lock = self._locks.setdefault(team, asyncio.Lock())
        async with lock:  # one rotation per workspace at a time in this process
            hit = self._cache.get(team)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            found = await self.store.async_find_installation(enterprise_id=None, team_id=team)
            if found is None or not found.bot_token:
                self.forget(team)
                raise NotInstalled(
                    f"the app is not installed in workspace {team} (install it at /slack/install)",
                    _refusal(self.base_url, "not_installed"),
                )
            found = await self._rotated(found)
            # reused until the next rotation is due (a failed one is tried again after the pause)
            due = self._until_rotation(found)
            keep = min(INSTALLATION_CACHE_S, due) if due > 0 else INSTALLATION_CACHE_S
            if found.bot_token_expires_at:  # never past the token's own end
                keep = min(keep, float(found.bot_token_expires_at) - time.time() - 5)
            if keep > 0:
                self._cache[team] = (time.monotonic() + keep, found)
            return found

    def _until_rotation(self, installation: Installation) -> float:
        """Seconds before the bot token enters its rotation window (inf: it never expires)."""
        expires_at = installation.bot_token_expires_at
        if not expires_at:
            return float("inf")
        return float(expires_at) - self.rotate_before_minutes * 60 - time.time()

    def _expiring(self, installation: Installation) -> bool:
        return self._until_rotation(installation) <= 0

    async def _rotated(self, installation: Installation) -> Installation:
        """Refresh a token that expires soon, and keep the new one for every replica."""
        if not installation.bot_refresh_token or not self._expiring(installation):
            return installation
        try:
            refreshed = await self._rotator.perform_token_rotation(
                installation=installation, minutes_before_expiration=self.rotate_before_minutes
            )
        except SlackTokenRotationError as exc:
            error = exc.api_error.response.get("error") if exc.api_error.response is not None else None
            if error == "invalid_refresh_token":  # each refresh token is good once
                fresher = await self._rotated_elsewhere(installation)
                if fresher is not None:
                    return fresher
            log(
                logger, "slack.token_rotation_failed", logging.WARNING, team=installation.team_id, error=error
            )
            if (installation.bot_token_expires_at or 0) > time.time():
                return installation  # still good for a while: the next call tries again
            raise NotInstalled(
                f"the bot token of workspace {installation.team_id} expired and could not be "
                f"refreshed ({error}): reinstall the app at /slack/install",
                _refusal(self.base_url, "token_expired"),
            ) from None
        if refreshed is None:
            return installation
        await self.store.async_save(refreshed)
        log(
            logger,
            "slack.token_rotated",
            team=installation.team_id,
            expires_at=refreshed.bot_token_expires_at,
        )
        return refreshed

    async def _rotated_elsewhere(self, installation: Installation) -> Installation | None:
        """Another replica spent the refresh token a moment before us: its new token reaches
        the store as soon as Slack has answered it."""
        deadline = time.monotonic() + ROTATION_WAIT_S
        while True:
            found = await self.store.async_find_installation(enterprise_id=None, team_id=installation.team_id)
            if found is not None and found.bot_refresh_token != installation.bot_refresh_token:
                return found
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.2)


class InstalledAuthorize(AsyncAuthorize):
    """Bolt's authorize for incoming requests, through the same installations, cache and
    token rotation as the bot's own calls. Bolt's built-in one rotates on its own: two events
    at once (a mention arrives as ``app_mention`` and ``message``) would spend the single-use
    refresh token twice, and the second would fail (slackapi/bolt-python#663)."""

    def __init__(self, workspaces: InstalledWorkspaces) -> None:
        super().__init__()
        self.workspaces = workspaces

    async def __call__(  # type: ignore[override]
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_: Any,
    ) -> AuthorizeResult | None:
        if not team_id:
            return None  # org-wide (Enterprise Grid) installs are not supported
        try:
            found = await self.workspaces.installation(team_id)
        except NotInstalled:
            return None  # Bolt tells Slack the app is not installed here
        return AuthorizeResult(
            enterprise_id=found.enterprise_id,
            team_id=found.team_id,
            bot_user_id=found.bot_user_id,
            bot_id=found.bot_id,
            bot_token=found.bot_token,
            bot_scopes=found.bot_scopes,
            user_id=user_id,
        )


def _refusal(base_url: str, error: str) -> AsyncSlackResponse:
    """A Slack-shaped refusal, so callers handle it as they handle Slack's own."""
    return AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url=base_url,
        req_args={},
        data={"ok": False, "error": error},
        headers={},
        status_code=200,
    )
