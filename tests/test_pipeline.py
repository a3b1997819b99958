"""The turn pipeline's promises (issue 12): no message dropped whatever Slack does, bounded
work per turn, queue correctness, approvals across replicas."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bot.emulators.slack import Limit, default_limits
from tests.stack import eventually, run_count, start_stack, wait_for_prompt

BOT = "<@U0BOT>"
WRITES = ["chat.postMessage", "chat.update", "chat.postEphemeral"]


async def test_a_60_s_429_storm_on_every_write_method_loses_nothing(tmp_path: Path) -> None:
    stack = await start_stack(
        {"turns": [{"actions": [{"text": "The whole answer, after the storm."}]}]}, tmp_path=tmp_path
    )
    try:
        stack.slack.storm(WRITES, 60)
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} are you there?")
        await stack.settle(within_s=180)
        assert stack.reply_text("C0GENERAL", ts) == "The whole answer, after the storm."
        assert any(c.status == 429 and c.method == "chat.postMessage" for c in stack.slack.calls)
        assert stack.agent.runs, "the agent run started while Slack refused the placeholder"
    finally:
        await stack.close()


async def test_thirty_mentions_at_once_under_a_workspace_post_limit_are_all_answered(tmp_path: Path) -> None:
    limits = default_limits()
    limits["chat.postMessage"] = Limit(60, 3, scope="team")  # 60 posts a minute, workspace-wide
    stack = await start_stack(
        {"turns": [{"repeat": True, "actions": [{"text": "Answered."}]}]},
        tmp_path=tmp_path,
        slack_kwargs={"limits": limits},
        settings_overrides={"user_runs_per_minute": 1000},  # one person asks all 30 here
    )
    try:
        for i in range(30):
            stack.slack.add_channel(f"C{i:02d}", f"room{i}")
        asked = [stack.slack.user_posts("U0ALICE", f"C{i:02d}", f"{BOT} question {i}") for i in range(30)]
        await stack.settle(within_s=240)
        answers = [stack.reply_text(f"C{i:02d}", ts) for i, ts in enumerate(asked)]
        assert answers == ["Answered."] * 30
    finally:
        await stack.close()


_ = Any


async def test_a_crash_between_pop_and_run_is_recovered(tmp_path: Path) -> None:
    """A replica popped a turn (recorded running, atomically) and died before its run started:
    another replica answers it afresh."""
    import json
    import time

    from bot.store import InFlight

    # A TTL long enough that a loaded machine cannot stall between the record and the first
    # look for a whole TTL (the bot's own sweeps run every TTL/3 beside the test's).
    stack = await start_stack(tmp_path=tmp_path, settings_overrides={"heartbeat_ttl": 5.0})
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", "were you there?")  # no mention: not answered
        turn = {
            "team": "T0EMU", "channel": "C0GENERAL", "thread_ts": ts, "ts": ts, "user": "U0ALICE",
            "text": f"{BOT} were you there?", "event_id": "Ev1", "files": [],
            "turn_id": "turn-ghost", "message_ts": "", "attempt": 0,
        }  # fmt: skip
        await stack.bot.store.record_reply(
            InFlight(
                "turn-ghost", "T0EMU", "C0GENERAL", turn["thread_ts"], "", "dead-replica", time.time(),
                user="U0ALICE", state="running", payload=json.dumps(turn),
            )
        )  # fmt: skip
        await stack.bot.recovery.sweep()  # a heartbeat missed once may be a stall: not yet taken
        kept = await stack.bot.store.reply("turn-ghost")
        assert kept is not None and (kept.owner, kept.state) == ("dead-replica", "running")
        deadline = time.monotonic() + 30  # its owner's heartbeat stays missing a TTL, then: taken over
        while time.monotonic() < deadline:
            await stack.bot.recovery.sweep()
            if stack.reply_text("C0GENERAL", turn["thread_ts"]) == "You said: were you there?":
                break
            await asyncio.sleep(0.1)
        assert stack.reply_text("C0GENERAL", turn["thread_ts"]) == "You said: were you there?"
        assert await stack.bot.store.reply("turn-ghost") is None  # finished, nothing left behind
    finally:
        await stack.close()


import asyncio  # noqa: E402


async def test_the_caps_end_a_turn_with_a_clear_line(tmp_path: Path) -> None:
    from tests.test_slack_e2e import WeatherTools

    loop_forever = {"tool_calls": [{"name": "get_weather", "arguments": {}}]}
    script = {
        "turns": [
            {"match": "tools", "actions": [loop_forever] * 4 + [{"text": "never shown"}]},
            {"match": "long", "actions": [{"text": "x" * 5000, "deltas": 10}]},
            {"match": "slow", "actions": [{"sleep": 30}, {"text": "too late"}]},
        ]
    }
    stack = await start_stack(
        script,
        tmp_path=tmp_path,
        tools=WeatherTools(),
        settings_overrides={"max_tool_rounds": 2, "max_reply_chars": 1000, "max_turn_minutes": 0.1},
    )
    try:
        ts1 = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} tools")
        ts2 = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} long")
        ts3 = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} slow")
        await stack.settle(within_s=60)
        assert stack.reply_text("C0GENERAL", ts1).endswith("more than 2 times in one turn._")
        cut = stack.reply_text("C0GENERAL", ts2)
        assert (
            cut.startswith("x" * 1000) and "x" * 1001 not in cut and cut.endswith("cut at 1,000 characters._")
        )
        assert stack.reply_text("C0GENERAL", ts3).endswith("longer than 0.1 minutes and was stopped._")
        runs = list(stack.agent.runs.values())
        assert all(run.status in ("cancelled", "completed", "cancelling") for run in runs)
    finally:
        await stack.close()


def test_rendering_is_incremental_and_equals_rendering_the_whole_reply() -> None:
    """Each delta is rendered once (text after the last complete citation marker); the writer
    reads only the open page's tail. The result is the same as rendering everything at once."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from bot.agents.events import Annotation, TextDelta
    from bot.turns import Reply

    annotations = (
        Annotation("url_citation", marker="【3:0†source】", url="https://a.example", title="A"),
        Annotation("url_citation", marker="【1:1†src】", url="https://b.example", title="B"),
    )
    pieces = st.lists(
        st.sampled_from(["Hello ", "【3:0†source】", "【1:1†src】", "【", "】", "world", "\n"]), max_size=40
    )

    @settings(max_examples=200)
    @given(pieces, st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20))
    def check(parts: list[str], cuts: list[int]) -> None:
        text = "".join(parts)
        streamed, whole = Reply(), Reply()
        position, index = 0, 0
        while position < len(text):
            size = cuts[index % len(cuts)]
            streamed.add(
                TextDelta(text[position : position + size], annotations if position == 0 else (), "m")
            )
            position, index = position + size, index + 1
            assert streamed.tail(0) == streamed.render(final=False)
        whole.add(TextDelta(text, annotations, "m"))
        assert streamed.render(final=True) == whole.render(final=True)

    check()


async def test_first_mention_context_is_the_latest_messages_before_it(tmp_path: Path) -> None:
    from tests.stack import agent_inputs

    stack = await start_stack(tmp_path=tmp_path)
    try:
        root = stack.slack.user_posts("U0BOB", "C0GENERAL", "message 0")
        for i in range(1, 40):
            stack.slack.user_posts("U0BOB", "C0GENERAL", f"message {i}", thread_ts=root)
        stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} summarise", thread_ts=root)
        await stack.settle()
        (contents,) = agent_inputs(stack)
        context = contents[0]
        assert "@bob: message 39" in context and "@bob: message 25" in context
        assert "message 0\\n" not in context and "@bob: message 10\\n" not in context
        assert context.count("@bob:") == 15
    finally:
        await stack.close()


async def test_a_plain_text_fallback_edit_clears_the_old_blocks(tmp_path: Path) -> None:
    stack = await start_stack(
        {"turns": [{"actions": [{"text": "hello there", "deltas": 1}]}]}, tmp_path=tmp_path
    )
    try:
        stack.slack.force_error("chat.update", "invalid_blocks", times=1, retry_after=None)
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hi")
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)
        assert not reply.blocks  # no stale placeholder block or Stop button left behind
        assert "hello there" in reply.text
    finally:
        await stack.close()


async def test_a_turn_is_durable_before_slack_gets_its_ack(tmp_path: Path) -> None:
    """When Slack's POST returns 200, the turn is already in the store: a crash right after the
    ack cannot lose the event."""
    import json

    import httpx

    stack = await start_stack({"turns": [{"actions": [{"sleep": 3}, {"text": "late"}]}]}, tmp_path=tmp_path)
    try:
        message_ts = "1795670000.000100"
        envelope = stack.slack.event_envelope(
            {
                "type": "app_mention", "user": "U0ALICE", "text": f"{BOT} hello", "ts": message_ts,
                "channel": "C0GENERAL", "team": stack.slack.team_id, "event_ts": message_ts,
            },
            event_id="EvDURABLE1",
        )  # fmt: skip
        body = json.dumps(envelope).encode()
        async with httpx.AsyncClient() as http:
            acked = await http.post(
                f"{stack.url}/slack/events",
                content=body,
                headers={"Content-Type": "application/json", **stack.slack.sign(body)},
            )
        assert acked.status_code == 200
        records = await stack.bot.store.replies_in_flight()  # no waiting: at the ack it is there
        assert any(json.loads(r.payload or "{}").get("event_id") == "EvDURABLE1" for r in records)
        await stack.settle()
    finally:
        await stack.close()


REDIS_APPROVALS_URL = os.environ.get(
    "TEST_REDIS_APPROVALS_URL", "redis://127.0.0.1:6379/7"
)  # emptied before and after


async def _fresh_redis(url: str) -> None:
    import os

    import pytest
    from redis.asyncio import Redis

    try:
        redis = Redis.from_url(url)
        await redis.flushdb()
        await redis.aclose()
    except Exception as exc:  # CI fails, never skips, without Redis
        message = f"Redis at {url} is not reachable ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def test_an_approval_clicked_on_the_other_replica_decides_the_call() -> None:
    from bot.devstack.stack import start_stack as start_replica
    from bot.plugins import tool

    ran: list[str] = []

    @tool(confirm=True)
    def restart_service(name: str) -> str:
        """Restarts a service."""
        ran.append(name)
        return f"{name} restarted"

    script = {
        "turns": [
            {
                "repeat": True,
                "actions": [
                    {"tool_calls": [{"name": "restart_service", "arguments": {"name": "billing"}}]},
                    {"text": "Result: ${output}"},
                ],
            }
        ]
    }
    await _fresh_redis(REDIS_APPROVALS_URL)
    a = await start_replica(
        script, store_url=REDIS_APPROVALS_URL, extra_tools=[restart_service], admins="U0ADMIN"
    )
    b = await start_replica(
        agent=a.agent,
        slack=a.slack,
        store_url=REDIS_APPROVALS_URL,
        extra_tools=[restart_service],
        admins="U0ADMIN",
    )
    slack = a.slack
    try:
        slack.add_user("U0ADMIN", "admin", "Ada Admin")
        slack.events_url = a.url + "/slack/events"  # the mention reaches replica A
        ts = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} restart billing")
        prompt, key = await wait_for_prompt(slack, "C0GENERAL", ts)
        slack.events_url = b.url + "/slack/events"  # the clicks reach replica B
        await asyncio.gather(
            slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_approve", key),
            slack.click("U0ADMIN", "C0GENERAL", prompt.ts, "tool_deny", key),
        )
        await a.settle()
        await b.settle()
        final = slack.find("C0GENERAL", prompt.ts).text
        answer = a.replies("C0GENERAL", ts)[0].visible_text
        if ran:  # whichever click won, the prompt and the outcome agree
            assert final == "<@U0ALICE> approved running *restart_service*."
            assert ran == ["billing"] and answer == "Result: billing restarted"
        else:
            assert final == "<@U0ADMIN> declined running *restart_service*."
            assert answer == "Result: the user declined: restart_service was not run"
    finally:
        await b.close()
        await a.close()
        await _fresh_redis(REDIS_APPROVALS_URL)


def test_a_turn_round_trips_through_its_json_form_and_refuses_a_mangled_one() -> None:
    from bot.slack.sink import Turn

    turn = Turn("T1", "C1", "1.0", "1.1", "U1", "hi", "Ev1", files=({"name": "a.txt"},))
    doc = json.loads(json.dumps({**turn.to_json(), "turn_id": "t1", "attempt": 2}))
    assert Turn.from_json(doc) == turn
    with pytest.raises(ValueError):
        Turn.from_json({**doc, "channel": 5})
    with pytest.raises(ValueError):
        Turn.from_json({**doc, "files": "a.txt"})


async def test_a_message_the_dead_owner_posted_but_never_recorded_is_reused(tmp_path: Path) -> None:
    """The owner posted the placeholder (Slack took it) and died before writing down where:
    the replica that answers the turn finds it by its metadata and answers in it, so the
    person sees one reply, not two."""
    import time

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.store import InFlight

    # A TTL long enough that a loaded machine cannot stall between the record and the first
    # look for a whole TTL (the bot's own sweeps run every TTL/3 beside the test's).
    stack = await start_stack(tmp_path=tmp_path, settings_overrides={"heartbeat_ttl": 5.0})
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", "anyone?")
        as_bot = AsyncWebClient(token=stack.slack.bot_token, base_url=stack.slack.api_url)
        await as_bot.chat_postMessage(
            channel="C0GENERAL",
            thread_ts=ts,
            text="Thinking…",
            metadata={"event_type": "agent_reply", "event_payload": {"turn": "turn-orphan", "page": 0}},
        )
        turn = {
            "team": "T0EMU", "channel": "C0GENERAL", "thread_ts": ts, "ts": ts, "user": "U0ALICE",
            "text": f"{BOT} anyone?", "event_id": "Ev2", "files": [], "turn_id": "turn-orphan",
            "message_ts": "", "attempt": 0,
        }  # fmt: skip
        await stack.bot.store.record_reply(
            InFlight(
                "turn-orphan", "T0EMU", "C0GENERAL", ts, "", "dead-replica", time.time(),
                user="U0ALICE", state="running", payload=json.dumps(turn),
            )
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stack.reply_text("C0GENERAL", ts) != "You said: anyone?":
            await stack.bot.recovery.sweep()
            await asyncio.sleep(0.1)
        replies = stack.slack.bot_replies("C0GENERAL", ts)
        assert [m.visible_text for m in replies] == ["You said: anyone?"]  # one message, reused
        assert await stack.bot.store.reply("turn-orphan") is None
    finally:
        await stack.close()


async def test_slack_refuses_malformed_message_metadata(tmp_path: Path) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    stack = await start_stack(tmp_path=tmp_path)
    try:
        as_bot = AsyncWebClient(token=stack.slack.bot_token, base_url=stack.slack.api_url)
        with pytest.raises(SlackApiError) as refused:
            await as_bot.chat_postMessage(channel="C0GENERAL", text="x", metadata={"event_payload": {}})
        assert refused.value.response["error"] == "invalid_metadata_format"
    finally:
        await stack.close()


def _undelivered_mention(stack: Any, text: str) -> tuple[str, dict[str, Any]]:
    """A mention Slack has, whose first delivery went to a process that then died."""
    events_url, stack.slack.events_url = stack.slack.events_url, None
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} {text}")
    stack.slack.events_url = events_url
    event = {
        "type": "app_mention", "user": "U0ALICE", "text": f"{BOT} {text}", "ts": ts,
        "channel": "C0GENERAL", "event_ts": ts, "team": "T0EMU",
    }  # fmt: skip
    return ts, stack.slack.event_envelope(event)


async def test_a_delivery_that_died_before_its_intake_is_taken_by_slacks_retry(tmp_path: Path) -> None:
    """The dead delivery's marks were pending (its turn never written): Slack's retry waits
    them out (seconds, inside Slack's 3 s) and the question is answered, once."""
    stack = await start_stack(tmp_path=tmp_path)
    try:
        ts, envelope = _undelivered_mention(stack, "are you there?")
        for name in (f"post:T0EMU:C0GENERAL:{ts}", f"event:{envelope['event_id']}"):
            assert await stack.bot.store.acquire_lease(name, "delivery:dead", 2.0)
        assert await stack.slack.redeliver(envelope, retry=1) == 200
        await stack.settle()
        assert [m.visible_text for m in stack.replies("C0GENERAL", ts)] == ["You said: are you there?"]
        assert await stack.slack.redeliver(envelope, retry=2) == 200  # now a plain duplicate
        await stack.settle()
        assert len(stack.replies("C0GENERAL", ts)) == 1 and run_count(stack) == 1
    finally:
        await stack.close()


async def test_a_delivery_that_died_after_its_intake_is_answered_once_by_recovery(tmp_path: Path) -> None:
    """The dead process wrote the turn, then died before marking the delivery done: Slack's
    retry finds the turn already taken in and takes nothing twice; recovery answers it."""
    import json
    import time

    from bot.slack.sink import Turn
    from bot.store import InFlight
    from bot.turns.orchestrator import turn_id_of

    # A TTL long enough that a loaded machine cannot stall between the record and the first
    # look for a whole TTL (the bot's own sweeps run every TTL/3 beside the test's).
    stack = await start_stack(tmp_path=tmp_path, settings_overrides={"heartbeat_ttl": 5.0})
    try:
        ts, envelope = _undelivered_mention(stack, "still there?")
        turn = Turn("T0EMU", "C0GENERAL", ts, ts, "U0ALICE", f"{BOT} still there?", envelope["event_id"])
        turn_id = turn_id_of(turn)
        payload = {
            **turn.to_json(),
            "turn_id": turn_id,
            "message_ts": "",
            "attempt": 0,
            "received_by": "dead",
        }
        await stack.bot.store.record_reply(
            InFlight(
                turn_id, "T0EMU", "C0GENERAL", ts, "", "dead", time.time(),
                user="U0ALICE", state="received", payload=json.dumps(payload),
            )
        )  # fmt: skip
        assert await stack.slack.redeliver(envelope, retry=1) == 200
        await stack.settle()
        assert stack.replies("C0GENERAL", ts) == []  # not taken twice: it belongs to the dead process

        async def recovered() -> bool:
            await stack.bot.recovery.sweep()
            return stack.reply_text("C0GENERAL", ts) == "You said: still there?"

        await eventually(recovered, "the dead process's turn answered by recovery", step=0.1)
        await stack.settle()
        assert len(stack.replies("C0GENERAL", ts)) == 1 and run_count(stack) == 1
    finally:
        await stack.close()


async def test_a_follow_up_waits_for_a_response_still_running_in_its_conversation(tmp_path: Path) -> None:
    """New agents: a replica that lost the conversation's lease may still be running a
    response in it. The service refuses a second response on the conversation
    (``conversation_locked``); the follow-up waits for the first to end and is answered on its
    own, never mixed into the other turn."""
    from openai import AsyncOpenAI

    slow = {"text": "slow " * 100, "deltas": 100, "delay": 0.05}
    script = {"turns": [{"match": "elsewhere", "repeat": True, "actions": [slow]}]}
    stack = await start_stack(script, tmp_path=tmp_path, backend="foundry")
    try:
        root = stack.slack.user_posts("U0ALICE", "C0GENERAL", "<@U0BOT> hello")
        await stack.settle()
        [conversation] = list(stack.agent.responses_api.conversations)
        async with AsyncOpenAI(base_url=f"{stack.agent.endpoint}/openai/v1", api_key="t") as other_replica:
            running = await other_replica.responses.create(
                conversation=conversation,
                input="elsewhere",
                background=True,
                extra_body={"agent_reference": {"type": "agent_reference", "name": "demo-agent"}},
            )
        stack.slack.user_posts("U0ALICE", "C0GENERAL", "and now?", thread_ts=root)
        await stack.settle(within_s=60)
        assert stack.agent.responses_api.responses[running.id].doc["status"] == "completed"
        replies = stack.replies("C0GENERAL", root)
        assert [r.visible_text for r in replies] == ["You said: hello", "You said: and now?"]
        tries = [
            b
            for m, p, b in stack.agent.requests
            if m == "POST" and p.endswith("/responses") and "and now?" in json.dumps(b)
        ]
        assert len(tries) >= 2  # refused while the other response ran, then taken
    finally:
        await stack.close()
