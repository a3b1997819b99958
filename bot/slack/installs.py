"""Where OAuth installs live: slack_sdk's SQLAlchemy installation and OAuth state stores,
on PostgreSQL (asyncpg; every replica shares them) or SQLite (aiosqlite; one process)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# the bot scopes of manifest.yml (tests/test_installs.py keeps the two in step)
BOT_SCOPES = (
    "app_mentions:read",
    "chat:write",
    "im:history",
    "im:read",
    "im:write",
    "channels:history",
    "groups:history",
    "mpim:history",
    "users:read",
    "reactions:write",
    "commands",
    "assistant:write",
    "files:read",
    "files:write",
)
STATE_EXPIRATION_S = 600  # an install started more than ten minutes ago is refused


class InstallStoreError(ValueError):
    """``BOT_INSTALL_STORE_URL`` cannot be used, said in a way an operator can act on."""


def engine_url(url: str) -> str:
    """``postgresql://`` and ``sqlite:///`` as operators write them, with the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
        return url
    raise InstallStoreError(
        f"BOT_INSTALL_STORE_URL must start with postgresql:// or sqlite:/// (got {url.split(':', 1)[0]}:...)"
    )


def authorize_url(slack_api_url: str) -> str:
    """Slack's consent page, beside its Web API (``https://slack.com/oauth/v2/authorize``)."""
    return urljoin(slack_api_url, "../oauth/v2/authorize")


@dataclass
class Installs:
    engine: AsyncEngine
    installations: AsyncSQLAlchemyInstallationStore
    states: AsyncSQLAlchemyOAuthStateStore

    async def aclose(self) -> None:
        await self.engine.dispose()


async def open_installs(url: str, client_id: str) -> Installs:
    """The stores, with their tables made (replicas starting together may race to make
    them: the loser finds them made)."""
    full = engine_url(url)
    if full.startswith("sqlite+aiosqlite:///"):
        path = full.removeprefix("sqlite+aiosqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(full, pool_pre_ping=True)
    installs = Installs(
        engine,
        AsyncSQLAlchemyInstallationStore(client_id=client_id, engine=engine),
        AsyncSQLAlchemyOAuthStateStore(expiration_seconds=STATE_EXPIRATION_S, engine=engine),
    )
    try:
        for attempt in range(2):
            try:
                await installs.installations.create_tables()
                await installs.states.create_tables()
                break
            except SQLAlchemyError:
                if attempt:
                    raise
                await asyncio.sleep(0.5)  # another replica was making them: look again
    except (SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        raise InstallStoreError(f"cannot open the install store: {_reason(exc)}") from None
    return installs


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
