"""Bearer tokens: cached, refreshed ahead of expiry, one refresh in flight, never shown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from azure.core.credentials import AccessToken

from bot.agents.auth import SCOPE, CredentialToken, StaticToken, token_provider
from bot.agents.classic.client import AgentsClient
from bot.emulators.agents import AgentServiceEmulator


class CountingCredential:
    """An azure-identity style async credential that mints numbered tokens."""

    def __init__(self, lifetime: float = 3600, delay: float = 0.0) -> None:
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.lifetime = lifetime
        self.delay = delay
        self.now = 1_000_000.0

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls += 1
        self.scopes.append(scopes)
        await asyncio.sleep(self.delay)
        return AccessToken(f"token-{self.calls}", int(self.now + self.lifetime))

    async def close(self) -> None:
        return None


async def test_token_is_cached_until_the_refresh_margin() -> None:
    credential = CountingCredential(lifetime=3600)
    provider = CredentialToken(credential, clock=lambda: credential.now)
    assert await provider.get_token() == "token-1"
    assert await provider.get_token() == "token-1"
    assert credential.scopes == [(SCOPE,)]
    credential.now += 3600 - 301  # just outside the five-minute margin: still fresh
    assert await provider.get_token() == "token-1"
    credential.now += 2  # inside the margin: refreshed before it expires
    assert await provider.get_token() == "token-2"


async def test_one_refresh_in_flight_for_many_callers() -> None:
    credential = CountingCredential(delay=0.05)
    provider = CredentialToken(credential, clock=lambda: credential.now)
    tokens = await asyncio.gather(*(provider.get_token() for _ in range(50)))
    assert set(tokens) == {"token-1"} and credential.calls == 1


async def test_invalidate_forces_a_new_token() -> None:
    credential = CountingCredential()
    provider = CredentialToken(credential, clock=lambda: credential.now)
    await provider.get_token()
    assert provider.invalidate() is True
    assert await provider.get_token() == "token-2"


async def test_client_retries_once_with_a_fresh_token_after_401(make_emulator: Callable) -> None:
    emulator: AgentServiceEmulator = await make_emulator(token="token-2")
    credential = CountingCredential()
    provider = CredentialToken(credential, clock=lambda: credential.now)
    async with AgentsClient(emulator.endpoint, provider) as client:
        assert (await client.get_agent("asst_demo")).id == "asst_demo"
    assert credential.calls == 2


def test_static_token_and_selection() -> None:
    assert isinstance(token_provider("abc"), StaticToken)
    assert isinstance(token_provider(None), CredentialToken)
    assert "abc" not in repr(StaticToken("abc"))
    with pytest.raises(ValueError, match="AGENTS_ACCESS_TOKEN is set but empty"):
        StaticToken("  ")


async def test_tokens_never_reach_the_logs(make_emulator: Callable, caplog: pytest.LogCaptureFixture) -> None:
    from bot.logs import StructuredFormatter

    emulator = await make_emulator()
    secret = "eyJ0eXAiOiJKV1QiLCJhbGciOi.secret-token-value"
    caplog.set_level(logging.DEBUG)
    emulator.fail_next("GET", "/assistants/*", 503, times=1, retry_after=0.01)
    async with AgentsClient(emulator.endpoint, secret) as client:
        await client.get_agent("asst_demo")
        thread = await client.create_thread()
        await client.add_message(thread.id, "hi")
        async with await client.stream_run(thread.id, "asst_demo") as stream:
            await stream.until_done()
    formatter = StructuredFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("agent.retry" in line for line in lines)
    assert any("agent.http" in line and "status=200" in line for line in lines)
    assert not any(secret in line or "secret-token" in line for line in lines)
