"""New Foundry agents: the official openai client against our emulator, configured the way
``AIProjectClient.get_openai_client(agent_name=...)`` configures it, and our backend."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from openai import AsyncOpenAI

from bot.agents.events import Completed, TextDelta, ToolCallDelta, ToolCallsRequested
from bot.agents.foundry import FoundryBackend
from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator

SCRIPT = Script.parse(
    {
        "delay": 0.001,
        "turns": [
            {
                "match": "weather",
                "repeat": True,
                "actions": [
                    {
                        "tool_calls": [{"name": "get_weather", "arguments": {"location": "Seattle"}}],
                        "fragments": 4,
                    },
                    {"text": "The forecast: ${output}."},
                ],
            }
        ],
    }
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


async def test_the_official_openai_client_streams_and_answers_a_function_call() -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        # what get_openai_client(agent_name=...) builds
        client = AsyncOpenAI(
            base_url=f"{emulator.endpoint}/agents/demo-agent/endpoint/protocols/openai",
            default_query={"api-version": "v1"},
            api_key="token",
        )
        conversation = await client.conversations.create()
        stream = await client.responses.create(conversation=conversation.id, input="hello there", stream=True)
        text, sequence = "", []
        async for event in stream:
            sequence.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                text += event.delta
        assert text == "You said: hello there"
        assert sequence == sorted(sequence) and sequence[0] == 0
        stream = await client.responses.create(
            conversation=conversation.id, input="weather?", tools=[WEATHER], stream=True
        )
        calls = []
        async for event in stream:
            if event.type == "response.output_item.done" and event.item.type == "function_call":
                calls.append(event.item)
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"location": "Seattle"})
        ]
        outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
        stream = await client.responses.create(conversation=conversation.id, input=outputs, stream=True)
        text = ""
        async for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.completed":
                assert event.response.usage.total_tokens > 0
        assert text == "The forecast: sunny."
        # the project-wide form: /openai/v1 with agent_reference in the body
        plain = AsyncOpenAI(base_url=f"{emulator.endpoint}/openai/v1", api_key="token")
        response = await plain.responses.create(
            input="plain", extra_body={"agent_reference": {"name": "demo-agent", "type": "agent_reference"}}
        )
        for _ in range(50):
            response = await plain.responses.retrieve(response.id)
            if response.status == "completed":
                break
            await asyncio.sleep(0.02)
        assert response.output[0].content[0].text == "You said: plain"


async def test_our_backend_maps_the_stream_to_neutral_events() -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        for addressing in ("agent_endpoint", "project"):
            backend = FoundryBackend(emulator.endpoint, "token", "demo-agent", addressing=addressing)
            async with backend:
                thread = await backend.create_thread()
                await backend.add_message(thread.id, "weather please")
                stream = await backend.stream_run(
                    thread.id,
                    "demo-agent",
                    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
                )
                events = [e async for e in stream.events()]
                fragments = [e for e in events if isinstance(e, ToolCallDelta) and e.fragment]
                assert len(fragments) >= 3 and json.loads(fragments[-1].arguments) == {"location": "Seattle"}
                requested = events[-1]
                assert isinstance(requested, ToolCallsRequested)
                follow = await backend.submit_tool_outputs_stream(
                    thread.id,
                    requested.run_id,
                    [{"tool_call_id": requested.tool_calls[0].id, "output": "rain"}],
                )
                events = [e async for e in follow.events()]
                assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The forecast: rain."
                assert (
                    isinstance(events[-1], Completed) and events[-1].usage and events[-1].usage.total_tokens
                )
                run = await backend.get_run(thread.id, follow.run_id or "")
                assert run.status == "completed"
                texts = [m.text async for m in backend.list_messages(thread.id, run_id=follow.run_id)]
                assert texts == ["The forecast: rain."]


async def test_check_and_tools_sync_on_a_foundry_agent(tmp_path: Any) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "add.py").write_text(
        "from bot.plugins import tool\n\n@tool\ndef add_numbers(a: int, b: int) -> int:\n    '''Add.'''\n"
        "    return a + b\n"
    )
    async with AgentServiceEmulator() as emulator:
        emulator.responses_api.agents["demo-agent"][-1]["definition"]["tools"] = [{"type": "file_search"}]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PROJECT_", "AGENT", "BOT_"))
        }
        env.update(
            {
                "PROJECT_ENDPOINT": emulator.endpoint,
                "AGENT_NAME": "demo-agent",
                "AGENTS_ACCESS_TOKEN": "t",
                "BOT_TOOLS_DIR": str(tools),
            }
        )

        async def cli(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                *args,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            return process.returncode or 0, out.decode()

        code, out = await cli("check")
        assert "ok new Foundry agent (Responses API) demo-agent version 1" in out
        code, out = await cli("tools", "sync")
        assert (
            code == 0 and "new version 2" in out and "1 function tool(s) written, 1 other tool(s) kept" in out
        )
        definition = emulator.responses_api.agents["demo-agent"][-1]["definition"]
        assert definition["tools"][0] == {"type": "file_search"}
        assert (
            definition["tools"][1]["name"] == "add_numbers" and definition["tools"][1]["type"] == "function"
        )


async def test_start_up_names_tools_the_agent_version_lacks_or_has_in_another_shape(
    caplog: Any,
) -> None:
    from bot.plugins import Registry, tool
    from bot.plugins.registry import specs_in
    from bot.runtime import warn_on_tool_drift

    @tool
    def add_numbers(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool
    def get_weather(location: str) -> str:
        """Weather."""
        return ""

    registry = Registry()
    for spec in specs_in([add_numbers, get_weather]):
        registry.add(spec, "test")
    async with AgentServiceEmulator() as emulator:
        emulator.responses_api.agents["demo-agent"][-1]["definition"]["tools"] = [WEATHER]
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent") as backend:
            problems = await warn_on_tool_drift(backend, registry)
    assert problems == ["add_numbers (missing)", "get_weather (parameters differ)"]
    warning = next(r for r in caplog.records if r.getMessage() == "tools.out_of_sync")
    assert warning.fields["fix"] == "python -m bot tools sync"
