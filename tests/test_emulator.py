"""The agent emulator as a product: scripts, paging rules, non-stream runs, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bot.agents.classic.client import AgentsClient
from bot.agents.events import TextDelta
from bot.emulators.agent_script import Script, ScriptError
from bot.emulators.agent_state import split_text as _split
from bot.emulators.agents import AgentServiceEmulator


def test_script_errors_name_the_place_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"turns.0.actions.0.*exactly one of"):
        Script.parse({"turns": [{"actions": [{"text": "a", "sleep": 1}]}]})
    with pytest.raises(ScriptError, match=r"turns.0.actions.0.bogus: Extra inputs"):
        Script.parse({"turns": [{"actions": [{"bogus": 1}]}]})
    with pytest.raises(ScriptError, match=r"reject.0.status"):
        Script.parse({"turns": [{"reject": [{"status": 200}]}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns: [\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="not valid YAML"):
        Script.load(bad)
    with pytest.raises(ScriptError, match="cannot read script"):
        Script.load(tmp_path / "missing.json")


def test_yaml_and_json_scripts_load(tmp_path: Path) -> None:
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("turns:\n  - match: hi\n    actions:\n      - text: hello\n", encoding="utf-8")
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps([{"actions": [{"text": "hello"}]}]), encoding="utf-8")
    assert Script.load(yaml_file).turns[0].match == "hi"
    assert Script.load(json_file).turns[0].actions[0].text == "hello"


def test_split_keeps_every_character() -> None:
    for text in ["", "a", "one two three four five", "no-spaces-at-all-here", "東京😀abc"]:
        for parts in range(1, 8):
            assert "".join(_split(text, parts)) == text


async def test_turns_match_in_order_and_fall_back_to_echo(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {"match": "weather", "actions": [{"text": "sunny"}]},
                {"actions": [{"text": "generic"}]},
            ]
        }
    )
    client: AgentsClient = make_client(emulator)

    async def ask(text: str) -> str:
        thread = await client.create_thread()
        await client.add_message(thread.id, text)
        async with await client.stream_run(thread.id, "asst_demo") as stream:
            return "".join([e.text async for e in stream.events() if isinstance(e, TextDelta)])

    assert await ask("hello") == "generic"
    assert await ask("WEATHER now") == "sunny"
    assert await ask("weather again") == "You said: weather again"  # both turns used up


async def test_paging_rules_match_the_sdk_expectations(
    client: AgentsClient, emulator: AgentServiceEmulator
) -> None:
    thread = await client.create_thread()
    ids = [(await client.add_message(thread.id, str(i))).id for i in range(5)]
    async with httpx.AsyncClient(
        base_url=emulator.endpoint,
        headers={"Authorization": "Bearer t"},
        params={"api-version": "v1"},
    ) as http:
        url = f"/threads/{thread.id}/messages"
        page = (await http.get(url, params={"order": "asc", "limit": 2, "after": ids[3]})).json()
        assert [m["id"] for m in page["data"]] == [ids[4]] and page["has_more"] is False
        empty = (await http.get(url, params={"order": "asc", "after": ids[4]})).json()
        assert empty == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        before = (await http.get(url, params={"order": "asc", "limit": 2, "before": ids[3]})).json()
        assert [m["id"] for m in before["data"]] == [ids[1], ids[2]]
        bad = await http.get(url, params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_non_streaming_run_completes_in_the_background(
    client: AgentsClient, emulator: AgentServiceEmulator
) -> None:
    thread = await client.create_thread()
    await client.add_message(thread.id, "background")
    async with httpx.AsyncClient(
        base_url=emulator.endpoint,
        headers={"Authorization": "Bearer t"},
        params={"api-version": "v1"},
    ) as http:
        run = (await http.post(f"/threads/{thread.id}/runs", json={"assistant_id": "asst_demo"})).json()
    assert run["status"] == "queued" and run["object"] == "thread.run"
    assert (await emulator.wait_run(run["id"]))["status"] == "completed"
    assert (await client.get_run(thread.id, run["id"])).status == "completed"


async def test_submit_outputs_are_checked(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {"turns": [{"actions": [{"tool_calls": [{"name": "a"}, {"name": "b"}]}, {"text": "ok"}]}]}
    )
    client = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "x")
    async with await client.stream_run(thread.id, "asst_demo") as stream:
        events = [e async for e in stream.events()]
    calls = events[-1].tool_calls
    from bot.agents.errors import BadRequestError

    with pytest.raises(BadRequestError, match="missing: "):
        await client.submit_tool_outputs_stream(
            thread.id, stream.run_id or "", [{"tool_call_id": calls[0].id, "output": "1"}]
        )
    outputs = [{"tool_call_id": c.id, "output": "1"} for c in calls]
    async with await client.submit_tool_outputs_stream(thread.id, stream.run_id or "", outputs) as follow:
        await follow.until_done()
    with pytest.raises(BadRequestError, match='status "completed" do not accept tool outputs'):
        await client.submit_tool_outputs_stream(thread.id, stream.run_id or "", outputs)


async def test_cancel_while_waiting_for_tool_outputs(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"tool_calls": [{"name": "a"}]}]}]})
    client = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "x")
    async with await client.stream_run(thread.id, "asst_demo") as stream:
        await stream.until_done()
    await client.cancel_run(thread.id, stream.run_id or "")
    assert (await emulator.wait_run(stream.run_id or ""))["status"] == "cancelled"
    await client.add_message(thread.id, "the thread is free again")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_standalone_command_serves_the_protocol(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("turns:\n  - actions:\n      - text: scripted hello\n", encoding="utf-8")
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "bot.emulators.agents",
            "--port",
            str(port),
            "--script",
            str(script),
            "--token",
            "cli-token",
            "--crlf",
            "--keepalive",
            "0.05",
        ],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.wait_for(process.stdout.readline(), 20)
        endpoint = f"http://127.0.0.1:{port}/api/projects/demo"
        assert endpoint in banner.decode()
        async with AgentsClient(endpoint, "cli-token") as client:
            thread = await client.create_thread()
            await client.add_message(thread.id, "hi")
            async with await client.stream_run(thread.id, "asst_demo") as stream:
                text = "".join([e.text async for e in stream.events() if isinstance(e, TextDelta)])
        assert text == "scripted hello"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


def test_standalone_command_rejects_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text('{"turns": [{"actions": [{"txt": "typo"}]}]}', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bot.emulators.agents", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "turns.0.actions.0.txt" in result.stdout and "Traceback" not in result.stdout + result.stderr


async def test_a_click_on_a_button_that_is_not_on_the_message_is_refused() -> None:
    """Slack sends only actions that are on the message: the emulator will not forge one."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.emulators.slack import SlackEmulator

    async with SlackEmulator() as slack:
        as_bot = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        button = {
            "type": "button",
            "action_id": "stop_run",
            "value": "t1",
            "text": {"type": "plain_text", "text": "Stop"},
        }
        posted = await as_bot.chat_postMessage(
            channel="C0GENERAL", text="working", blocks=[{"type": "actions", "elements": [button]}]
        )
        plain = slack.user_posts("U0ALICE", "C0GENERAL", "no buttons here")
        for ts, action, value in (
            (plain, "stop_run", "t1"),
            (posted["ts"], "stop_run", "t2"),
            (posted["ts"], "other", "t1"),
        ):
            with pytest.raises(ValueError, match="nobody can click it"):
                await slack.click("U0ALICE", "C0GENERAL", ts, action, value)
        await as_bot.chat_update(channel="C0GENERAL", ts=posted["ts"], text="done", blocks=[])
        with pytest.raises(ValueError, match="nobody can click it"):  # taken off by the update
            await slack.click("U0ALICE", "C0GENERAL", posted["ts"], "stop_run", "t1")
