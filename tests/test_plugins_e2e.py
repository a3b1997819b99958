"""Tool plugins end to end: both emulators, the real bot, signed interactivity payloads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.stack import Stack, argument_deltas, eventually, run_bodies, wait_for_prompt

BOT = "<@U0BOT>"


@pytest.fixture(params=["http", "socket"])
def slack_mode(request: pytest.FixtureRequest) -> str:
    """This suite runs with events over HTTP and over Socket Mode."""
    return str(request.param)


ADD = '''
from bot.plugins import tool


@tool
def add_numbers(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
'''
RISKY = '''
from bot.plugins import ToolContext, tool


@tool(confirm=True)
async def restart_service(ctx: ToolContext, service: str) -> str:
    """Restart a production service."""
    return f"{service} restarted for {ctx.user_name}"
'''


@pytest.fixture
def tools_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "add.py").write_text(ADD, encoding="utf-8")
    (folder / "risky.py").write_text(RISKY, encoding="utf-8")
    (folder / "broken.py").write_text("from bot.plugins import tool\nraise RuntimeError('bad config')\n")
    return folder


@pytest.fixture
def plugin_stack(stack_factory: Any, tools_dir: Path) -> Any:
    """The shared stack, with this module's plugin folder."""

    async def make(script: Any = None, **kwargs: Any) -> Stack:
        return await stack_factory(script, tools_dir=str(tools_dir), **kwargs)

    return make


async def test_add_numbers_with_fragmented_arguments(plugin_stack: Any) -> None:
    stack = await plugin_stack(
        {
            "turns": [
                {
                    "actions": [
                        {
                            "tool_calls": [{"name": "add_numbers", "arguments": {"a": 123456, "b": 654321}}],
                            "fragments": 7,
                        },
                        {"text": "The sum is ${output}."},
                    ]
                }
            ]
        }
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} add 123456 and 654321")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "The sum is 777777."
    assert argument_deltas(stack) >= 5  # the arguments really arrived in fragments
    run_tools = run_bodies(stack)[0].get("tools") or []
    if stack.bot.settings.backend == "classic":  # a classic run carries the plugins' tools
        assert {t["function"]["name"] for t in run_tools} == {"add_numbers", "restart_service"}
    else:  # a new agent's tools are its version's, never sent with the request
        assert run_tools == []


def confirm_script() -> dict:
    return {
        "turns": [
            {
                "repeat": True,
                "actions": [
                    {"tool_calls": [{"name": "restart_service", "arguments": {"service": "billing"}}]},
                    {"text": "Result: ${output}"},
                ],
            }
        ]
    }


async def test_confirm_approve(plugin_stack: Any) -> None:
    stack = await plugin_stack(confirm_script())
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} restart billing")
    prompt, key = await wait_for_prompt(stack, "C0GENERAL", ts)
    assert "the agent wants to run *restart_service*" in prompt.text and "billing" in str(prompt.blocks)
    assert await stack.slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
    await stack.settle()
    assert stack.slack.find("C0GENERAL", prompt.ts).text == "<@U0ALICE> approved running *restart_service*."
    assert stack.replies("C0GENERAL", ts)[0].visible_text == "Result: billing restarted for alice"


async def test_confirm_deny_and_a_strangers_click(plugin_stack: Any) -> None:
    stack = await plugin_stack(confirm_script())
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} restart billing")
    prompt, key = await wait_for_prompt(stack, "C0GENERAL", ts)
    assert await stack.slack.click("U0BOB", "C0GENERAL", prompt.ts, "tool_approve", key) == 200

    def refusal() -> list[Any]:
        return [c for c in stack.slack.calls_of("chat.postEphemeral") if c.params.get("user") == "U0BOB"]

    # the click is acked at once and answered in the background
    await eventually(refusal, "Bob's click refused privately")
    assert "Only <@U0ALICE> (or an admin) can answer" in refusal()[0].params["text"]
    assert await stack.slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_deny", key) == 200
    await stack.settle()
    assert (
        stack.replies("C0GENERAL", ts)[0].visible_text
        == "Result: the user declined: restart_service was not run"
    )


async def test_confirm_with_no_answer_declines(plugin_stack: Any) -> None:
    stack = await plugin_stack(confirm_script(), confirm_timeout=0.5)
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} restart billing")
    prompt, _ = await wait_for_prompt(stack, "C0GENERAL", ts)
    await stack.settle()
    assert "No answer in time" in stack.slack.find("C0GENERAL", prompt.ts).text
    assert stack.replies("C0GENERAL", ts)[0].visible_text.endswith(
        "the user declined: restart_service was not run"
    )


async def test_slash_command_lists_and_admins_toggle(plugin_stack: Any) -> None:
    stack = await plugin_stack()
    listing = await stack.slack.slash_command("U0ALICE", "C0GENERAL", "/agent-tools")
    assert listing["status"] == 200
    assert "`add_numbers` on" in listing["text"] and "`restart_service` on (asks first)" in listing["text"]
    assert "broken:" in listing["text"] and "RuntimeError: bad config" not in listing["text"]
    refused = await stack.slack.slash_command("U0ALICE", "C0GENERAL", "/agent-tools", "disable add_numbers")
    assert refused["text"] == "Only admins (BOT_ADMINS) can turn tools on or off."
    stack.slack.add_user("U0ADMIN", "admin", "Ada Admin")
    as_admin = await stack.slack.slash_command("U0ADMIN", "C0GENERAL", "/agent-tools")
    assert "RuntimeError: bad config" in as_admin["text"]
    done = await stack.slack.slash_command("U0ADMIN", "C0GENERAL", "/agent-tools", "disable add_numbers")
    assert done["text"] == "`add_numbers` is now off in this channel."
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hi")
    await stack.settle()
    run_tools = run_bodies(stack)[-1].get("tools") or []
    if stack.bot.settings.backend == "classic":  # the run is offered only the tools still on
        assert [t["function"]["name"] for t in run_tools] == ["restart_service"]
    else:  # a new agent's tools are its version's; a call to a tool turned off is refused when made
        assert run_tools == []
    assert stack.reply_text("C0GENERAL", ts) == "You said: hi"


def test_a_broken_plugin_is_listed_with_its_error(tools_dir: Path) -> None:
    env = {**os.environ, "BOT_TOOLS_DIR": str(tools_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "tools", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert "add_numbers" in result.stdout and "restart_service" in result.stdout
    broken = [line for line in result.stdout.splitlines() if line.startswith("(broken)")]
    assert broken and "RuntimeError: bad config" in broken[0] and "broken.py" in broken[0]
    schema = subprocess.run(
        [sys.executable, "-m", "bot", "tools", "schema", "add_numbers"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert '"required": [\n        "a",\n        "b"\n      ]' in schema.stdout
    called = subprocess.run(
        [sys.executable, "-m", "bot", "tools", "call", "add_numbers", "--json", '{"a": 2, "b": 3}'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert called.returncode == 0 and called.stdout.strip() == "5"


async def test_tools_sync_writes_functions_and_keeps_the_agents_own_tools(tools_dir: Path) -> None:
    from bot.emulators.agents import AgentServiceEmulator

    async with AgentServiceEmulator(
        agent_tools=[{"type": "code_interpreter"}, {"type": "function", "function": {"name": "stale"}}]
    ) as agent:
        env = {
            **os.environ,
            "BOT_TOOLS_DIR": str(tools_dir),
            "PROJECT_ENDPOINT": agent.endpoint,
            "AGENT_ID": "asst_demo",
            "AGENTS_ACCESS_TOKEN": "t",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "tools",
            "sync",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "2 function tool(s) written, 1 other tool(s) kept" in out.decode()
        tools = agent.agents["asst_demo"]["tools"]
        assert tools[0] == {"type": "code_interpreter"}
        assert sorted(t["function"]["name"] for t in tools[1:]) == ["add_numbers", "restart_service"]


async def test_tool_calls_and_admin_actions_are_in_the_audit_trail(plugin_stack: Any) -> None:
    """Who asked, where, which tool, a digest of the arguments (never the arguments), who
    approved, how it ended, how long it took, with the ids an operator searches by; an admin's
    change and a refused one too; `python -m bot audit` reads them back as JSON lines."""
    import json

    from bot.store import AuditQuery
    from bot.store.audit import arguments_digest
    from tests.test_cli import run_cli

    stack = await plugin_stack(confirm_script())
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} restart billing")
    prompt, key = await wait_for_prompt(stack, "C0GENERAL", ts)
    assert await stack.slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
    await stack.settle()
    await stack.slack.slash_command("U0ALICE", "C0GENERAL", "/agent-tools", "disable add_numbers")
    stack.slack.add_user("U0ADMIN", "admin", "Ada Admin")
    await stack.slack.slash_command("U0ADMIN", "C0GENERAL", "/agent-tools", "disable add_numbers")

    async def recorded() -> list[Any]:
        return list(await stack.bot.store.audit_entries(AuditQuery()))

    # over Socket Mode the ack goes out first and the entry is written right after it
    await eventually(lambda: _at_least(recorded, 3), "three audit entries")
    entries = await recorded()
    assert [(e.kind, e.user, e.tool, e.outcome) for e in entries] == [
        ("tool_call", "U0ALICE", "restart_service", "ok"),
        ("tool_setting", "U0ALICE", "add_numbers", "refused: disable by a non-admin"),
        ("tool_setting", "U0ADMIN", "add_numbers", "disabled"),
    ]
    call = entries[0]
    assert (call.team, call.channel, call.thread_ts) == ("T0EMU", "C0GENERAL", ts)
    assert (call.approval, call.approver) == ("approved", "U0ALICE")
    assert call.args_digest == arguments_digest({"service": "billing"}) and "billing" not in json.dumps(
        call.as_dict()
    )
    assert call.duration_ms is not None and call.duration_ms >= 0
    assert {"event_id", "turn", "agent_thread", "run", "call_id"} <= set(call.ids)
    assert call.ids["agent_thread"] and call.ids["run"] and call.ids["event_id"].startswith("Ev")

    by_admin = await stack.bot.store.audit_entries(AuditQuery(user="U0ADMIN"))
    assert [e.outcome for e in by_admin] == ["disabled"]
    assert await stack.bot.store.audit_entries(AuditQuery(since=call.at + 3600)) == []

    exported = await asyncio.to_thread(
        run_cli,
        "audit",
        "--tool",
        "restart_service",
        "--json",
        env={"BOT_STORE_URL": stack.bot.settings.store_url},
    )
    assert exported.returncode == 0, exported.stderr
    [line] = exported.stdout.splitlines()
    assert json.loads(line) == call.as_dict()
    table = await asyncio.to_thread(
        run_cli, "audit", "--since", "1h", env={"BOT_STORE_URL": stack.bot.settings.store_url}
    )
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 4  # a header and three entries
    assert "approved by U0ALICE" in table.stdout
    wrong = await asyncio.to_thread(run_cli, "audit", "--since", "last tuesday")
    assert wrong.returncode == 2 and "is not a time" in wrong.stderr and "Traceback" not in wrong.stderr


async def _at_least(entries: Any, n: int) -> bool:
    return len(await entries()) >= n
