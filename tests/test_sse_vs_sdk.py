"""Differential test: our decoder against the stream parser of azure-ai-agents 1.1.0.

Where the SDK is right (LF framing, one ``data:`` line per event, the service's normal
output) both give the same events. Where it is wrong (DESIGN.md section 2) each case is
named and shows the SDK's failure next to our correct result.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiohttp import web
from azure.ai.agents.models import MessageDeltaChunk
from azure.ai.agents.models._patch import (
    BaseAgentEventHandler,
    BaseAsyncAgentEventHandler,
    _parse_event,
)

from bot.agents.classic.client import AgentsClient
from bot.agents.events import TextDelta
from bot.agents.sse import ServerSentEvent, SSEDecoder
from bot.emulators.recording import REALISTIC_SCRIPT, record_run
from tests.stack import eventually


class _SdkAsyncParser(BaseAsyncAgentEventHandler[Any]):
    async def _process_event(self, event_data_str: str) -> tuple[str, Any]:
        return _parse_event(event_data_str)


async def _no_submit(*args: Any) -> None:
    return None


class _SdkParser(BaseAgentEventHandler[Any]):
    """The SDK's own framing (``__next_impl__``) and event parsing (``_parse_event``)."""

    def _process_event(self, event_data_str: str) -> tuple[str, Any]:
        return _parse_event(event_data_str)


def sdk_events(chunks: list[bytes]) -> list[tuple[str, Any]]:
    parser = _SdkParser()
    parser.initialize(iter(chunks), lambda *args: None)
    return list(parser)


def our_events(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close()


def as_sdk(events: list[ServerSentEvent]) -> list[tuple[str, Any]]:
    """Our events in the SDK's typed form, to compare like with like."""
    return [_parse_event(f"event: {e.event}\ndata: {e.data}") for e in events]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def delta_text(events: list[tuple[str, Any]]) -> str:
    return "".join(obj.text for _, obj in events if isinstance(obj, MessageDeltaChunk))


@pytest.fixture(scope="module")
def recorded() -> bytes:
    return asyncio.run(record_run(REALISTIC_SCRIPT, "how fast can the bot edit?"))


@pytest.mark.parametrize("size", [1, 7, 64, 1024, 65536])
def test_same_events_on_the_services_framing(recorded: bytes, size: int) -> None:
    chunks = chunked(recorded, size)
    ours = as_sdk(our_events(chunks))
    theirs = sdk_events(chunks)
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    assert ours == theirs
    assert "Tier 3" in delta_text(theirs) and delta_text(ours) == delta_text(theirs)


def test_same_events_for_single_line_data_with_odd_but_legal_spacing() -> None:
    stream = b'event:thread.run.created\ndata:{"id":"r","thread_id":"t","status":"queued"}\n\n'
    assert as_sdk(our_events([stream])) == sdk_events([stream])


# -- where the SDK is wrong ---------------------------------------------------------------


def test_crlf_framing_sdk_loses_all_text_ours_keeps_it(recorded: bytes) -> None:
    crlf = recorded.replace(b"\n", b"\r\n")
    theirs = sdk_events(chunked(crlf, 256))
    ours = as_sdk(our_events(chunked(crlf, 256)))
    assert delta_text(theirs) == ""  # the SDK's iterator silently yields no text at all
    assert delta_text(ours) == delta_text(sdk_events([recorded]))


def test_keep_alive_comment_sdk_raises_ours_skips_it() -> None:
    stream = b': keep-alive\n\nevent: thread.message.delta\ndata: {"id":"m","delta":{}}\n\n'
    with pytest.raises(ValueError, match="Event type not specified"):
        sdk_events([stream])
    assert [e.event for e in our_events([stream])] == ["thread.message.delta"]


def test_several_data_lines_sdk_keeps_the_last_ours_joins_them() -> None:
    stream = b"event: error\ndata: first line\ndata: second line\n\n"
    assert sdk_events([stream]) == [("error", "second line")]
    assert our_events([stream]) == [ServerSentEvent("error", "first line\nsecond line")]


def test_data_value_whitespace_sdk_strips_it_ours_keeps_it() -> None:
    stream = b"event: error\ndata:  indented \n\n"
    assert sdk_events([stream]) == [("error", "indented")]
    assert our_events([stream]) == [ServerSentEvent("error", " indented ")]


async def test_done_sdk_waits_for_the_socket_ours_stops_at_done() -> None:
    """A server that sends ``done`` and then keeps the connection open."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = {
            "id": "m",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "hi"}}]},
        }
        await response.write(f"event: thread.message.delta\ndata: {json.dumps(delta)}\n\n".encode())
        await response.write(b"event: done\ndata: [DONE]\n\n")
        await release.wait()
        return response

    app = web.Application()
    app.router.add_post("/api/projects/p/threads/{t}/runs", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with AgentsClient(f"http://127.0.0.1:{port}/api/projects/p", "t") as client:
            stream = await client.stream_run("thread_1", "asst_1")
            async with asyncio.timeout(2):  # would hang here if we waited for the socket
                events = [e async for e in stream.events()]
            assert events == [TextDelta("hi", (), "m")]

            # The SDK's own async parser on the same socket: after ``done`` its loop
            # asks the byte iterator for more and blocks until the server closes.
            async with httpx.AsyncClient() as http:
                url = f"http://127.0.0.1:{port}/api/projects/p/threads/t/runs"
                async with http.stream("POST", url) as response:
                    parser = _SdkAsyncParser()
                    parser.initialize(response.aiter_raw(), _no_submit)
                    seen: list[str] = []

                    async def sdk_loop() -> None:
                        async for name, _ in parser:
                            seen.append(name)

                    loop_task = asyncio.create_task(sdk_loop())
                    await eventually(lambda: "done" in seen, "the SDK parsing the done event")
                    assert seen == ["thread.message.delta", "done"]
                    # a chance to return, which it does not take: it waits for the socket
                    # (slowness cannot fake this; it could only hide the bug it documents)
                    await asyncio.sleep(0.2)
                    assert not loop_task.done()
                    release.set()
                    await asyncio.wait_for(loop_task, 2)
    finally:
        release.set()
        await runner.cleanup()
