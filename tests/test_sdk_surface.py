"""Our client's SDK-shaped surface: handler callbacks, (event_type, event_data)
iteration, the run id on the stream and automatic function calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from bot.agents.classic.client import AgentsClient
from bot.agents.classic.handler import AgentEventHandler, FunctionToolSet
from bot.agents.classic.models import (
    MessageDeltaChunk,
    RunStep,
    RunStepDeltaChunk,
    ThreadMessage,
    ThreadRun,
)
from bot.agents.events import ToolCall
from tests.test_sdk_against_emulator import WEATHER_SCRIPT, get_weather


class Recorder(AgentEventHandler):
    def __init__(self) -> None:
        self.text = ""
        self.runs: list[str] = []
        self.messages: list[str] = []
        self.steps: list[str] = []
        self.step_deltas = 0
        self.errors: list[str] = []
        self.dones = 0
        self.unhandled: list[str] = []

    async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
        self.text += delta.text

    async def on_thread_message(self, message: ThreadMessage) -> None:
        self.messages.append(message.status or "")

    async def on_thread_run(self, run: ThreadRun) -> None:
        self.runs.append(run.status)

    async def on_run_step(self, step: RunStep) -> None:
        self.steps.append(f"{step.type}:{step.status}")

    async def on_run_step_delta(self, delta: RunStepDeltaChunk) -> None:
        self.step_deltas += 1

    async def on_error(self, data: str) -> None:
        self.errors.append(data)

    async def on_done(self) -> None:
        self.dones += 1

    async def on_unhandled_event(self, event_type: str, event_data: Any) -> None:
        self.unhandled.append(event_type)


async def test_iteration_gives_sdk_tuples_and_the_run_id(client: AgentsClient) -> None:
    thread = await client.create_thread()
    await client.add_message(thread.id, "tuples")
    stream = await client.stream_run(thread.id, "asst_demo")
    text = ""
    async with stream:
        async for event_type, event_data in stream:
            if isinstance(event_data, MessageDeltaChunk):
                text += event_data.text
            if event_type == "thread.run.created":
                assert isinstance(event_data, ThreadRun) and event_data.agent_id == "asst_demo"
                assert stream.run_id == event_data.id
    assert text == "You said: tuples" and event_type == "done" and event_data == "[DONE]"


async def test_handler_callbacks_fire_like_the_sdk(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {"error_event": {"code": "warn", "message": "soft"}},
                        {"raw": 'event: thread.future\ndata: {"x":1}\n\n'},
                        {"text": "hello"},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "x")
    recorder = Recorder()
    async with await client.stream_run(thread.id, "asst_demo", event_handler=recorder) as stream:
        await stream.until_done()
    assert recorder.text == "hello"
    assert recorder.runs == ["queued", "queued", "in_progress", "completed"]
    assert recorder.messages == ["in_progress", "in_progress", "completed"]
    assert (
        recorder.steps[0] == "message_creation:in_progress"
        and recorder.steps[-1] == "message_creation:completed"
    )
    assert json.loads(recorder.errors[0]) == {"error": {"code": "warn", "message": "soft"}}
    assert recorder.unhandled == ["thread.future"] and recorder.dones == 1


async def test_a_failing_callback_does_not_break_the_stream(client: AgentsClient) -> None:
    class Broken(AgentEventHandler):
        async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
            raise RuntimeError("handler bug")

    thread = await client.create_thread()
    await client.add_message(thread.id, "robust")
    async with await client.stream_run(thread.id, "asst_demo", event_handler=Broken()) as stream:
        names = [name async for name, _ in stream]
    assert names[-1] == "done"


async def test_automatic_function_calls_continue_the_stream(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(WEATHER_SCRIPT)
    client = make_client(emulator)
    toolset = FunctionToolSet([get_weather])
    thread = await client.create_thread()
    await client.add_message(thread.id, "weather in Seattle")
    recorder = Recorder()
    stream = await client.stream_run(
        thread.id, "asst_demo", event_handler=recorder, toolset=toolset, tools=toolset.definitions
    )
    async with stream:
        await stream.until_done()
    assert recorder.text.startswith('The forecast: {"location": "Seattle", "weather": "72F, sunny"}')
    assert recorder.dones == 2  # once per HTTP response, as in the SDK
    assert recorder.step_deltas >= 4 and "tool_calls:completed" in recorder.steps
    assert stream.status == "completed" and stream.run_id
    run_tools = next(b for m, p, b in emulator.requests if p.endswith("/runs"))["tools"]
    assert run_tools[0]["function"]["name"] == "get_weather"
    assert run_tools[0]["function"]["parameters"]["required"] == ["location"]
    assert run_tools[0]["function"]["description"] == "Fetches the weather for a location."


async def test_toolset_turns_failures_into_outputs() -> None:
    def boom(x: int) -> str:
        raise ValueError("bad x")

    async def slow_ok(x: int) -> dict:
        await asyncio.sleep(0.01)
        return {"x": x}

    toolset = FunctionToolSet([boom, slow_ok])
    outputs = await toolset.execute(
        [
            ToolCall("c1", "boom", '{"x": 1}'),
            ToolCall("c2", "slow_ok", '{"x": 2}'),
            ToolCall("c3", "missing", "{}"),
            ToolCall("c4", "slow_ok", "{not json"),
            ToolCall("c5", "slow_ok", "[1]"),
        ]
    )
    assert outputs[0] == {"tool_call_id": "c1", "output": "error: ValueError: bad x"}
    assert outputs[1] == {"tool_call_id": "c2", "output": '{"x": 2}'}
    assert outputs[2]["output"].startswith("error: no function named 'missing'; available: boom, slow_ok")
    assert outputs[3]["output"].startswith("error: invalid arguments for slow_ok")
    assert outputs[4]["output"] == "error: invalid arguments for slow_ok: arguments must be a JSON object"


async def test_tool_rounds_are_bounded(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [{"tool_calls": [{"name": "get_weather", "arguments": {"location": "x"}}]}] * 4
                    + [{"text": "never"}]
                }
            ]
        }
    )
    client = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "loop")
    stream = await client.stream_run(
        thread.id, "asst_demo", toolset=FunctionToolSet([get_weather]), max_tool_rounds=2
    )
    events = [e async for e in stream.events()]
    assert type(events[-1]).__name__ == "Cancelled"
    # exactly two rounds of tool outputs went back; the third request for tools was refused
    submitted = [p for m, p, _ in emulator.requests if m == "POST" and p.endswith("/submit_tool_outputs")]
    assert len(submitted) == 2
    [run] = emulator.runs.values()
    assert run.status in ("cancelling", "cancelled")
