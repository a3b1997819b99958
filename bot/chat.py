"""A terminal conversation with the agent: the quickest way to see the agent side work.

With ``PROJECT_ENDPOINT`` and ``AGENT_ID`` it talks to the real service; with neither it
starts the agent service emulator in-process, so a newcomer sees a streamed answer (and a
function call) before configuring anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any, TextIO

from .agents import make_backend
from .agents.azure import AgentsClient
from .agents.errors import AgentServiceError
from .agents.events import (
    Cancelled,
    Expired,
    Failed,
    Incomplete,
    StreamError,
    TextDelta,
    ToolCallsRequested,
)
from .agents.handler import FunctionToolSet
from .emulators.agents import AgentServiceEmulator
from .settings import Settings


def current_time(timezone: str = "UTC") -> str:
    """The current date and time (ISO 8601) in UTC or a fixed offset like +02:00."""
    zone = dt.UTC
    if timezone not in ("UTC", "Z"):
        sign = -1 if timezone.startswith("-") else 1
        hours, _, minutes = timezone.lstrip("+-").partition(":")
        zone = dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes or 0)))
    return dt.datetime.now(zone).isoformat(timespec="seconds")


async def _turn(
    client: Any,
    thread_id: str,
    agent_id: str,
    tools: FunctionToolSet,
    tool_defs: list[dict],
    text: str,
    out: TextIO,
) -> None:
    """One exchange; function calls run here, on either backend."""
    await client.add_message(thread_id, text)
    stream = await client.stream_run(thread_id, agent_id, tools=tool_defs)
    out.write("agent> ")
    while stream is not None:
        requested: ToolCallsRequested | None = None
        async with stream:
            async for event in stream.events():
                if isinstance(event, TextDelta):
                    out.write(event.text)
                    out.flush()
                elif isinstance(event, ToolCallsRequested):
                    requested = event
                    out.write(f"[calling {', '.join(call.name for call in event.tool_calls)}] ")
                elif isinstance(event, Failed):
                    out.write(f"\n[the run failed: {event.message} ({event.code})]")
                elif isinstance(event, Incomplete):
                    out.write(f"\n[the answer is incomplete: {event.reason}]")
                elif isinstance(event, (Cancelled, Expired)):
                    out.write(f"\n[the run was {type(event).__name__.lower()}]")
                elif isinstance(event, StreamError):
                    out.write(f"\n[the agent service reported an error: {event.message}]")
        stream = None
        if requested is not None:
            outputs = await tools.execute(requested.tool_calls)
            stream = await client.submit_tool_outputs_stream(thread_id, requested.run_id, outputs)
    out.write("\n")


async def chat(settings: Settings, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    emulator: AgentServiceEmulator | None = None
    if settings.has_agent:
        client = make_backend(settings)
        agent_id = settings.agent_ref or ""
        out.write(f"Talking to agent {agent_id} at {settings.project_endpoint}\n")
    else:
        emulator = AgentServiceEmulator()
        endpoint = await emulator.start()
        client = AgentsClient(endpoint, "playground")
        agent_id = "asst_demo"
        out.write(
            "Demo on an emulated agent service (no PROJECT_ENDPOINT/AGENT_ID set).\n"
            "Try: hello, or: what is current_time\n"
        )
    tools = FunctionToolSet([current_time])
    try:
        agent = await client.get_agent(agent_id)
        tool_defs = agent.non_function_tools() + tools.definitions
        thread = await client.create_thread()
        while True:
            out.write("you> ")
            out.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                out.write("\n")
                return 0
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return 0
            try:
                await _turn(client, thread.id, agent_id, tools, tool_defs, text, out)
            except AgentServiceError as exc:
                out.write(f"\n[error: {exc}]\n")
    except AgentServiceError as exc:
        out.write(f"error: {exc}\n")
        return 1
    finally:
        await client.aclose()
        if emulator is not None:
            await emulator.stop()
