"""The command line as an operator meets it: `run`, `chat`, `check`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from bot.emulators.agents import AgentServiceEmulator


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PROJECT_", "AGENT", "BOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=os.getcwd(),
    )


def test_chat_with_no_settings_is_a_demo_on_the_emulator() -> None:
    result = run_cli("chat", stdin="hello bot\nwhat is current_time\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Demo on an emulated agent service" in result.stdout
    assert "agent> You said: hello bot" in result.stdout
    assert "[calling current_time] `current_time` returned: 20" in result.stdout


def test_run_in_slack_mode_without_settings_says_what_is_missing() -> None:
    result = run_cli("run", "--mode", "http", env={"SLACK_BOT_TOKEN": "xoxb-1-2-secret"})
    assert result.returncode == 2
    assert "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET" in result.stderr
    assert "xoxb-1-2-secret" not in result.stderr + result.stdout and "Traceback" not in result.stderr


async def test_chat_and_check_against_a_configured_agent(make_emulator: Callable) -> None:
    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    env = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    import asyncio

    result = await asyncio.to_thread(run_cli, "chat", stdin="configured\n", env=env)
    assert result.returncode == 0, result.stderr
    assert "Talking to agent asst_demo" in result.stdout and "You said: configured" in result.stdout
    check = await asyncio.to_thread(run_cli, "check", env=env)
    assert (
        check.returncode == 1
        and "ok classic agent (threads/runs) asst_demo (model gpt-4o-emulated)" in check.stdout
    )
    assert "x SLACK_BOT_TOKEN is not set" in check.stdout
    wrong = await asyncio.to_thread(run_cli, "check", env={**env, "AGENTS_ACCESS_TOKEN": "nope"})
    assert wrong.returncode == 1 and "authentication failed" in wrong.stdout and "fix:" in wrong.stdout
    missing = await asyncio.to_thread(run_cli, "check", env={**env, "AGENT_ID": "asst_gone"})
    assert missing.returncode == 1 and "No assistant found with id 'asst_gone'" in missing.stdout


def test_check_without_endpoint_says_what_to_set() -> None:
    result = run_cli("check")
    assert result.returncode == 1 and "PROJECT_ENDPOINT is not set" in result.stdout


def test_invalid_setting_is_a_clear_error() -> None:
    result = run_cli("check", env={"AGENTS_STREAM_IDLE_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "AGENTS_STREAM_IDLE_TIMEOUT" in result.stderr and "Traceback" not in result.stderr
