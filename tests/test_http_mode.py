"""The bot as an operator runs it: `python -m bot run --mode http --port P` in its own
process, Slack's signed requests over a socket, `GET /healthz`, `python -m bot check`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.devstack.processes import start_bot
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator
from tests.stack import eventually


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def running(tmp_path: Path, backend: str) -> AsyncIterator[dict[str, Any]]:
    agent = AgentServiceEmulator()
    await agent.start()
    slack = SlackEmulator()
    await slack.start()
    bot = await start_bot(
        agent,
        slack,
        f"sqlite:///{tmp_path}/bot.db",
        str(tmp_path / "bot.log"),
        backend=backend,
        BOT_LOG_LEVEL="DEBUG",
        AGENTS_ACCESS_TOKEN="tok-agent-123",
    )
    slack.events_url = bot.events_url
    env = {
        **os.environ,
        "PROJECT_ENDPOINT": agent.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "tok-agent-123",
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "BOT_STORE_URL": f"sqlite:///{tmp_path}/check.db",
        **({"AGENT_BACKEND": "foundry", "AGENT_NAME": "demo-agent"} if backend == "foundry" else {}),
    }
    yield {"agent": agent, "slack": slack, "url": bot.url, "process": bot.process, "env": env, "bot": bot}
    bot.terminate()
    assert await bot.wait(30) == 0
    running_logs = bot.logs()
    # nothing secret ever reached the logs (DEBUG level, a whole turn in the mention test)
    for secret in (slack.bot_token, slack.signing_secret, "tok-agent-123"):
        assert secret not in running_logs
    await slack.stop()
    await agent.stop()


async def test_a_mention_is_answered_by_the_running_process(running: dict[str, Any]) -> None:
    slack: SlackEmulator = running["slack"]
    ts = slack.user_posts("U0ALICE", "C0GENERAL", "<@U0BOT> hello over HTTP")
    await eventually(
        lambda: [m.visible_text for m in slack.bot_replies("C0GENERAL", ts)] == ["You said: hello over HTTP"],
        "the answer over HTTP",
    )
    assert slack.bot_replies("C0GENERAL", ts)[0].visible_text == "You said: hello over HTTP"
    assert all(d["ms"] < 3000 for d in slack.deliveries)  # acked well inside Slack's 3 s
    # turn.end is logged just after the final edit lands
    await eventually(lambda: "turn.end" in running["bot"].logs(), "turn.end logged")
    logs = running["bot"].logs()
    assert "turn.received" in logs and "turn.end" in logs and "agent.http" in logs  # a whole turn, at DEBUG


@pytest.mark.parametrize("case", ["missing", "wrong", "stale", "replayed_body"])
async def test_unsigned_forged_and_stale_requests_are_refused(running: dict[str, Any], case: str) -> None:
    slack: SlackEmulator = running["slack"]
    envelope = slack.event_envelope(
        {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": "<@U0BOT> sneaky",
            "ts": "1.000001",
            "channel": "C0GENERAL",
            "team": "T0EMU",
        }
    )
    body = json.dumps(envelope).encode()
    headers = {"Content-Type": "application/json"}
    if case == "wrong":
        headers.update(SlackEmulator(signing_secret="not-the-secret").sign(body))
    elif case == "stale":
        headers.update(slack.sign(body, timestamp=int(time.time()) - 6 * 60))
    elif case == "replayed_body":  # a valid signature, for another body
        headers.update(slack.sign(b'{"type":"event_callback"}'))
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{running['url']}/slack/events", content=body, headers=headers)
    assert response.status_code == 401
    # a genuine mention after it is answered, and is the only thing that ever was
    ts = slack.user_posts("U0ALICE", "C0GENERAL", "<@U0BOT> genuine")
    await eventually(
        lambda: any(m.visible_text == "You said: genuine" for m in slack.bot_replies("C0GENERAL", ts)),
        "the genuine mention answered",
    )
    assert [m.visible_text for m in slack.bot_replies("C0GENERAL", ts)] == ["You said: genuine"]
    assert len(slack.calls_of("chat.postMessage")) == 1


async def test_check_reaches_slack_and_the_agent(running: dict[str, Any]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check",
        env=running["env"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    text = out.decode()
    assert "ok Slack workspace Emulated as bot user agentbot" in text
    if "AGENT_BACKEND" not in running["env"]:
        assert process.returncode == 0, text
        assert "ok classic agent (threads/runs) asst_demo" in text
    else:  # a new agent's tools are its version's: check says which are missing and how to fix it
        assert process.returncode == 1, text
        assert "ok new Foundry agent (Responses API) demo-agent v1" in text
        assert "lacks the bot's tools" in text and "python -m bot tools sync" in text
