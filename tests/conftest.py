"""Shared fixtures: a real agent service emulator on 127.0.0.1 and our real client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from bot.agents.classic.client import AgentsClient
from bot.agents.retry import RetryPolicy
from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator


def _serialise_ast_parse() -> None:
    """CPython 3.11/3.12 keep the AST builder's recursion counter per interpreter, not per
    thread (python/cpython#106905): two threads in ``ast.parse`` at once (pytest rendering a
    failure while another thread formats a traceback, whose carets use ``ast.parse``) raise
    ``SystemError: AST constructor recursion depth mismatch``, and pytest turns the failure
    it was reporting into an INTERNALERROR that hides it. One lock keeps the report."""
    import ast
    import threading

    parse, lock = ast.parse, threading.RLock()

    def parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return parse(*args, **kwargs)

    ast.parse = parse_one_at_a_time  # type: ignore[assignment]


_serialise_ast_parse()

settings.register_profile(
    "ci", max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

FAST_RETRY = RetryPolicy(within_s=5.0, backoff_base=0.01, backoff_max=0.05)
TOKEN = "test-token-5f0c"


@pytest.fixture
async def make_emulator() -> AsyncIterator[Callable[..., Any]]:
    started: list[AgentServiceEmulator] = []

    async def factory(script: Script | dict | list | None = None, **kwargs: Any) -> AgentServiceEmulator:
        if script is not None and not isinstance(script, Script):
            script = Script.parse(script)
        emulator = AgentServiceEmulator(script, **kwargs)
        await emulator.start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def emulator(make_emulator: Callable[..., Any]) -> AgentServiceEmulator:
    return await make_emulator()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., AgentsClient]]:
    made: list[AgentsClient] = []

    def factory(emulator: AgentServiceEmulator, token: str = TOKEN, **kwargs: Any) -> AgentsClient:
        kwargs.setdefault("retry", FAST_RETRY)
        client = AgentsClient(emulator.endpoint, token, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
def client(emulator: AgentServiceEmulator, make_client: Callable[..., AgentsClient]) -> AgentsClient:
    return make_client(emulator)


@pytest.fixture(params=["classic", "foundry"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every end-to-end test that asks for it runs on both agent backends: classic
    threads/runs and new Foundry agents over the Responses API (one emulator speaks both)."""
    return str(request.param)


@pytest.fixture
def slack_mode() -> str:
    """How Slack reaches the bot: HTTP unless a module runs its tests in both modes (the Slack
    and plugin end-to-end suites do: they override this with ``http`` and ``socket``)."""
    return "http"


@pytest.fixture
def writer() -> str:
    """How replies are written: Slack's native streams (``native``), paced edits (``edit``),
    or ``auto`` in a workspace that refuses streams (it falls back to edits). Edits unless a
    module runs its tests with each writer (the Slack end-to-end suite does)."""
    return "edit"


WRITERS = ["edit", "native", "auto-refused"]


@pytest.fixture
async def stack_factory(
    tmp_path: Path, backend: str, slack_mode: str, writer: str
) -> AsyncIterator[Callable[..., Any]]:
    """The whole product (both emulators and the real bot) on real sockets, on each agent
    backend (and with each writer where a module asks); closed after."""
    from tests.stack import Stack, start_stack

    stacks: list[Stack] = []

    async def make(script: Any = None, **kwargs: Any) -> Stack:
        overrides = {"stream_mode": writer.removesuffix("-refused"), **kwargs.pop("settings_overrides", {})}
        stack = await start_stack(
            script,
            tmp_path=tmp_path,
            **{"backend": backend, "mode": slack_mode, "settings_overrides": overrides, **kwargs},
        )
        if writer == "auto-refused":  # the workspace has no native streaming (refused at the first try)
            stack.slack.refuse_native_streaming(stack.slack.team_id, "not_allowed_token_type")
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()
