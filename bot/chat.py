"""A terminal conversation with the agent: the quickest way to see the agent side work.

With ``PROJECT_ENDPOINT`` and ``AGENT_ID`` it talks to the real service; with neither it
starts the agent service emulator in-process, so a newcomer sees a streamed answer (and a
function call) before configuring anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import TextIO

from .agents import AgentBackend, AgentServiceError, FunctionTool, ToolOutput, function_tool, make_backend
from .agents.events import (
    Cancelled,
    Expired,
    Failed,
    Incomplete,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallsRequested,
)
from .emulators.agents import AgentServiceEmulator
from .plugins.tool import make_spec
from .settings import Settings


def current_time(timezone: str = "UTC") -> str:
    """The current date and time (ISO 8601) in UTC or a fixed offset like +02:00."""
    zone = dt.UTC
    if timezone not in ("UTC", "Z"):
        sign = -1 if timezone.startswith("-") else 1
        hours, _, minutes = timezone.lstrip("+-").partition(":")
        zone = dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes or 0)))
    return dt.datetime.now(zone).isoformat(timespec="seconds")


LOCAL_TOOLS = {"current_time": current_time}


def _run_local(call: ToolCall) -> ToolOutput:
    function = LOCAL_TOOLS.get(call.name)
    if function is None:
        return ToolOutput(call.id, f"error: no tool named {call.name!r}")
    try:
        return ToolOutput(call.id, str(function(**json.loads(call.arguments or "{}"))))
    except Exception as exc:  # the agent gets the error, the chat goes on
        return ToolOutput(call.id, f"error: {type(exc).__name__}: {exc}")


async def _turn(
    backend: AgentBackend, conversation: str, tools: list[FunctionTool], text: str, out: TextIO
) -> None:
    """One exchange; function calls run here, on either backend."""
    await backend.add_message(conversation, text)
    stream = await backend.start_run(conversation, tools=tools)
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
            outputs = [_run_local(call) for call in requested.tool_calls]
            stream = await backend.submit_tool_outputs(conversation, requested.run_id, outputs)
    out.write("\n")


async def chat(settings: Settings, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    emulator: AgentServiceEmulator | None = None
    if settings.has_agent:
        out.write(f"Talking to agent {settings.agent_ref} at {settings.project_endpoint}\n")
    else:
        emulator = AgentServiceEmulator()
        endpoint = await emulator.start()
        settings = Settings(PROJECT_ENDPOINT=endpoint, AGENT_ID="asst_demo", AGENTS_ACCESS_TOKEN="playground")
        out.write(
            "Demo on an emulated agent service (no PROJECT_ENDPOINT/AGENT_ID set).\n"
            "Try: hello, or: what is current_time\n"
        )
    backend = make_backend(settings)
    tools = [function_tool(make_spec(f).definition()) for f in LOCAL_TOOLS.values()]
    try:
        conversation = await backend.create_conversation()
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
                await _turn(backend, conversation, tools, text, out)
            except AgentServiceError as exc:
                out.write(f"\n[error: {exc}]\n")
                await backend.abandon(conversation, None, "the request failed")
    except AgentServiceError as exc:
        out.write(f"error: {exc}\n")
        return 1
    finally:
        await backend.aclose()
        if emulator is not None:
            await emulator.stop()
