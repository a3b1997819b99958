"""Bearer tokens for the agent service: Entra ID via azure-identity, or a static token.

The service takes Entra ID tokens only (no keys) for scope ``https://ai.azure.com/.default``.
A token is cached and refreshed ahead of expiry; concurrent callers share one refresh.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol, runtime_checkable

from .errors import AuthenticationError

SCOPE = "https://ai.azure.com/.default"
NO_CREDENTIAL = (
    "no Azure credential for the agent service: run `az login`, use a managed identity, "
    "or set AGENTS_ACCESS_TOKEN"
)
REFRESH_MARGIN_S = 300.0  # refresh five minutes before the token expires


@runtime_checkable
class TokenProvider(Protocol):
    async def get_token(self) -> str: ...

    def invalidate(self) -> bool:
        """Drop a cached token after a 401; True when a fresh one may differ."""
        ...

    async def close(self) -> None: ...


class StaticToken:
    """``AGENTS_ACCESS_TOKEN``: a fixed bearer token (development, the emulator)."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ValueError("AGENTS_ACCESS_TOKEN is set but empty")
        self._token = token.strip()

    async def get_token(self) -> str:
        return self._token

    def invalidate(self) -> bool:
        return False

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticToken(***)"


class CredentialToken:
    """Any azure-identity async credential (``DefaultAzureCredential`` by default)."""

    def __init__(
        self,
        credential: Any | None = None,
        *,
        scope: str = SCOPE,
        refresh_margin: float = REFRESH_MARGIN_S,
        clock: Any = time.time,
    ) -> None:
        self._credential = credential
        self._owns_credential = credential is None
        self._scope = scope
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_on - self._margin

    async def get_token(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:  # one refresh in flight; the others wait and reuse it
            if self._fresh():
                return self._token  # type: ignore[return-value]
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            access = await self._fetch()
            self._token = access.token
            self._expires_on = float(access.expires_on)
            return self._token

    async def _fetch(self) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return await self._credential.get_token(self._scope)  # type: ignore[union-attr]
        except ClientAuthenticationError as exc:  # no credential at all, or one that was refused
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AuthenticationError(f"{NO_CREDENTIAL} ({first})") from None

    def invalidate(self) -> bool:
        self._token = None
        self._expires_on = 0.0
        return True

    async def close(self) -> None:
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

    def __repr__(self) -> str:
        return f"CredentialToken(scope={self._scope!r})"


def token_provider(static_token: str | None) -> TokenProvider:
    """``AGENTS_ACCESS_TOKEN`` when set, else DefaultAzureCredential."""
    if static_token:
        return StaticToken(static_token)
    return CredentialToken()
