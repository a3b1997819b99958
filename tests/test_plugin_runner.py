"""Running tools: validation, timeouts, exceptions, huge outputs, concurrency, discovery."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.agents.events import ToolCall
from bot.plugins import PluginError, PluginToolRunner, Registry, ToolContext, discover, tool
from bot.plugins.registry import specs_in

CTX = ToolContext(user_id="U1", user_name="alice", team="T1", channel="C1", thread_ts="1.0")


class Point(BaseModel):
    x: int
    y: int


@dataclass
class Stamp:
    at: dt.datetime


@tool
def add_numbers(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(timeout=0.2)
async def hangs() -> str:
    """Never answers in time."""
    await asyncio.sleep(10)
    return "late"


@tool(timeout=0.3)
def blocks() -> str:
    """A blocking call that overruns."""
    time.sleep(1)
    return "late"


@tool
def explodes(reason: str) -> str:
    """Raises."""
    raise KeyError(reason)


@tool
def huge() -> str:
    """A very large output."""
    return "é" * 100_000


@tool
def structured() -> list:
    """Returns models, dataclasses and datetimes."""
    return [Point(x=1, y=2), Stamp(dt.datetime(2026, 1, 2, 3, 4, 5))]


@tool(admin_only=True)
def admin_thing() -> str:
    """For admins."""
    return "done"


@tool
def uses_context(ctx: ToolContext, suffix: str = "!") -> str:
    """Greets the asker."""
    return f"hi {ctx.user_name}{suffix}"


def registry_of(*functions: object) -> Registry:
    registry = Registry()
    for function in functions:
        for spec in specs_in(function):
            registry.add(spec, "test")
    return registry


async def run(runner: PluginToolRunner, name: str, arguments: str, ctx: ToolContext = CTX) -> str:
    outputs = await runner.run([ToolCall("call_1", name, arguments)], ctx)
    return outputs[0]["output"]


@pytest.fixture
def runner() -> PluginToolRunner:
    return PluginToolRunner(
        registry_of(add_numbers, hangs, blocks, explodes, huge, structured, admin_thing, uses_context),
        output_limit=1000,
    )


async def test_valid_call_and_context_injection(runner: PluginToolRunner) -> None:
    assert await run(runner, "add_numbers", '{"a": 2, "b": 40}') == "42"
    assert await run(runner, "uses_context", "{}") == "hi alice!"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": "two", "b": 1}', "a: Input should be a valid integer"),
        ('{"a": 1}', "b: Field required"),
        ('{"a": 1, "b": 2, "c": 3}', "c: Extra inputs are not permitted"),
        ('{"a": 1, ', "Invalid JSON"),
        ("[1, 2]", "Input should be an object"),
    ],
)
async def test_invalid_arguments_are_explained_to_the_agent(
    runner: PluginToolRunner, arguments: str, expected: str
) -> None:
    output = await run(runner, "add_numbers", arguments)
    assert output.startswith("error: invalid arguments for add_numbers: ") and expected in output
    assert output.endswith("Fix them and call it again.")


async def test_timeouts_exceptions_unknown_tools(runner: PluginToolRunner) -> None:
    assert await run(runner, "hangs", "{}") == "error: hangs timed out after 0.2 s"
    assert await run(runner, "blocks", "{}") == "error: blocks timed out after 0.3 s"
    exploded = await run(runner, "explodes", '{"reason": "no key"}')
    assert exploded.startswith("error: explodes failed (KeyError; reference ") and "no key" not in exploded
    assert (await run(runner, "nope", "{}")).startswith(
        "error: there is no tool named 'nope' (available: add_numbers"
    )


async def test_huge_outputs_are_cut_with_a_note(runner: PluginToolRunner) -> None:
    output = await run(runner, "huge", "{}")
    assert len(output.encode()) <= 1000
    assert output.endswith("[output truncated: the first 1000 of 200000 bytes]")
    assert "\ufffd" not in output  # never cut inside a character


async def test_results_are_serialised(runner: PluginToolRunner) -> None:
    assert json.loads(await run(runner, "structured", "{}")) == [
        {"x": 1, "y": 2},
        {"at": "2026-01-02T03:04:05"},
    ]


async def test_admin_only_refuses_politely(runner: PluginToolRunner) -> None:
    assert (await run(runner, "admin_thing", "{}")).startswith(
        "refused: admin_thing is only available to workspace admins"
    )
    admin = ToolContext(
        user_id="U9", user_name="root", team="T1", channel="C1", thread_ts="1.0", is_admin=True
    )
    assert await run(runner, "admin_thing", "{}", admin) == "done"


async def test_calls_of_one_turn_run_concurrently() -> None:
    """Each tool waits until the other two have started: run one after another, none of
    them could see the others (each would give up after 10 s and say so)."""
    started: set[str] = set()

    def others_started(name: str) -> bool:
        return started >= {"a", "b", "c"} - {name}

    @tool
    async def slow_a() -> str:
        """Waits for the others."""
        started.add("a")
        for _ in range(1000):
            if others_started("a"):
                return "a"
            await asyncio.sleep(0.01)
        return "alone"

    @tool
    def slow_b() -> str:
        """Waits for the others, blocking (it runs in a worker thread)."""
        started.add("b")
        for _ in range(1000):
            if others_started("b"):
                return "b"
            time.sleep(0.01)
        return "alone"

    @tool
    async def slow_c() -> str:
        """Waits for the others."""
        started.add("c")
        for _ in range(1000):
            if others_started("c"):
                return "c"
            await asyncio.sleep(0.01)
        return "alone"

    runner = PluginToolRunner(registry_of(slow_a, slow_b, slow_c))
    calls = [ToolCall(f"c{i}", name, "{}") for i, name in enumerate(["slow_a", "slow_b", "slow_c"])]
    outputs = await runner.run(calls, CTX)
    assert [o["output"] for o in outputs] == ["a", "b", "c"]  # all three were running at once


async def test_disabled_tools_are_hidden_and_refused() -> None:
    class Settings:
        async def disabled_tools(self, team: str, channel: str) -> set[str]:
            return {"add_numbers"} if channel == "C1" else set()

    runner = PluginToolRunner(registry_of(add_numbers, uses_context), store=Settings())
    names = [d["function"]["name"] for d in await runner.definitions(CTX)]
    assert names == ["uses_context"]
    assert (await run(runner, "add_numbers", '{"a":1,"b":2}')).startswith(
        "error: the tool add_numbers is turned off"
    )


def test_discovery_lists_broken_plugins_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(
        "from bot.plugins import tool\n\n@tool\ndef ping() -> str:\n    '''Ping.'''\n    return 'pong'\n"
    )
    (tmp_path / "broken.py").write_text("from bot.plugins import tool\n\ndef oops(:\n")
    (tmp_path / "raises.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "_private.py").write_text("raise SystemExit('never imported')\n")
    registry = discover(tmp_path)
    assert list(registry.tools) == ["ping"]
    errors = {Path(b.source).name: b.error for b in registry.broken}
    assert errors["broken.py"].startswith("SyntaxError") and "line 3" in errors["broken.py"]
    assert errors["raises.py"].startswith("ModuleNotFoundError: No module named 'not_a_module_anywhere'")


def test_two_tools_with_one_name_is_a_startup_error(tmp_path: Path) -> None:
    for file in ("one.py", "two.py"):
        (tmp_path / file).write_text(
            "from bot.plugins import tool\n\n@tool(name='same')\n"
            "def f() -> str:\n    '''F.'''\n    return ''\n"
        )
    with pytest.raises(PluginError, match=r"two tools are named 'same': .*one.py:f and .*two.py:f"):
        discover(tmp_path)


def test_the_builtin_plugins_load() -> None:
    registry = discover(Path(__file__).resolve().parent.parent / "tools")
    assert set(registry.tools) == {"current_time", "read_slack_thread", "lookup_slack_user"}
    assert registry.broken == []


async def test_a_tool_posts_in_its_thread_with_mass_mentions_defused() -> None:
    """``ToolContext.post``: the message lands in the conversation's thread over the real
    client; ``<!channel>`` and friends are defused unless the workspace allows them."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.emulators.slack import SlackEmulator
    from bot.plugins.context import ToolContext

    slack = SlackEmulator()
    await slack.start()
    try:
        root = slack.user_posts("U0ALICE", "C0GENERAL", "a question")
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        context = ToolContext("U0ALICE", "alice", "T0EMU", "C0GENERAL", root, slack=client)
        ts = await context.post("<!channel> the build is green")
        [posted] = [m for m in slack.thread("C0GENERAL", root) if m.ts == ts]
        assert "<!channel>" not in posted.text and "the build is green" in posted.text
        loud = ToolContext(
            "U0ALICE", "alice", "T0EMU", "C0GENERAL", root, slack=client, allow_mass_mentions=True
        )
        ts = await loud.post("<!here> deploy now")
        assert [m.text for m in slack.thread("C0GENERAL", root) if m.ts == ts] == ["<!here> deploy now"]
        with pytest.raises(RuntimeError, match="no Slack client"):
            await ToolContext("U0ALICE", "alice", "T0EMU", "C0GENERAL", root).post("hi")
    finally:
        await slack.stop()
