"""Our client against the emulator over real sockets: every route and every error."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable

import pytest

from bot.agents.classic.client import AgentsClient
from bot.agents.errors import (
    AgentConnectionError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    ThreadBusyError,
)
from bot.agents.retry import RetryPolicy
from bot.emulators.agents import AgentServiceEmulator
from tests.conftest import FAST_RETRY


async def test_get_agent(client: AgentsClient) -> None:
    agent = await client.get_agent("asst_demo")
    assert agent.id == "asst_demo"
    assert agent.name == "Demo agent"


async def test_agent_create_update_delete_and_non_function_tools(client: AgentsClient) -> None:
    tools = [
        {"type": "code_interpreter"},
        {"type": "function", "function": {"name": "f", "parameters": {}}},
    ]
    agent = await client.create_agent(model="gpt-4o", name="x", tools=tools)
    assert agent.non_function_tools() == [{"type": "code_interpreter"}]
    updated = await client.update_agent(agent.id, instructions="Be brief.")
    assert updated.instructions == "Be brief."
    assert await client.delete_agent(agent.id) is True
    with pytest.raises(NotFoundError, match=agent.id):
        await client.get_agent(agent.id)


async def test_thread_message_and_paging(client: AgentsClient, emulator: AgentServiceEmulator) -> None:
    thread = await client.create_thread(metadata={"slack": "C1/1700000000.0001"})
    assert thread.id.startswith("thread_")
    assert emulator.threads[thread.id]["metadata"] == {"slack": "C1/1700000000.0001"}
    for i in range(7):
        message = await client.add_message(thread.id, f"m{i}", metadata={"i": str(i)})
        assert message.text == f"m{i}" and message.role == "user"
    texts = [m.text async for m in client.list_messages(thread.id, limit=3, order="asc")]
    assert texts == [f"m{i}" for i in range(7)]
    newest = [m.text async for m in client.list_messages(thread.id, limit=2)]
    assert newest == [f"m{i}" for i in reversed(range(7))]
    page = await client.list_messages_page(thread.id, limit=3, order="asc")
    assert page.has_more and [m.text for m in page.data] == ["m0", "m1", "m2"]
    # paging calls: ceil(7/3) pages with data plus one empty page, as the SDK does
    calls = [r for r in emulator.requests if r[0] == "GET" and r[1].endswith("/messages")]
    assert len(calls) >= 4


async def test_create_thread_with_messages(client: AgentsClient) -> None:
    thread = await client.create_thread(messages=[{"role": "user", "content": "earlier context"}])
    assert [m.text async for m in client.list_messages(thread.id)] == ["earlier context"]


async def test_get_run_cancel_run_and_list_run_messages(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(
        {"turns": [{"actions": [{"text": "slow answer", "delay": 0.2, "deltas": 5}]}]}
    )
    client: AgentsClient = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "go")
    stream = await client.stream_run(thread.id, "asst_demo")
    async with stream:
        async for event in stream.events():
            if type(event).__name__ == "TextDelta":
                break
    assert stream.run_id
    run = await client.get_run(thread.id, stream.run_id)
    assert run.status in ("in_progress", "cancelling")
    cancelled = await client.cancel_run(thread.id, stream.run_id)
    assert cancelled.status == "cancelling"
    final = await emulator.wait_run(stream.run_id)
    assert final["status"] == "cancelled"
    assert (await client.get_run(thread.id, stream.run_id)).status == "cancelled"
    with pytest.raises(BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        await client.cancel_run(thread.id, stream.run_id)
    run_messages = [m async for m in client.list_messages(thread.id, run_id=stream.run_id)]
    assert [m.role for m in run_messages] == ["assistant"]


async def test_run_overrides_reach_the_service(client: AgentsClient, emulator: AgentServiceEmulator) -> None:
    thread = await client.create_thread()
    await client.add_message(thread.id, "hi")
    tools = [{"type": "code_interpreter"}]
    stream = await client.stream_run(
        thread.id,
        "asst_demo",
        tools=tools,
        additional_instructions="Use Slack markdown.",
        metadata={"slack_event": "Ev1"},
    )
    await stream.until_done()
    body = next(b for m, p, b in emulator.requests if m == "POST" and p.endswith("/runs"))
    assert body["assistant_id"] == "asst_demo" and body["stream"] is True
    assert body["tools"] == tools and body["metadata"] == {"slack_event": "Ev1"}
    assert stream.run and stream.run["instructions"].endswith("Use Slack markdown.")
    with pytest.raises(TypeError, match="unknown run override"):
        await client.stream_run(thread.id, "asst_demo", temprature=0.2)


# -- errors -------------------------------------------------------------------------------


async def test_401_is_authentication_error_with_service_message(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator(token="right-token")
    client = make_client(emulator, token="wrong-token")
    with pytest.raises(AuthenticationError, match="invalid or expired") as err:
        await client.get_agent("asst_demo")
    assert err.value.status == 401
    assert "wrong-token" not in str(err.value)


async def test_404_not_found_for_thread_and_agent(client: AgentsClient) -> None:
    with pytest.raises(NotFoundError, match="No thread found with id 'thread_nope'"):
        await client.add_message("thread_nope", "x")
    thread = await client.create_thread()
    await client.add_message(thread.id, "x")
    with pytest.raises(NotFoundError, match="No assistant found with id 'asst_nope'"):
        await client.stream_run(thread.id, "asst_nope")


async def test_thread_busy_on_second_run_and_on_message_during_run(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator({"turns": [{"actions": [{"sleep": 0.5}, {"text": "done"}]}]})
    client = make_client(emulator)
    thread = await client.create_thread()
    await client.add_message(thread.id, "go")
    stream = await client.stream_run(thread.id, "asst_demo")
    async with stream:
        with pytest.raises(ThreadBusyError, match="already has an active run") as busy:
            await client.stream_run(thread.id, "asst_demo")
        assert busy.value.active_run_id and busy.value.active_run_id.startswith("run_")
        assert busy.value.thread_id == thread.id
        with pytest.raises(ThreadBusyError, match="while a run"):
            await client.add_message(thread.id, "follow-up")
        await stream.until_done()
    await client.add_message(thread.id, "follow-up")  # accepted once the run has ended


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_errors_are_retried_then_succeed(
    client: AgentsClient, emulator: AgentServiceEmulator, status: int
) -> None:
    emulator.fail_next("GET", "/assistants/*", status, times=2, retry_after=0.01)
    assert (await client.get_agent("asst_demo")).id == "asst_demo"
    assert sum(1 for m, p, _ in emulator.requests if p == "/assistants/asst_demo") == 3


async def test_a_429_storm_is_retried_until_the_deadline_then_is_a_rate_limited_error(
    make_emulator: Callable, make_client: Callable
) -> None:
    """Retries end at a deadline, never after a number of tries: six 429s in a row are waited
    out, a storm that outlasts the deadline ends in RateLimitedError with the service's wait."""
    emulator = await make_emulator()
    client = make_client(emulator, retry=RetryPolicy(within_s=30.0, backoff_base=0.01, backoff_max=0.05))
    emulator.fail_next("POST", "/threads", 429, times=6, retry_after=0.01)
    assert (await client.create_thread()).id.startswith("thread_")
    assert sum(1 for m, p, _ in emulator.requests if (m, p) == ("POST", "/threads")) == 7
    short = make_client(emulator, retry=RetryPolicy(within_s=0.5, backoff_base=0.01, backoff_max=0.05))
    emulator.fail_next("POST", "/threads", 429, times=100_000, retry_after=0.02)
    with pytest.raises(RateLimitedError, match="Rate limit is exceeded") as err:
        await asyncio.wait_for(short.create_thread(), 30)
    assert err.value.retry_after == pytest.approx(0.02)


async def test_retry_after_longer_than_the_cap_is_not_waited_for(
    make_emulator: Callable, make_client: Callable
) -> None:
    emulator = await make_emulator()
    client = make_client(emulator, retry=RetryPolicy(max_retry_after=1.0))
    emulator.fail_next("POST", "/threads", 429, times=1, retry_after=30)
    with pytest.raises(RateLimitedError) as err:
        await client.create_thread()
    assert err.value.retry_after == 30


async def test_500_persisting_is_service_error(client: AgentsClient, emulator: AgentServiceEmulator) -> None:
    emulator.fail_next("POST", "/threads", 500, times=100_000, message="Internal failure xyz")
    with pytest.raises(ServiceError, match="Internal failure xyz"):
        await client.create_thread()


async def test_400_is_bad_request(client: AgentsClient) -> None:
    thread = await client.create_thread()
    with pytest.raises(BadRequestError, match="role"):
        await client.add_message(thread.id, "x", role="system")


async def test_non_json_body_is_bad_response(client: AgentsClient, emulator: AgentServiceEmulator) -> None:
    emulator.fail_next("GET", "/assistants/*", 200, body="<html>proxy login</html>", content_type="text/html")
    with pytest.raises(BadResponseError, match=r"expected JSON .* text/html: <html>proxy login"):
        await client.get_agent("asst_demo")


async def test_malformed_json_body_is_bad_response(
    client: AgentsClient, emulator: AgentServiceEmulator
) -> None:
    emulator.fail_next("GET", "/assistants/*", 200, body='{"id": ', content_type="application/json")
    with pytest.raises(BadResponseError, match="malformed JSON"):
        await client.get_agent("asst_demo")


async def test_error_body_without_json_keeps_the_text(
    client: AgentsClient, emulator: AgentServiceEmulator
) -> None:
    emulator.fail_next("GET", "/assistants/*", 404, body="no such route")
    with pytest.raises(NotFoundError, match="no such route"):
        await client.get_agent("asst_demo")


async def test_connection_refused_is_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AgentsClient(f"http://127.0.0.1:{port}/api/projects/p", "t", retry=FAST_RETRY) as client:
        with pytest.raises(AgentConnectionError, match=f"cannot reach the agent service at 127.0.0.1:{port}"):
            await client.get_agent("asst_demo")


def test_endpoint_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="PROJECT_ENDPOINT must be an http"):
        AgentsClient("my-project", "t")


async def test_ids_are_escaped_in_paths(client: AgentsClient) -> None:
    with pytest.raises(NotFoundError, match=re.escape("No thread found with id 'a/../b'")):
        await client.add_message("a/../b", "x")


async def test_missing_api_version_is_refused_by_emulator(emulator: AgentServiceEmulator) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{emulator.endpoint}/assistants/asst_demo", headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "api-version"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # a bad ms value falls back
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
        ({"Retry-After": "whenever"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_every_form_the_service_sends(
    headers: dict[str, str], seconds: float | None
) -> None:
    import httpx

    from bot.agents.retry import retry_after_seconds

    assert retry_after_seconds(httpx.Headers(headers)) == seconds


def test_retry_after_in_the_future_as_a_date() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    import httpx

    from bot.agents.retry import retry_after_seconds

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_seconds(httpx.Headers({"Retry-After": when})) or 0) <= 30
