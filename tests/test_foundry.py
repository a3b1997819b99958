"""New Foundry agents: the official openai client against our emulator, configured the way
``AIProjectClient.get_openai_client(agent_name=...)`` configures it, and our backend."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from bot.agents import ApprovalDecision, ContextTooLongError, RunStatus, ToolOutput, TurnContext
from bot.agents.events import ApprovalsRequested, Completed, TextDelta, ToolCallDelta, ToolCallsRequested
from bot.agents.foundry import PREVIEW_FEATURES, FoundryBackend, ResponseStream
from bot.agents.retry import RetryPolicy
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


def ga_client(emulator: AgentServiceEmulator) -> AsyncOpenAI:
    """What ``AIProjectClient.get_openai_client()`` builds (GA): no api-version, agent in the body."""
    return AsyncOpenAI(base_url=f"{emulator.endpoint}/openai/v1", api_key="token")


def preview_client(emulator: AgentServiceEmulator) -> AsyncOpenAI:
    """What ``get_openai_client(agent_name=..., allow_preview=True)`` builds."""
    return AsyncOpenAI(
        base_url=f"{emulator.endpoint}/agents/demo-agent/endpoint/protocols/openai",
        default_query={"api-version": "v1"},
        default_headers={"Foundry-Features": PREVIEW_FEATURES},
        api_key="token",
    )


AGENT = {"agent_reference": {"type": "agent_reference", "name": "demo-agent"}}


async def _round_trip(client: AsyncOpenAI, extra: dict[str, Any]) -> None:
    conversation = await client.conversations.create()
    stream = await client.responses.create(
        conversation=conversation.id, input="hello there", stream=True, extra_body=extra or None
    )
    text, sequence = "", []
    async for event in stream:
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == "You said: hello there"
    assert sequence == sorted(sequence) and sequence[0] == 0
    stream = await client.responses.create(
        conversation=conversation.id, input="weather?", stream=True, extra_body=extra or None
    )
    calls = []
    async for event in stream:
        if event.type == "response.output_item.done" and event.item.type == "function_call":
            calls.append(event.item)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"location": "Seattle"})]
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
    stream = await client.responses.create(
        conversation=conversation.id, input=outputs, stream=True, extra_body=extra or None
    )
    text = ""
    async for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            assert event.response.usage.total_tokens > 0
    assert text == "The forecast: sunny."


@pytest.mark.parametrize("form", ["ga", "preview"])
async def test_the_official_openai_client_gets_400_for_tools_and_answers_a_function_call_without(
    form: str,
) -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        client = ga_client(emulator) if form == "ga" else preview_client(emulator)
        extra = AGENT if form == "ga" else {}
        conversation = await client.conversations.create()
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                conversation=conversation.id, input="weather?", tools=[WEATHER], extra_body=extra or None
            )
        assert refused.value.status_code == 400
        assert refused.value.body["code"] == "invalid_payload"
        assert refused.value.body["message"] == "Not allowed when agent is specified."
        await _round_trip(client, extra)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [WEATHER]),
        ("tool_choice", "auto"),
        ("parallel_tool_calls", False),
        ("model", "gpt-4o"),
        ("instructions", "Be terse."),
        ("text", {"format": {"type": "json_object"}}),
        ("response_format", {"type": "json_object"}),
    ],
)
async def test_the_emulator_refuses_what_the_service_refuses_with_an_agent_named(
    field: str, value: Any
) -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator, ga_client(emulator) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(input="hi", extra_body={**AGENT, field: value})
        assert refused.value.body["code"] == "invalid_payload"
        assert refused.value.body["param"] in (field, "text.format")


async def _turn(backend: FoundryBackend, conversation: str, text: str) -> list[Any]:
    await backend.add_message(conversation, text)
    stream = await backend.start_run(conversation, context=TurnContext("U1", "Alice", "Europe/Paris", "C1"))
    async with stream:
        return [e async for e in stream.events()]


@pytest.mark.parametrize("addressing", ["project", "agent_endpoint"])
async def test_our_backend_sends_only_what_the_service_takes_and_maps_events(addressing: str) -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        backend = FoundryBackend(emulator.endpoint, "token", "demo-agent", addressing=addressing)  # type: ignore[arg-type]
        async with backend:
            conversation = await backend.create_conversation(context=["earlier"], metadata={"slack": "T/C/1"})
            events = await _turn(backend, conversation, "weather please")
            fragments = [e for e in events if isinstance(e, ToolCallDelta) and e.fragment]
            assert len(fragments) >= 3 and json.loads(fragments[-1].arguments) == {"location": "Seattle"}
            requested = events[-1]
            assert isinstance(requested, ToolCallsRequested)
            follow = await backend.submit_tool_outputs(
                conversation, requested.run_id, [ToolOutput(requested.tool_calls[0].id, "rain")]
            )
            async with follow:
                events = [e async for e in follow.events()]
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The forecast: rain."
            assert isinstance(events[-1], Completed) and events[-1].usage and events[-1].usage.total_tokens
            snapshot = await backend.snapshot(conversation, follow.run_id or "")
            assert snapshot.status is RunStatus.COMPLETED and snapshot.text == "The forecast: rain."
        created = [
            r for r in emulator.request_log if r["method"] == "POST" and r["path"].endswith("/responses")
        ]
        assert len(created) == 2
        for request in created:
            assert not set(request["body"]) & {
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "model",
                "instructions",
            }
            assert request["body"]["background"] is True
            if addressing == "project":
                assert request["path"] == "/openai/v1/responses" and "api-version" not in request["query"]
                assert request["body"]["agent_reference"] == {"type": "agent_reference", "name": "demo-agent"}
            else:
                assert request["query"]["api-version"] == "v1"
                assert request["headers"]["Foundry-Features"] == PREVIEW_FEATURES
                assert "agent_reference" not in request["body"]
        first = created[0]["body"]["input"]
        assert (
            first[0]["role"] == "developer"
            and "Alice" in first[0]["content"]
            and "Europe/Paris" in first[0]["content"]
        )
        assert first[1] == {"type": "message", "role": "user", "content": "weather please"}


async def test_a_pinned_version_is_read_directly_and_answers(tmp_path: Any) -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        api = emulator.responses_api
        for n in range(24):  # more than one page of versions
            api.create_version("demo-agent", {"kind": "prompt", "model": f"m{n}", "tools": [WEATHER]})
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent", agent_version="3") as backend:
            info = await backend.describe()
            assert info.version == "3" and info.model == "m1" and "get_weather" in info.function_tools
            conversation = await backend.create_conversation()
            await _turn(backend, conversation, "hello")
        gets = [r["path"] for r in emulator.request_log if r["method"] == "GET" and "/agents/" in r["path"]]
        assert gets == ["/agents/demo-agent/versions/3"]
        body = next(r["body"] for r in emulator.request_log if r["path"].endswith("/responses"))
        assert body["agent_reference"]["version"] == "3"
        async with httpx.AsyncClient() as http:
            page = (
                await http.get(
                    f"{emulator.endpoint}/agents/demo-agent/versions",
                    params={"api-version": "v1"},
                    headers={"Authorization": "Bearer t"},
                )
            ).json()
        assert len(page["data"]) == 20 and page["has_more"] is True


async def test_an_unanswered_function_call_fails_the_next_response_until_answered() -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent", background=False) as backend:
            conversation = await backend.create_conversation()
            events = await _turn(backend, conversation, "weather please")
            assert isinstance(events[-1], ToolCallsRequested)
            async with ga_client(emulator) as client:
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.responses.create(conversation=conversation, input="hello", extra_body=AGENT)
            call_id = events[-1].tool_calls[0].id
            assert refused.value.body["message"] == f"No tool output found for function call {call_id}."
            await backend.abandon(conversation, events[-1].run_id, "cancelled by the user")
            items = emulator.responses_api.items[conversation]
            assert items[-1] == {
                **items[-1],
                "type": "function_call_output",
                "output": "error: cancelled by the user",
            }
            events = await _turn(backend, conversation, "hello again")
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "You said: hello again"


async def test_one_response_at_a_time_per_conversation_and_the_waiting_message_is_kept() -> None:
    """The service refuses a second response on a conversation while one runs (400
    ``conversation_locked``, as OpenAI's Responses API: paulgmiller/careme#379); our backend
    raises ThreadBusyError and keeps the message for the retry, so nothing mixes or is lost."""
    from bot.agents import ThreadBusyError

    slow = Script.parse(
        {"turns": [{"repeat": True, "actions": [{"text": "slow " * 40, "deltas": 40, "delay": 0.05}]}]}
    )
    async with AgentServiceEmulator(slow) as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent") as backend:
            conversation = await backend.create_conversation()
            await backend.add_message(conversation, "first")
            first = await backend.start_run(conversation)
            await backend.add_message(conversation, "second")
            async with ga_client(emulator) as client:
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.responses.create(conversation=conversation, input="x", extra_body=AGENT)
            assert refused.value.body["code"] == "conversation_locked"
            assert refused.value.body["param"] == "conversation"
            with pytest.raises(ThreadBusyError):
                await backend.start_run(conversation)
            async with first:
                assert isinstance([e async for e in first.events()][-1], Completed)
            second = await backend.start_run(conversation)
            async with second:
                assert isinstance([e async for e in second.events()][-1], Completed)
            said = [
                i["content"][0]["text"]
                for i in emulator.responses_api.items[conversation]
                if i.get("type") == "message" and i.get("role") == "user"
            ]
            assert said == ["first", "second"]


async def test_a_dropped_background_stream_resumes_after_the_last_event_seen() -> None:
    script = Script.parse(
        {
            "delay": 0.001,
            "turns": [
                {
                    "actions": [
                        {"text": "first half, ", "deltas": 3},
                        {"disconnect": True},
                        {"text": "second half."},
                    ]
                }
            ],
        }
    )
    async with AgentServiceEmulator(script) as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent") as backend:
            conversation = await backend.create_conversation()
            events = await _turn(backend, conversation, "go")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "first half, second half."
    assert isinstance(events[-1], Completed)
    resumed = [r for r in emulator.request_log if r["method"] == "GET" and r["query"].get("stream") == "true"]
    assert resumed and int(resumed[0]["query"]["starting_after"]) >= 4


async def test_cancel_works_only_for_background_responses() -> None:
    slow = Script.parse(
        {"turns": [{"repeat": True, "actions": [{"text": "slow " * 50, "deltas": 50, "delay": 0.05}]}]}
    )
    async with AgentServiceEmulator(slow) as emulator, ga_client(emulator) as client:
        foreground = await client.responses.create(input="x", extra_body=AGENT)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.cancel(foreground.id)
        assert refused.value.body["message"] == "Cannot cancel a synchronous response."
        background = await client.responses.create(input="x", background=True, extra_body=AGENT)
        cancelled = await client.responses.cancel(background.id)
        assert cancelled.status == "cancelled"


async def test_a_conversation_past_the_context_window_is_refused_unless_truncation_is_auto() -> None:
    async with AgentServiceEmulator(SCRIPT, context_limit_chars=600) as emulator:
        for truncation in ("disabled", "auto"):
            backend = FoundryBackend(emulator.endpoint, "t", "demo-agent", truncation=truncation)  # type: ignore[arg-type]
            async with backend:
                conversation = await backend.create_conversation()
                await _turn(backend, conversation, "short")
                if truncation == "disabled":
                    with pytest.raises(ContextTooLongError):
                        await _turn(backend, conversation, "long " * 100)
                else:
                    events = await _turn(backend, conversation, "long " * 100)
                    assert isinstance(events[-1], Completed)


async def test_mcp_approvals_are_asked_and_answered() -> None:
    script = Script.parse(
        {
            "delay": 0.001,
            "turns": [
                {
                    "actions": [
                        {"mcp_approval": {"server_label": "docs", "name": "search", "arguments": {"q": "x"}}},
                        {"text": "Search was ${output}."},
                    ]
                }
            ],
        }
    )
    async with AgentServiceEmulator(script) as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent") as backend:
            conversation = await backend.create_conversation()
            events = await _turn(backend, conversation, "find x")
            asked = events[-1]
            assert isinstance(asked, ApprovalsRequested)
            assert [(a.server_label, a.name, json.loads(a.arguments)) for a in asked.approvals] == [
                ("docs", "search", {"q": "x"})
            ]
            stream = await backend.answer_approvals(
                conversation, asked.run_id, [ApprovalDecision(asked.approvals[0].id, False, "no")]
            )
            async with stream:
                events = [e async for e in stream.events()]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Search was denied."
    sent = [r["body"] for r in emulator.request_log if r["path"].endswith("/responses")][-1]
    assert sent["input"] == [
        {
            "type": "mcp_approval_response",
            "approval_request_id": asked.approvals[0].id,
            "approve": False,
            "reason": "no",
        }
    ]


class _Events:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = iter(events)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None


async def test_file_citations_refusals_and_url_citations_are_mapped() -> None:
    events = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress"},
        },
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "delta": "See"},
        {
            "type": "response.output_text.annotation.added",
            "sequence_number": 2,
            "item_id": "m",
            "annotation": {
                "type": "file_citation",
                "file_id": "assistant-1",
                "filename": "plan.pdf",
                "index": 3,
            },
        },
        {
            "type": "response.output_text.annotation.added",
            "sequence_number": 3,
            "item_id": "m",
            "annotation": {
                "type": "url_citation",
                "url": "https://example.com",
                "title": "Ex",
                "start_index": 0,
            },
        },
        {
            "type": "response.refusal.delta",
            "sequence_number": 4,
            "item_id": "r",
            "delta": "I can't help with that.",
        },
        {
            "type": "response.completed",
            "sequence_number": 5,
            "response": {"id": "resp_1", "status": "completed"},
        },
    ]
    stream = ResponseStream(_Events(events), "conv_1")
    mapped = [e async for e in stream.events()]
    deltas = [e for e in mapped if isinstance(e, TextDelta)]
    assert [a.kind for d in deltas for a in d.annotations] == ["file_citation", "url_citation"]
    assert deltas[1].annotations[0].title == "plan.pdf" and deltas[1].annotations[0].file_id == "assistant-1"
    assert deltas[-1].text == "I can't help with that."
    assert isinstance(mapped[-1], Completed)


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
        assert "ok new Foundry agent (Responses API) demo-agent v1" in out
        assert code == 1 and "lacks the bot's tools: add_numbers (missing)" in out and "tools sync" in out
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
    assert warning.fields["fix"].startswith("python -m bot tools sync")


async def test_the_emulator_refuses_malformed_responses_requests_like_the_service() -> None:
    async with AgentServiceEmulator(SCRIPT) as emulator, httpx.AsyncClient() as http:
        auth = {"Authorization": "Bearer t"}
        preview = f"{emulator.endpoint}/agents/demo-agent/endpoint/protocols/openai/responses"
        missing_version = await http.post(preview, json={"input": "hi"}, headers=auth)
        assert (
            missing_version.status_code == 400 and missing_version.json()["error"]["param"] == "api-version"
        )
        ga = f"{emulator.endpoint}/openai/v1"
        conversation = (await http.post(f"{ga}/conversations", json={}, headers=auth)).json()["id"]
        orphan = await http.post(
            f"{ga}/responses",
            json={
                **AGENT,
                "conversation": conversation,
                "input": [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
            },
            headers=auth,
        )
        assert orphan.status_code == 400
        assert (
            orphan.json()["error"]["message"]
            == "No tool call found for function call output with call_id call_nope."
        )
        no_store = await http.post(
            f"{ga}/responses", json={**AGENT, "input": "hi", "background": True, "store": False}, headers=auth
        )
        assert no_store.status_code == 400 and no_store.json()["error"]["param"] == "background"
        foreground = (await http.post(f"{ga}/responses", json={**AGENT, "input": "hi"}, headers=auth)).json()
        again = await http.get(f"{ga}/responses/{foreground['id']}", params={"stream": "true"}, headers=auth)
        assert again.status_code == 400


@pytest.mark.parametrize(
    ("status", "body", "expected", "retry_after"),
    [
        (401, None, "AuthenticationError", None),
        (404, None, "NotFoundError", None),
        (429, None, "RateLimitedError", 2.5),
        (503, None, "ServiceError", None),
        (
            400,
            '{"error": {"code": "context_length_exceeded", "message": "too long"}}',
            "ContextTooLongError",
            None,
        ),
        (400, '{"error": {"code": "invalid_value", "message": "no"}}', "BadRequestError", None),
    ],
)
async def test_service_errors_reach_the_pipeline_as_typed_errors(
    status: int, body: str | None, expected: str, retry_after: float | None
) -> None:
    """What the official client raises is mapped to the backend-neutral errors the pipeline
    words its lines from (the service's ``retry-after-ms`` kept)."""
    from bot.agents import AgentServiceError

    async with AgentServiceEmulator(SCRIPT) as emulator:
        emulator.fail_next(
            "POST", "*conversations", status, retry_after=retry_after, body=body,
            content_type="application/json" if body else None,
        )  # fmt: skip
        one_try = RetryPolicy(max_attempts=1)  # AGENTS_MAX_ATTEMPTS=1: the first answer is the answer
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent", retry=one_try) as backend:
            with pytest.raises(AgentServiceError) as caught:
                await backend.create_conversation()
    assert type(caught.value).__name__ == expected
    assert getattr(caught.value, "retry_after", None) == retry_after


async def test_an_unreachable_service_is_a_connection_error() -> None:
    from bot.agents import AgentServiceError

    async with FoundryBackend(
        "http://127.0.0.1:9/api/projects/p", "t", "demo-agent", retry=RetryPolicy(within_s=0.5)
    ) as backend:
        with pytest.raises(AgentServiceError) as caught:
            await backend.create_conversation()
    assert type(caught.value).__name__ == "AgentConnectionError"


async def test_transient_errors_are_retried_until_a_deadline_not_a_count() -> None:
    """The openai client's own retries end after a number of tries; ours end at the deadline:
    six 429s and 503s in a row are waited out, and a 503 that never ends is the error."""
    from bot.agents.errors import ServiceError

    fast = RetryPolicy(within_s=30.0, backoff_base=0.01, backoff_max=0.05)
    async with AgentServiceEmulator(SCRIPT) as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent", retry=fast) as backend:
            emulator.fail_next("POST", "*conversations", 429, times=3, retry_after=0.01)
            emulator.fail_next("POST", "*conversations", 503, times=3)
            assert (await backend.create_conversation()).startswith("conv_")
        tries = [p for m, p, _ in emulator.requests if m == "POST" and p.endswith("conversations")]
        assert len(tries) == 7
        short = RetryPolicy(within_s=0.5, backoff_base=0.01, backoff_max=0.05)
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent", retry=short) as backend:
            emulator.fail_next("POST", "*conversations", 503, times=100_000)
            with pytest.raises(ServiceError):
                await asyncio.wait_for(backend.create_conversation(), 30)
