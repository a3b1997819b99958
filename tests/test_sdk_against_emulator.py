"""The official azure-ai-agents SDK runs its documented streaming flows against our
emulator over a real socket, and gets the same text our client gets. This is the proof
that the emulator speaks the real protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from azure.ai.agents.models import (
    AsyncAgentEventHandler,
    AsyncFunctionTool,
    ListSortOrder,
    MessageDeltaChunk,
    RunStatus,
    ThreadRun,
    ToolOutput,
)

from bot.agents.classic.client import AgentsClient
from bot.agents.classic.handler import FunctionToolSet
from bot.agents.events import TextDelta
from tests.sdk_support import sdk_client

WEATHER_SCRIPT = {
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
                {"text": "The forecast: ${output}. Enjoy!", "deltas": 5},
                {
                    "citation": {
                        "url": "https://weather.example/seattle",
                        "title": "Seattle weather",
                    }
                },
            ],
        }
    ],
}


def get_weather(location: str) -> str:
    """Fetches the weather for a location.

    :param location: The city to look up.
    """
    return json.dumps({"location": location, "weather": "72F, sunny"})


async def our_text(client: AgentsClient, message: str, **kwargs: Any) -> str:
    thread = await client.create_thread()
    await client.add_message(thread.id, message)
    stream = await client.stream_run(thread.id, "asst_demo", **kwargs)
    async with stream:
        return "".join([e.text async for e in stream.events() if isinstance(e, TextDelta)])


async def test_sdk_iteration_gets_the_same_text(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator()
    async with sdk_client(emulator.endpoint) as sdk:
        agent = await sdk.get_agent("asst_demo")
        thread = await sdk.threads.create()
        await sdk.messages.create(thread_id=thread.id, role="user", content="Hello, Grüße 😀")
        names: list[str] = []
        text = ""
        async with await sdk.runs.stream(thread_id=thread.id, agent_id=agent.id) as stream:
            async for event_type, event_data, _ in stream:
                names.append(str(event_type))
                if isinstance(event_data, MessageDeltaChunk):
                    text += event_data.text
                elif isinstance(event_data, ThreadRun):
                    assert event_data.agent_id == "asst_demo"
        assert names[0] == "thread.run.created" and names[-2:] == ["thread.run.completed", "done"]
        messages = [
            m async for m in sdk.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING, limit=1)
        ]
        assert [m.text_messages[-1].text.value for m in messages] == ["Hello, Grüße 😀", text]
    assert text == await our_text(make_client(emulator), "Hello, Grüße 😀") == "You said: Hello, Grüße 😀"


async def test_sdk_event_handler_gets_the_same_text(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(crlf=False, keepalive=None)

    class Handler(AsyncAgentEventHandler[None]):
        def __init__(self) -> None:
            super().__init__()
            self.text = ""
            self.statuses: list[str] = []
            self.steps = 0
            self.dones = 0

        async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
            self.text += delta.text

        async def on_thread_run(self, run: ThreadRun) -> None:
            self.statuses.append(run.status)

        async def on_run_step(self, step: Any) -> None:
            self.steps += 1

        async def on_done(self) -> None:
            self.dones += 1

    handler = Handler()
    async with sdk_client(emulator.endpoint) as sdk:
        thread = await sdk.threads.create()
        await sdk.messages.create(thread_id=thread.id, role="user", content="handler flow")
        async with await sdk.runs.stream(
            thread_id=thread.id, agent_id="asst_demo", event_handler=handler
        ) as s:
            await s.until_done()
    assert handler.text == await our_text(make_client(emulator), "handler flow")
    assert handler.statuses[-1] == RunStatus.COMPLETED and handler.steps >= 2 and handler.dones == 1


async def test_sdk_function_tool_through_submit_tool_outputs_stream(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(WEATHER_SCRIPT)
    functions = AsyncFunctionTool({get_weather})

    class Handler(AsyncAgentEventHandler[None]):
        def __init__(self) -> None:
            super().__init__()
            self.text = ""

        async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
            self.text += delta.text

    async with sdk_client(emulator.endpoint) as sdk:
        thread = await sdk.threads.create()
        await sdk.messages.create(thread_id=thread.id, role="user", content="weather in Seattle?")
        handler = Handler()
        # The documented manual flow: on requires_action, submit outputs with a stream.
        async with await sdk.runs.stream(
            thread_id=thread.id,
            agent_id="asst_demo",
            tools=functions.definitions,
            event_handler=handler,
        ) as stream:
            async for _, event_data, _ in stream:
                if isinstance(event_data, ThreadRun) and event_data.status == "requires_action":
                    calls = event_data.required_action.submit_tool_outputs.tool_calls
                    outputs = [
                        ToolOutput(
                            tool_call_id=c.id,
                            output=get_weather(**json.loads(c.function.arguments)),
                        )
                        for c in calls
                    ]
                    await sdk.runs.submit_tool_outputs_stream(
                        thread_id=thread.id,
                        run_id=event_data.id,
                        tool_outputs=outputs,
                        event_handler=handler,
                    )
        sdk_text = handler.text

        # The SDK's automatic function calls give the same result.
        sdk.enable_auto_function_calls(functions)
        await sdk.messages.create(thread_id=thread.id, role="user", content="weather again")
        auto = Handler()
        async with await sdk.runs.stream(
            thread_id=thread.id,
            agent_id="asst_demo",
            tools=functions.definitions,
            event_handler=auto,
        ) as stream:
            await stream.until_done()
    ours = await our_text(
        make_client(emulator),
        "weather?",
        toolset=FunctionToolSet([get_weather]),
        tools=FunctionToolSet([get_weather]).definitions,
    )
    expected = 'The forecast: {"location": "Seattle", "weather": "72F, sunny"}. Enjoy!【3:0†source】'
    assert sdk_text == auto.text == ours == expected
    # the SDK sent exactly the tool output our toolset sent
    submits = [b for m, p, b in emulator.requests if p.endswith("/submit_tool_outputs")]
    assert len({json.dumps(b["tool_outputs"][0]["output"]) for b in submits}) == 1
