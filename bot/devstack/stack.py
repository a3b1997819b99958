"""Both emulators and the real bot, wired as in production, in one process.

The tests, the benchmarks and the playground use it: the real Bolt app in HTTP mode on a
real socket, the real slack_sdk client against the Slack emulator, our agent client
against the agent service emulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..emulators.agent_script import Script
from ..emulators.agents import AgentServiceEmulator
from ..emulators.slack import Message, SlackEmulator
from ..runtime import SOCKET_PING_INTERVAL_S, Bot, build_bot
from ..settings import Settings
from ..slack.app import http_app, ops_app
from ..slack.pacing import Budgets
from ..turns import ToolRunner


@dataclass
class EmulatedStack:
    agent: AgentServiceEmulator
    slack: SlackEmulator
    bot: Bot
    runner: web.AppRunner
    url: str  # the public Slack port
    ops: web.AppRunner
    ops_url: str  # /metrics and /healthz
    owns_emulators: bool = True
    socket: Any = None  # the Socket Mode handler, when events come over Socket Mode

    @property
    def mode(self) -> str:
        return "http" if self.socket is None else "socket"

    async def settle(self, within_s: float = 30.0) -> None:
        """Wait until every delivered event's turn has finished."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await self.slack.drain()
            tasks = list(self.bot.surface.tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
                continue
            await asyncio.sleep(0.05)
            if not self.bot.surface.tasks and not self.slack.delivering:
                return
        raise TimeoutError("turns did not finish in time")

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        return self.slack.bot_replies(channel, thread_ts)

    def reply_text(self, channel: str, thread_ts: str) -> str:
        return "".join(m.visible_text for m in self.replies(channel, thread_ts))

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close_async()
        await self.runner.cleanup()
        await self.ops.cleanup()
        await self.bot.aclose()
        if self.owns_emulators:
            await self.slack.stop()
            await self.agent.stop()


async def start_stack(
    script: Script | dict[str, Any] | None = None,
    *,
    store_url: str = "sqlite://:memory:",
    slack_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    budgets: Budgets | None = None,
    tools: ToolRunner | None = None,
    admins: str = "",
    tools_dir: str = "",
    confirm_timeout: float = 120.0,
    extra_tools: Sequence[Callable[..., Any]] = (),
    agent: AgentServiceEmulator | None = None,
    slack: SlackEmulator | None = None,
    settings_overrides: dict[str, Any] | None = None,
    backend: str = "classic",
    mode: str = "http",
) -> EmulatedStack:
    """The bot on emulated services; pass ``agent`` and ``slack`` to run a second replica on the
    same emulators (it then shares them: closing it leaves them running). ``mode="socket"``:
    events, interactions and slash commands come over Socket Mode (the public Slack port
    stays up for the tests of the HTTP surface)."""
    if script is not None and not isinstance(script, Script):
        script = Script.parse(script)
    if agent is None:
        agent = AgentServiceEmulator(script, **(agent_kwargs or {}))
    if not agent.base_url:
        await agent.start()
    shared = slack is not None
    if slack is None:
        slack = SlackEmulator(**(slack_kwargs or {}))
    if not slack.base_url:
        await slack.start()
    settings = Settings(
        PROJECT_ENDPOINT=agent.endpoint,
        AGENT_ID="asst_demo",
        AGENTS_ACCESS_TOKEN="emulated",
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=slack.signing_secret,
        SLACK_API_URL=slack.api_url,
        BOT_STORE_URL=store_url,
        BOT_ADMINS=admins,
        BOT_TOOLS_DIR=tools_dir,
        BOT_CONFIRM_TIMEOUT=confirm_timeout,
        _env_file=None,  # type: ignore[call-arg]
    )
    if backend == "foundry":  # the same emulator, answering as a new Foundry agent
        settings = settings.model_copy(update={"agent_backend": "foundry", "agent_name": "demo-agent"})
    if settings_overrides:
        settings = settings.model_copy(update=settings_overrides)
    bot = await build_bot(settings, budgets=budgets, tools=tools, extra_tools=extra_tools)
    app = http_app(
        bot.bolt, bot.ready, signing_secret=settings.secret("slack_signing_secret"), draining=bot.draining
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    ops = web.AppRunner(ops_app(bot.ready, draining=bot.draining, metrics=bot.orchestrator.metrics))
    await ops.setup()
    await web.TCPSite(ops, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    socket = None
    if mode == "socket":
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        slack.socket_mode = True
        socket = AsyncSocketModeHandler(bot.bolt, slack.app_token, ping_interval=SOCKET_PING_INTERVAL_S)
        await socket.connect_async()
    else:
        slack.events_url = f"{url}/slack/events"
    bot.ready.set()
    return EmulatedStack(
        agent,
        slack,
        bot,
        runner,
        url,
        ops,
        f"http://127.0.0.1:{ops.addresses[0][1]}",
        owns_emulators=not shared,
        socket=socket,
    )
