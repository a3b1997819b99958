"""The whole product on real sockets: agent emulator, Slack emulator and the real bot
(Bolt in HTTP mode, the real slack_sdk client, our agent client), wired as in production."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import Message, SlackEmulator
from bot.runtime import Bot, build_bot
from bot.settings import Settings
from bot.slack.app import http_app
from bot.slack.pacing import Budgets


@dataclass
class Stack:
    agent: AgentServiceEmulator
    slack: SlackEmulator
    bot: Bot
    runner: web.AppRunner
    url: str

    async def settle(self, within_s: float = 30.0) -> None:
        """Wait until every delivered event's turn has finished."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await self.slack.drain()
            if not self.bot.surface.tasks:
                await asyncio.sleep(0.05)
                if not self.bot.surface.tasks and not self.slack._delivery_tasks:
                    return
            else:
                await asyncio.wait(
                    list(self.bot.surface.tasks), timeout=deadline - time.monotonic()
                )
        raise TimeoutError("turns did not finish")

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        return self.slack.bot_replies(channel, thread_ts)

    def reply_text(self, channel: str, thread_ts: str) -> str:
        return "".join(m.visible_text for m in self.replies(channel, thread_ts))

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.bot.aclose()
        await self.slack.stop()
        await self.agent.stop()


async def start_stack(
    script: Script | dict[str, Any] | None = None,
    *,
    tmp_path: Any,
    slack_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    budgets: Budgets | None = None,
    tools: Any = None,
) -> Stack:
    if script is not None and not isinstance(script, Script):
        script = Script.parse(script)
    agent = AgentServiceEmulator(script, **(agent_kwargs or {}))
    await agent.start()
    slack = SlackEmulator(**(slack_kwargs or {}))
    await slack.start()
    settings = Settings(
        PROJECT_ENDPOINT=agent.endpoint,
        AGENT_ID="asst_demo",
        AGENTS_ACCESS_TOKEN="stack-token",
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=slack.signing_secret,
        SLACK_API_URL=slack.api_url,
        BOT_STORE_URL=f"sqlite:///{tmp_path}/bot.db",
        BOT_ADMINS="U0ADMIN",
        _env_file=None,
    )
    bot = await build_bot(settings, budgets=budgets, tools=tools)
    runner = web.AppRunner(http_app(bot.bolt, bot.ready), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    bot.ready.set()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    slack.events_url = f"{url}/slack/events"
    return Stack(agent, slack, bot, runner, url)
