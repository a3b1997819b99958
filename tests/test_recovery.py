"""Recovery, case by case: the replies a dead replica left, in each state it can leave them,
finished by a live one. The dead replica is a record in the store with no heartbeat; the
live one is the real bot on the emulators, its recovery run with no grace for a quiet owner."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.recovery import GIVE_UP_S, RESTART_LINE, Recovery
from bot.slack.reads import replies_page, retry_after
from bot.slack.reply_thread import REPLY_EVENT
from bot.slack.writer import PLACEHOLDER
from bot.store import InFlight
from tests.stack import Stack, eventually, start_stack

SLOW = {"text": "slow " * 100, "deltas": 100, "delay": 0.05}
SCRIPT = {
    "turns": [
        {"match": "slow", "repeat": True, "actions": [SLOW]},
        {"repeat": True, "actions": [{"text": "The stored answer."}]},
    ]
}


def dead_reply(stack: Stack, root: str, **fields: Any) -> InFlight:
    """A reply a replica that no longer beats was writing, with its placeholder up."""
    return InFlight(
        turn_id=f"t-{time.monotonic_ns()}",
        team="T0EMU",
        channel="C0GENERAL",
        thread_ts=root,
        message_ts="",
        owner="gone-replica",
        started_at=time.time(),
        user="U0ALICE",
        **fields,
    )


async def run_once(stack: Stack, **kwargs: Any) -> Recovery:
    """One sweep by a recovery that takes over at once (no quiet period for the owner)."""
    recovery = Recovery(stack.bot.orchestrator, heartbeat_ttl_s=0.0, **kwargs)
    await recovery.sweep()
    return recovery


async def _conversation(stack: Stack, text: str) -> tuple[str, str | None]:
    """An agent thread with one run of ``text`` (finished, unless the script makes it slow)."""
    backend = stack.bot.agents.backend("")
    thread_id = await backend.create_conversation()
    await backend.add_message(thread_id, text)
    stream = await backend.start_run(thread_id)
    async with stream:
        async for _ in stream.events():
            if "slow" in text and stream.run_id:
                break  # the run goes on at the service: its replica died here
    return thread_id, stream.run_id


async def _placeholders(stack: Stack, thread_ts: str, turn_id: str, count: int) -> list[str]:
    """*Thinking…* messages naming the turn, as a replica's writer posts them."""
    client = AsyncWebClient(token=stack.slack.bot_token, base_url=stack.slack.api_url)
    meta = {"event_type": REPLY_EVENT, "event_payload": {"turn": turn_id, "page": 0}}
    posted = [
        await client.chat_postMessage(
            channel="C0GENERAL", thread_ts=thread_ts, text=PLACEHOLDER, metadata=meta
        )
        for _ in range(count)
    ]
    return [str(p["ts"]) for p in posted]


@pytest.fixture
async def stack(tmp_path: Path) -> Any:
    opened = await start_stack(SCRIPT, tmp_path=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_finished_run_is_shown_from_the_service(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "a question whose replica died")
    thread_id, run_id = await _conversation(stack, "a question")
    reply = dead_reply(stack, root, agent_thread_id=thread_id, run_id=run_id or "", state="running")
    # its placeholder, and a second one another replica put up for the turn and never recorded
    _stray, reply.message_ts = await _placeholders(stack, root, reply.turn_id, 2)
    await stack.bot.store.record_reply(reply)
    recovery = await run_once(stack)
    await eventually(lambda: recovery.recovered, "the reply finished")
    assert recovery.recovered[0]["how"] == "finished"
    replies = stack.replies("C0GENERAL", root)
    assert [(m.ts, m.visible_text) for m in replies] == [(reply.message_ts, "The stored answer.")]


async def test_a_run_still_going_past_the_wait_is_ended_and_the_person_can_ask_again(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "slow one")
    thread_id, run_id = await _conversation(stack, "slow one")
    reply = dead_reply(stack, root, agent_thread_id=thread_id, run_id=run_id or "", state="running")
    reply.payload = json.dumps({"text": "slow one", "user": "U0ALICE"})
    await stack.bot.store.record_reply(reply)
    recovery = await run_once(stack, run_wait_s=0.2)
    await eventually(lambda: recovery.recovered, "the reply finished")
    assert recovery.recovered[0]["how"] == "interrupted"
    [shown] = stack.replies("C0GENERAL", root)
    assert shown.visible_text == RESTART_LINE
    assert "ask_again" in json.dumps(shown.blocks)  # one click asks it again
    cancels = [p for m, p, _ in stack.agent.requests if m == "POST" and p.endswith("/cancel")]
    assert cancels, "the run left going was cancelled, so the thread takes the next message"


async def test_a_reply_whose_run_never_started_is_closed_with_the_restart_line(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "never ran")
    thread_id = await stack.bot.agents.backend("").create_conversation()
    await stack.bot.store.record_reply(dead_reply(stack, root, agent_thread_id=thread_id, state="running"))
    recovery = await run_once(stack)
    await eventually(lambda: recovery.recovered, "the reply finished")
    assert recovery.recovered[0]["how"] == "interrupted"
    assert stack.reply_text("C0GENERAL", root) == RESTART_LINE


async def test_a_reply_of_an_agent_no_longer_routed_is_closed_not_guessed(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "routed elsewhere since")
    await stack.bot.store.record_reply(
        dead_reply(stack, root, agent_thread_id="removed::thread_x", run_id="run_x", state="running")
    )
    recovery = await run_once(stack)
    await eventually(lambda: recovery.recovered, "the reply finished")
    assert recovery.recovered[0]["how"] == "interrupted"
    assert stack.reply_text("C0GENERAL", root) == RESTART_LINE


async def test_an_undelivered_reply_is_delivered_and_one_refused_for_a_day_is_dropped(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "answered, never shown")
    kept = {"body": "The answer Slack did not take in time.", "undelivered_since": time.time() - 60}
    late = dead_reply(stack, root, state="undelivered", payload=json.dumps(kept))
    old = dead_reply(
        stack,
        root,
        state="undelivered",
        payload=json.dumps({"body": "too old", "undelivered_since": time.time() - GIVE_UP_S - 60}),
    )
    for reply in (late, old):
        await stack.bot.store.record_reply(reply)
    await run_once(stack)
    await eventually(
        lambda: "The answer Slack did not take in time." in stack.reply_text("C0GENERAL", root),
        "the kept answer delivered",
    )
    await eventually(
        lambda: _gone(stack, late.turn_id) and _gone(stack, old.turn_id), "both records settled", within_s=30
    )
    assert "too old" not in stack.reply_text("C0GENERAL", root)


def _gone(stack: Stack, turn_id: str) -> Any:
    async def check() -> bool:
        return await stack.bot.store.reply(turn_id) is None

    return check


async def test_a_thread_read_waits_out_a_429_only_until_its_moment_to_give_up(stack: Stack) -> None:
    slack = stack.slack
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    root = slack.user_posts("U0ALICE", "C0GENERAL", "context")
    slack.force_error("conversations.replies", "ratelimited", retry_after=1.0)
    page = await replies_page(client, give_up_at=time.monotonic() + 30, channel="C0GENERAL", ts=root)
    assert page["messages"][0]["ts"] == root  # the 429 waited out, then read
    slack.force_error("conversations.replies", "ratelimited", retry_after=5.0)
    with pytest.raises(SlackApiError):  # the wait would end after the caller gives up
        await replies_page(client, give_up_at=time.monotonic() + 1, channel="C0GENERAL", ts=root)
    slack.force_error("conversations.replies", "channel_not_found")
    with pytest.raises(SlackApiError):
        await replies_page(client, give_up_at=time.monotonic() + 30, channel="C0GENERAL", ts=root)


@pytest.mark.parametrize(
    ("headers", "seconds"), [({"Retry-After": "3"}, 3.0), ({"retry-after": "soon"}, 1.0), ({}, 1.0)]
)
def test_retry_after_reads_slacks_header_in_any_case(headers: dict[str, str], seconds: float) -> None:
    response = AsyncSlackResponse(
        client=None,  # type: ignore[arg-type]
        http_verb="POST",
        api_url="",
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers=headers,
        status_code=429,
    )
    assert retry_after(SlackApiError("ratelimited", response)) == seconds


def _posted_unheard(stack: Stack, text: str) -> str:
    """A person's message whose events never reached the bot (a replica took it, then died)."""
    url, stack.slack.events_url = stack.slack.events_url, None
    try:
        return stack.slack.user_posts("U0ALICE", "C0GENERAL", text)
    finally:
        stack.slack.events_url = url


async def test_a_turn_taken_in_but_never_asked_is_answered_afresh(stack: Stack) -> None:
    from bot.slack.sink import Turn

    ts = _posted_unheard(stack, "<@U0BOT> taken in, then the replica died")
    turn = Turn("T0EMU", "C0GENERAL", ts, ts, "U0ALICE", "<@U0BOT> taken in, then the replica died", "Ev1")
    record = await stack.bot.orchestrator.receive(turn)
    record.owner = "gone-replica"  # its heartbeat is not in the store
    await stack.bot.store.record_reply(record)
    await run_once(stack)
    await eventually(lambda: stack.reply_text("C0GENERAL", ts) == "The stored answer.", "answered afresh")
    await eventually(_gone(stack, record.turn_id), "the record finished")


async def test_a_follow_up_waits_for_the_turn_before_it_that_a_dead_replica_took(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead replica had taken a question from its conversation's queue (no run yet); the
    follow-up is queued here. It waits, rather than be answered above the question; the
    question is asked afresh ahead of it, then the follow-up (found by the replica test
    under stress: a conversation's two answers in the wrong order)."""
    from bot.slack.sink import Turn

    caplog.set_level(logging.INFO, logger="bot.turns")
    text = "<@U0BOT> the first question"
    ts = _posted_unheard(stack, text)
    first = await stack.bot.orchestrator.receive(Turn("T0EMU", "C0GENERAL", ts, ts, "U0ALICE", text, "Ev4"))
    first.owner, first.state = "gone-replica", "running"  # popped by the dead replica; no run yet
    await stack.bot.store.record_reply(first)
    stack.slack.user_posts("U0ALICE", "C0GENERAL", "<@U0BOT> and the follow-up", thread_ts=ts)
    await eventually(
        lambda: "turn.waits_for_earlier" in caplog.text, "the follow-up waiting for the question"
    )
    assert stack.replies("C0GENERAL", ts) == []
    await run_once(stack)
    await eventually(lambda: len(stack.replies("C0GENERAL", ts)) == 2, "both answered")

    async def drained() -> bool:  # the queue's drain is over: nothing in flight, its lease let go
        store = stack.bot.store
        return not await store.replies_in_flight() and not await store.lease_owner(
            f"conv:T0EMU/C0GENERAL/{ts}"
        )

    await eventually(drained, "the conversation's queue drained")
    turns = [m.metadata["event_payload"]["turn"] for m in stack.replies("C0GENERAL", ts)]
    assert turns[0] == first.turn_id and turns[1] != first.turn_id  # in the order they were asked


async def test_a_second_placeholder_of_the_turn_is_removed_when_it_is_answered(stack: Stack) -> None:
    """Two replicas each put up a *Thinking…* for one turn (the receiver and the one whose
    queue took it), the receiver died, the record names only one: the answer goes in that
    one and the other is deleted, not left above the answer forever."""
    from bot.slack.sink import Turn

    text = "<@U0BOT> taken in by one replica, answered by another"
    ts = _posted_unheard(stack, text)
    record = await stack.bot.orchestrator.receive(Turn("T0EMU", "C0GENERAL", ts, ts, "U0ALICE", text, "Ev2"))
    placeholders = await _placeholders(stack, ts, record.turn_id, 2)
    payload = json.loads(record.payload)
    payload["received_by"] = "gone-replica"
    record.payload = json.dumps(payload)
    record.owner, record.message_ts, record.pages = "gone-replica", placeholders[1], [placeholders[1]]
    await stack.bot.store.record_reply(record)
    await run_once(stack)
    await eventually(_gone(stack, record.turn_id), "the turn answered")
    replies = stack.replies("C0GENERAL", ts)
    assert [(m.ts, m.visible_text) for m in replies] == [(placeholders[1], "The stored answer.")]


async def test_a_turn_asked_afresh_after_a_replica_died_leaves_no_placeholder_of_that_replica(
    stack: Stack,
) -> None:
    """This replica took the turn in; another one's queue took it from ours, put up its own
    *Thinking…* and died before the run started. Asked afresh here, the reply goes on in the
    first placeholder and the dead one's is deleted (whoever took the turn in)."""
    from bot.slack.sink import Turn

    text = "<@U0BOT> taken in here, taken over, then its taker died"
    ts = _posted_unheard(stack, text)
    record = await stack.bot.orchestrator.receive(Turn("T0EMU", "C0GENERAL", ts, ts, "U0ALICE", text, "Ev3"))
    first, _dead_ones = await _placeholders(stack, ts, record.turn_id, 2)
    record.owner, record.state = "gone-replica", "running"  # popped by the dead replica; no run yet
    await stack.bot.store.record_reply(record)
    await run_once(stack)
    await eventually(_gone(stack, record.turn_id), "the turn answered")
    replies = stack.replies("C0GENERAL", ts)
    assert [(m.ts, m.visible_text) for m in replies] == [(first, "The stored answer.")]


async def test_a_live_replicas_replies_are_left_to_it(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "a live replica is answering")
    await stack.bot.store.acquire_lease("replica:alive", "alive", 60)
    mine = dead_reply(stack, root, state="running", agent_thread_id="thread_x")
    mine.owner = "alive"
    await stack.bot.store.record_reply(mine)
    recovery = await run_once(stack)
    await recovery.sweep()  # a second look changes nothing either
    assert recovery.recovered == [] and stack.replies("C0GENERAL", root) == []
    assert await stack.bot.store.reply(mine.turn_id) is not None
    await stack.bot.store.finish_reply(mine.turn_id)
    await recovery.sweep()  # nothing of that owner's left to watch


async def test_the_sweep_runs_on_its_own_until_stopped(stack: Stack) -> None:
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "delivered by the periodic sweep")
    recovery = Recovery(stack.bot.orchestrator, heartbeat_ttl_s=30.0, interval_s=0.05)
    await recovery.start()
    try:
        kept = {"body": "Found by the loop.", "undelivered_since": time.time()}
        await stack.bot.store.record_reply(
            dead_reply(stack, root, state="undelivered", payload=json.dumps(kept))
        )
        await eventually(
            lambda: stack.reply_text("C0GENERAL", root) == "Found by the loop.", "the loop's sweep"
        )
        assert await stack.bot.store.lease_owner(recovery.heartbeat) == stack.bot.orchestrator.replica_id
    finally:
        await recovery.stop()
    assert await stack.bot.store.lease_owner(recovery.heartbeat) is None


async def test_finishing_a_dead_replicas_turn_keeps_a_live_turns_held_message(tmp_path: Path) -> None:
    """New agents hold a turn's message until its run starts. Recovery finishing another
    process's turn of the same conversation must not drop what a live turn here holds (found
    by the replica test under load: a follow-up answered "You said: " with its text gone)."""
    stack = await start_stack(SCRIPT, tmp_path=tmp_path, backend="foundry")
    try:
        root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "the dead replica's question")
        backend = stack.bot.agents.backend("")
        conversation = await backend.create_conversation()
        await backend.add_message(conversation, "the live follow-up")  # a live turn here, before its run
        await stack.bot.store.record_reply(
            dead_reply(stack, root, agent_thread_id=conversation, state="running")
        )
        recovery = await run_once(stack)
        await eventually(lambda: recovery.recovered, "the dead replica's reply finished")
        assert stack.reply_text("C0GENERAL", root) == RESTART_LINE
        stream = await backend.start_run(conversation)  # the live turn goes on
        async with stream:
            async for _ in stream.events():
                pass
        said = [
            i["content"][0]["text"]
            for i in stack.agent.responses_api.items[conversation]
            if i.get("type") == "message" and i.get("role") == "user"
        ]
        assert said == ["the live follow-up"]
    finally:
        await stack.close()
