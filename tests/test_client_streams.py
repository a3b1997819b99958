"""Streaming runs end to end over sockets: events, tool rounds, faults and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from bot.agents.classic.client import AgentsClient
from bot.agents.errors import (
    BadResponseError,
    RateLimitedError,
    StreamInterruptedError,
    StreamTimeoutError,
)
from bot.agents.events import (
    Annotation,
    Cancelled,
    Completed,
    Expired,
    Failed,
    Incomplete,
    MessageCompleted,
    RunStatusChanged,
    RunStepChanged,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallsRequested,
    UnknownEvent,
    is_terminal,
)
from bot.agents.retry import RetryPolicy
from bot.emulators.agents import AgentServiceEmulator


async def start_run(client: AgentsClient, text: str, **overrides: Any):  # type: ignore[no-untyped-def]
    thread = await client.create_thread()
    await client.add_message(thread.id, text)
    return thread.id, await client.stream_run(thread.id, "asst_demo", **overrides)


async def collect(stream: Any) -> list[Any]:
    async with stream:
        return [event async for event in stream.events()]


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_default_echo_streams_in_several_deltas(client: AgentsClient) -> None:
    _, stream = await start_run(client, "hello there, agent")
    events = await collect(stream)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    assert text_of(events) == "You said: hello there, agent"
    assert [e.status for e in events if isinstance(e, RunStatusChanged)] == [
        "created",
        "queued",
        "in_progress",
    ]
    assert any(isinstance(e, RunStepChanged) and e.step_type == "message_creation" for e in events)
    completed = [e for e in events if isinstance(e, MessageCompleted)]
    assert completed and completed[0].text == "You said: hello there, agent"
    last = events[-1]
    assert isinstance(last, Completed) and last.usage and last.usage.total_tokens > 0
    assert stream.run_id == last.run_id and stream.status == "completed"


async def test_fragmented_tool_arguments_and_requires_action(
    make_emulator: Callable, make_client: Callable
) -> None:
    arguments = {"city": "Zürich", "units": "metric", "days": [1, 2, 3]}
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {
                            "tool_calls": [
                                {"name": "get_weather", "arguments": arguments},
                                {"name": "get_time", "arguments": {}},
                            ],
                            "fragments": 5,
                        },
                        {"text": "Weather: ${output0}; time: ${output1}"},
                    ]
                }
            ]
        }
    )
    client: AgentsClient = make_client(emulator)
    thread_id, stream = await start_run(client, "weather please")
    events = await collect(stream)
    fragments = [e for e in events if isinstance(e, ToolCallDelta) and e.name == "get_weather"]
    assert len([f for f in fragments if f.fragment]) >= 3  # the arguments really came in pieces
    assert json.loads(fragments[-1].arguments) == arguments
    requested = [e for e in events if isinstance(e, ToolCallsRequested)]
    assert len(requested) == 1 and events[-1] is requested[0]  # the first response ends there
    calls = requested[0].tool_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].arguments) == arguments and requested[0].thread_id == thread_id
    steps = [e for e in events if isinstance(e, RunStepChanged) and e.step_type == "tool_calls"]
    assert steps and steps[0].tool_calls == ()  # as recorded: the calls come in step deltas

    outputs = [
        {"tool_call_id": calls[0].id, "output": "sunny"},
        {"tool_call_id": calls[1].id, "output": "noon"},
    ]
    follow = await client.submit_tool_outputs_stream(thread_id, requested[0].run_id, outputs)
    events2 = await collect(follow)
    done_steps = [e for e in events2 if isinstance(e, RunStepChanged) and e.step_type == "tool_calls"]
    assert done_steps and done_steps[0].status == "completed"
    assert [c.name for c in done_steps[0].tool_calls] == ["get_weather", "get_time"]
    assert text_of(events2) == "Weather: sunny; time: noon"
    assert isinstance(events2[-1], Completed) and follow.run_id == requested[0].run_id


async def test_citations_arrive_as_annotations(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Slack limits chat.update"},
                        {
                            "citation": {
                                "url": "https://api.slack.com/methods/chat.update",
                                "title": "chat.update",
                            }
                        },
                        {"text": " and files"},
                        {"file_citation": {"file_id": "assistant-abc", "quote": "Tier 3"}},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "cite")
    events = await collect(stream)
    annotations = [a for e in events if isinstance(e, TextDelta) for a in e.annotations]
    assert annotations[0] == Annotation(
        "url_citation",
        marker="【3:0†source】",
        start_index=24,
        end_index=36,
        url="https://api.slack.com/methods/chat.update",
        title="chat.update",
    )
    assert annotations[1].kind == "file_citation" and annotations[1].file_id == "assistant-abc"
    assert annotations[1].quote == "Tier 3"
    final = next(e for e in events if isinstance(e, MessageCompleted))
    assert [a.kind for a in final.annotations] == ["url_citation", "file_citation"]
    assert final.text[24:36] == "【3:0†source】"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            {"fail": {"code": "rate_limit_exceeded", "message": "Rate limit is exceeded."}},
            Failed("", "rate_limit_exceeded", "Rate limit is exceeded."),
        ),
        ({"incomplete": "max_completion_tokens"}, Incomplete("", "max_completion_tokens")),
        ({"expire": True}, Expired("")),
    ],
)
async def test_run_ends_mid_stream(
    make_emulator: Callable, make_client: Callable, action: dict, expected: Any
) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"text": "partial answer"}, action]}]})
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    events = await collect(stream)
    assert text_of(events) == "partial answer"
    last = events[-1]
    assert is_terminal(last) and type(last) is type(expected)
    assert last == dataclasses.replace(expected, run_id=stream.run_id)


async def test_cancel_during_stream_ends_with_cancelled(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {"turns": [{"actions": [{"text": "a b c d e f", "deltas": 6, "delay": 0.1}]}]}
    )
    client = make_client(emulator)
    thread_id, stream = await start_run(client, "x")
    seen: list[Any] = []
    async with stream:
        async for event in stream.events():
            seen.append(event)
            if isinstance(event, TextDelta) and len([e for e in seen if isinstance(e, TextDelta)]) == 1:
                await client.cancel_run(thread_id, stream.run_id or "")
    assert isinstance(seen[-1], Cancelled)


async def test_error_event_becomes_stream_error(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {"error_event": {"code": "server_error", "message": "backend hiccup"}},
                        {"text": "ok"},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    events = await collect(stream)
    assert StreamError("server_error", "backend hiccup") in events
    assert text_of(events) == "ok"


async def test_unknown_event_is_kept_as_unknown(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {
                            "raw": "event: thread.run.step.reasoning\n"
                            'data: {"id":"x","summary":"thinking"}\n\n'
                        },
                        {"text": "ok"},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    events = await collect(stream)
    assert UnknownEvent("thread.run.step.reasoning", {"id": "x", "summary": "thinking"}) in events
    assert isinstance(events[-1], Completed)


async def test_malformed_json_in_data_is_bad_response(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "before"},
                        {"raw": "event: thread.message.delta\ndata: {not json\n\n"},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    with pytest.raises(BadResponseError, match=r"malformed JSON in 'thread.message.delta' event: \{not json"):
        await collect(stream)


async def test_json_that_is_not_an_object_is_bad_response(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {"turns": [{"actions": [{"raw": "event: thread.run.completed\ndata: [1,2]\n\n"}]}]}
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    with pytest.raises(BadResponseError, match="carried list, not a JSON object"):
        await collect(stream)


async def test_socket_closed_before_done_is_stream_interrupted(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "first half", "deltas": 2},
                        {"disconnect": True},
                        {"text": " second half"},
                    ]
                }
            ]
        }
    )
    client = make_client(emulator)
    thread_id, stream = await start_run(client, "x")
    seen: list[Any] = []
    with pytest.raises(StreamInterruptedError, match=r"before the run finished|stream broke") as err:
        async with stream:
            async for event in stream.events():
                seen.append(event)
    assert text_of(seen) == "first half"
    assert err.value.run_id == stream.run_id and err.value.thread_id == thread_id
    # the run went on without us: polling finds it complete with the whole text
    final = await emulator.wait_run(stream.run_id or "")
    assert final["status"] == "completed"
    messages = [m async for m in client.list_messages(thread_id, run_id=stream.run_id)]
    assert messages[0].text == "first half second half"


async def test_slow_first_token_within_idle_timeout(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"sleep": 0.4}, {"text": "finally"}]}]})
    client = make_client(emulator, stream_idle_timeout=2.0)
    _, stream = await start_run(client, "x")
    assert text_of(await collect(stream)) == "finally"


async def test_idle_stream_times_out(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"text": "hi"}, {"sleep": 3}, {"text": "late"}]}]})
    client = make_client(emulator, stream_idle_timeout=0.3)
    _, stream = await start_run(client, "x")
    with pytest.raises(StreamTimeoutError, match=r"sent nothing for 0\.3 s") as err:
        await collect(stream)
    assert err.value.run_id == stream.run_id


async def test_keepalive_comments_keep_an_idle_stream_open(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {"turns": [{"actions": [{"sleep": 0.8}, {"text": "kept alive"}]}]}, keepalive=0.1
    )
    client = make_client(emulator, stream_idle_timeout=0.4)
    _, stream = await start_run(client, "x")
    assert text_of(await collect(stream)) == "kept alive"


async def test_crlf_framed_service_stream(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(crlf=True)
    client = make_client(emulator)
    _, stream = await start_run(client, "line endings")
    events = await collect(stream)
    assert text_of(events) == "You said: line endings" and isinstance(events[-1], Completed)


async def test_429_before_start_is_retried(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "reject": [{"status": 429, "retry_after": 0.05}] * 2,
                    "actions": [{"text": "made it"}],
                }
            ]
        }
    )
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    assert text_of(await collect(stream)) == "made it"
    assert sum(1 for m, p, _ in emulator.requests if m == "POST" and p.endswith("/runs")) == 3


async def test_429_storm_on_run_create_is_rate_limited(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {
            "turns": [
                {
                    "reject": [{"status": 429, "retry_after": 0.01}] * 1000,
                    "actions": [{"text": "never"}],
                }
            ]
        }
    )
    # a storm that outlasts the retry deadline (short here) ends as RateLimitedError
    client = make_client(emulator, retry=RetryPolicy(within_s=0.5, backoff_base=0.01, backoff_max=0.05))
    with pytest.raises(RateLimitedError):
        await start_run(client, "x")


async def test_500_on_run_create_is_retried(client: AgentsClient, emulator: AgentServiceEmulator) -> None:
    emulator.fail_next("POST", "/threads/*/runs", 500, times=1)
    _, stream = await start_run(client, "again")
    assert text_of(await collect(stream)) == "You said: again"


async def test_non_sse_content_type_is_bad_response(
    client: AgentsClient, emulator: AgentServiceEmulator
) -> None:
    emulator.fail_next(
        "POST",
        "/threads/*/runs",
        200,
        body='{"id":"run_1","status":"queued"}',
        content_type="application/json",
    )
    with pytest.raises(BadResponseError, match=r"expected an event stream .* got application/json"):
        await start_run(client, "x")


async def test_a_stream_that_yielded_is_never_replayed(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"text": "once"}, {"disconnect": True}]}]})
    client = make_client(emulator)
    _, stream = await start_run(client, "x")
    with pytest.raises(StreamInterruptedError):
        await collect(stream)
    runs = [p for m, p, _ in emulator.requests if m == "POST" and p.endswith("/runs")]
    assert len(runs) == 1
    with pytest.raises(RuntimeError, match="consumed once"):
        await collect(stream)


async def test_default_model_calls_a_named_function_tool(client: AgentsClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "current_time",
                "description": "now",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    thread_id, stream = await start_run(client, "what does current_time say?", tools=tools)
    events = await collect(stream)
    requested = events[-1]
    assert isinstance(requested, ToolCallsRequested)
    assert requested.tool_calls == (ToolCall(requested.tool_calls[0].id, "current_time", "{}"),)
    follow = await client.submit_tool_outputs_stream(
        thread_id,
        requested.run_id,
        [{"tool_call_id": requested.tool_calls[0].id, "output": "12:00"}],
    )
    assert text_of(await collect(follow)) == "`current_time` returned: 12:00"


async def test_many_concurrent_streams_share_one_pool(make_emulator: Callable, make_client: Callable) -> None:
    emulator = await make_emulator()
    client = make_client(emulator, max_connections=10)

    async def one(i: int) -> str:
        _, stream = await start_run(client, f"n{i}")
        return text_of(await collect(stream))

    results = await asyncio.gather(*(one(i) for i in range(30)))
    assert results == [f"You said: n{i}" for i in range(30)]
    # 30 runs (about 90 requests), all on at most the pool's 10 connections, reused
    assert len(emulator.requests) >= 90
    assert 1 <= len(emulator.connections) <= 10
