"""The real bot in its own process (`python -m bot run --mode http` on a free port), wired
to the emulators: for the service tests and the benchmarks, where the bot must not share
a core with the emulators that stand in for Slack and Azure."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    url: str  # where /healthz answers (HTTP mode: the Slack port; Socket Mode: the ops port)
    log_path: str
    public_url: str = ""  # the Slack port: /slack/events, and /slack/install when installed by OAuth

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    def kill(self) -> None:
        """A crash: no chance to clean up."""
        self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, within_s: float = 30) -> int:
        return await asyncio.wait_for(self.process.wait(), within_s)

    def logs(self) -> str:
        return Path(self.log_path).read_text(encoding="utf-8", errors="replace")


async def start_bot(
    agent: AgentServiceEmulator,
    slack: SlackEmulator,
    store_url: str,
    log_path: str,
    *,
    backend: str = "classic",
    mode: str = "http",
    **extra_env: str,
) -> BotProcess:
    """The bot on ``backend`` ("classic" threads/runs, or "foundry": new agents over the
    Responses API, which the same agent emulator answers as agent ``demo-agent``), in HTTP
    mode or, with ``mode="socket"``, in Socket Mode (its /healthz then on the ops port)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PROJECT_", "AGENT", "BOT_"))}
    env.update(
        {
            "PROJECT_ENDPOINT": agent.endpoint,
            "AGENT_ID": "asst_demo",
            "AGENTS_ACCESS_TOKEN": "tok-agent",
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
            "SLACK_API_URL": slack.api_url,
            "BOT_STORE_URL": store_url,
            "BOT_TOOLS_DIR": "",
            "BOT_HEARTBEAT_TTL": "2",
            "BOT_USER_RUNS_PER_MINUTE": "1000",
            "BOT_CHANNEL_RUNS_PER_MINUTE": "1000",
            **({"AGENT_BACKEND": "foundry", "AGENT_NAME": "demo-agent"} if backend == "foundry" else {}),
            **extra_env,
        }
    )
    if mode == "socket":
        env.update({"SLACK_APP_TOKEN": slack.app_token, "BOT_METRICS_PORT": str(port)})
        slack.socket_mode = True
        public = free_port()  # installs come back over HTTP even in Socket Mode
        where = ["--mode", "socket", "--host", "127.0.0.1", "--port", str(public)]
    else:
        public = port
        where = ["--mode", "http", "--host", "127.0.0.1", "--port", str(port)]
    log_file = Path(log_path).open("ab")  # noqa: ASYNC230 (a local file, opened once)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        *where,
        env=env,
        stdout=log_file,
        stderr=log_file,
    )
    log_file.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return BotProcess(process, url, log_path, f"http://127.0.0.1:{public}")
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.returncode is not None:
                tail = Path(log_path).read_text()[-2000:]  # noqa: ASYNC240 (failing anyway)
                raise RuntimeError(f"the bot did not start: {tail}")
            await asyncio.sleep(0.1)
