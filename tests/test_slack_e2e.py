"""End to end: a person in Slack, the real bot, the agent. Assertions are on what the
person sees (the Slack emulator's record of each message over time)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bot.emulators.agent_script import Script
from bot.emulators.slack import Limit, default_limits
from tests.conftest import WRITERS
from tests.stack import (
    agent_inputs,
    conversation_count,
    eventually,
    expected_run_tool_types,
    run_bodies,
    run_count,
    run_tool_types,
    set_agent_tools,
    start_stack,
    status_lines,
    stop_button,
    streamed,
    wait_for_prompt,
)

BOT = "<@U0BOT>"


# Events over HTTP and over Socket Mode, and replies written by each writer: edits, native
# streams, and auto mode in a workspace that refuses streams. (How events arrive and how
# replies are written are independent: Socket Mode runs with the default writer.)
SUITE_MODES = [("http", "edit"), ("socket", "edit"), *(("http", w) for w in WRITERS if w != "edit")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack_factory" in metafunc.fixturenames:
        metafunc.parametrize(("slack_mode", "writer"), SUITE_MODES, ids=["-".join(m) for m in SUITE_MODES])


async def test_mention_gets_a_threaded_streamed_reply(stack_factory: Any, writer: str) -> None:
    answer = "Here is a thorough answer that streams in over about two seconds, " * 4
    stack = await stack_factory(
        {"turns": [{"actions": [{"text": answer.strip(), "deltas": 20, "delay": 0.1}]}]}
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} explain please")
    await stack.settle()
    replies = stack.replies("C0GENERAL", ts)
    assert len(replies) == 1 and replies[0].thread_ts == ts
    assert replies[0].visible_text == answer.strip()
    history = replies[0].history
    intermediate = [h for h in history[1:-1] if h[2] and "Thinking" not in h[2][0]["text"]]
    assert len(intermediate) >= 3, [h[1][:30] for h in history]
    assert streamed(stack, "C0GENERAL", ts) == (writer == "native")
    if writer != "native":  # a stream shows Slack's own "working" state until its first words
        assert history[0][2][0]["text"] == "_Thinking…_"
    assert not any(b["type"] == "actions" for b in replies[0].blocks or [])  # Stop button gone
    # the agent got the message without the bot mention
    assert agent_inputs(stack) == [["explain please"]]


async def test_dm_is_answered_in_the_dm_thread(stack_factory: Any) -> None:
    stack = await stack_factory()
    ts = stack.slack.user_posts("U0ALICE", "D0ALICE", "hello from a DM")
    await stack.settle()
    assert stack.reply_text("D0ALICE", ts) == "You said: hello from a DM"


async def test_follow_up_without_mention_continues_the_same_agent_thread(
    stack_factory: Any,
) -> None:
    stack = await stack_factory()
    root = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} first question")
    await stack.settle()
    stack.slack.user_posts("U0ALICE", "C0GENERAL", "and a follow-up", thread_ts=root)
    await stack.settle()
    replies = stack.replies("C0GENERAL", root)
    assert [r.visible_text for r in replies] == [
        "You said: first question",
        "You said: and a follow-up",
    ]
    assert conversation_count(stack) == 1
    # a message in some other thread, without a mention, is not ours
    other = stack.slack.user_posts("U0BOB", "C0GENERAL", "unrelated root")
    stack.slack.user_posts("U0BOB", "C0GENERAL", "unrelated reply", thread_ts=other)
    await stack.settle()
    assert stack.replies("C0GENERAL", other) == []


async def test_retried_and_double_delivered_events_get_one_reply(stack_factory: Any) -> None:
    stack = await stack_factory()
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} once please")
    await stack.settle()
    # Slack retries the same event (same event_id) after a timeout
    mention = next(d for d in stack.slack.deliveries)
    envelope = stack.slack.event_envelope(
        {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": f"{BOT} once please",
            "ts": ts,
            "channel": "C0GENERAL",
            "event_ts": ts,
            "team": "T0EMU",
        },
        event_id=mention["event_id"],
    )
    assert await stack.slack.redeliver(envelope, retry=1) == 200
    # and the same post arrives again under a new event id (message.channels)
    fresh = stack.slack.event_envelope({**envelope["event"], "type": "message", "channel_type": "channel"})
    assert await stack.slack.redeliver(fresh, retry=0) == 200
    await stack.settle()
    assert len(stack.replies("C0GENERAL", ts)) == 1
    assert run_count(stack) == 1


async def test_the_bots_own_messages_and_edits_are_ignored(stack_factory: Any) -> None:
    stack = await stack_factory()
    ts = stack.slack.user_posts("U0ALICE", "D0ALICE", "hi")
    await stack.settle()
    # the bot's reply produced a message event back to the bot: no second turn
    assert run_count(stack) == 1
    stack.slack.user_posts("U0ALICE", "D0ALICE", "edited", subtype="message_changed")
    stack.slack.user_posts("U0ALICE", "D0ALICE", "joined", subtype="channel_join")
    await stack.settle()
    assert run_count(stack) == 1
    assert len(stack.replies("D0ALICE", ts)) == 1


async def test_a_very_long_answer_arrives_whole_across_messages(stack_factory: Any) -> None:
    paragraphs = []
    for i in range(85):
        paragraphs.append(f"Paragraph {i}: " + "words and more words " * 30)
        if i % 7 == 3:
            paragraphs.append(
                "```python\n" + "\n".join(f"value_{i}_{j} = {j} * 2" for j in range(40)) + "\n```"
            )
    answer = "\n\n".join(paragraphs)
    assert len(answer) > 60_000
    stack = await stack_factory({"turns": [{"actions": [{"text": answer, "deltas": 80, "delay": 0.01}]}]})
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} long one")
    await stack.settle(within_s=90)
    replies = stack.replies("C0GENERAL", ts)
    assert len(replies) >= 4
    texts = [r.visible_text for r in replies]
    for text in texts:
        assert len(text) <= 12_000
        assert text.count("```") % 2 == 0  # every message's code blocks are closed
    # stitched back together, nothing was lost
    stitched = "\n\n".join(texts)
    assert re.sub(r"\s+", " ", stitched) == re.sub(r"\s+", " ", answer)


async def test_a_429_storm_still_ends_complete(stack_factory: Any, writer: str) -> None:
    stack = await stack_factory(
        {"turns": [{"actions": [{"text": "storm-proof answer " * 20, "deltas": 30, "delay": 0.03}]}]}
    )
    final = "chat.stopStream" if writer == "native" else "chat.update"  # what ends the reply
    stack.slack.force_error(final, times=6, retry_after=1)
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} go")
    await stack.settle(within_s=60)
    assert stack.reply_text("C0GENERAL", ts) == "storm-proof answer " * 20
    assert sum(1 for c in stack.slack.calls_of(final) if c.status == 429) == 6


async def test_a_failed_run_shows_a_clear_line(stack_factory: Any) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Starting the answer"},
                        {
                            "fail": {
                                "code": "rate_limit_exceeded",
                                "message": "Rate limit is exceeded.",
                            }
                        },
                    ]
                }
            ]
        }
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} fail")
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    assert text.startswith("Starting the answer")
    assert "could not finish: Rate limit is exceeded. (`rate_limit_exceeded`)" in text


async def test_citations_become_links_and_sources(stack_factory: Any) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Slack limits edits"},
                        {
                            "citation": {
                                "url": "https://api.slack.com/apis/rate-limits",
                                "title": "Rate limits",
                            }
                        },
                        {"text": "."},
                    ]
                }
            ]
        }
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} cite")
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    assert "【" not in text
    assert text.startswith("Slack limits edits[1](https://api.slack.com/apis/rate-limits).")
    source = "1. [Rate limits](https://api.slack.com/apis/rate-limits) (api.slack.com)"
    assert text.endswith("**Sources**\n" + source)
    for message in stack.slack.messages["C0GENERAL"]:
        for _, shown, _ in message.history:
            assert "【" not in shown


async def test_stop_button_cancels_the_run(stack_factory: Any, writer: str) -> None:
    stack = await stack_factory(
        {"turns": [{"actions": [{"text": "a long and slow answer " * 10, "deltas": 40, "delay": 0.1}]}]}
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} slow")
    await eventually(
        lambda: stop_button(stack, "C0GENERAL", ts) and run_count(stack), "a Stop button on a running reply"
    )
    where, value = stop_button(stack, "C0GENERAL", ts) or ("", "")
    if writer == "native":  # a stream carries no buttons: Stop went to Alice alone
        assert stop_button(stack, "C0GENERAL", ts, user="U0BOB") is None
        assert stack.slack.ephemeral("C0GENERAL", where) is not None
    else:  # someone else cannot stop it
        assert await stack.slack.click("U0BOB", "C0GENERAL", where, "stop_run", value) == 200

        # acked at once, answered privately in the background
        def told_bob() -> list[Any]:
            return [c for c in stack.slack.calls_of("chat.postEphemeral") if c.params.get("user") == "U0BOB"]

        await eventually(told_bob, "Bob told privately")
        assert told_bob()[0].params["text"] == "Only <@U0ALICE> (or an admin) can stop this reply."
    assert run_count(stack) == 1 and not stack.reply_text("C0GENERAL", ts).endswith("_Stopped._")
    assert await stack.slack.click("U0ALICE", "C0GENERAL", where, "stop_run", value) == 200
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    assert text.endswith("_Stopped._") and len(text) < len("a long and slow answer " * 10)
    if stack.bot.settings.backend == "classic":  # classic runs are cancelled on the service too
        assert next(iter(stack.agent.runs.values())).status == "cancelled"
    if writer == "native":  # the private Stop gave way to what became of it
        await eventually(lambda: not stop_button(stack, "C0GENERAL", ts), "the private Stop replaced")
        assert [e["text"] for e in stack.slack.ephemerals_for("U0ALICE", "C0GENERAL")] == ["Stopping…"]


async def test_twenty_concurrent_conversations_no_cross_talk(stack_factory: Any) -> None:
    # Slack's documented rates are floors; this workspace allows more, as real ones do,
    # and the pacer finds that out by probing. (Strict documented limits: the bench.)
    limits = default_limits()
    limits["chat.update"] = Limit(300, 20)
    stack = await stack_factory(
        slack_kwargs={"limits": limits}, settings_overrides={"user_runs_per_minute": 100}
    )
    channels = ["C0GENERAL", "C0ONE", "C0TWO", "C0THREE"]
    for channel in channels[1:]:
        stack.slack.add_channel(channel, channel.lower())
    roots = {}
    for i in range(20):
        channel = channels[i % len(channels)]
        roots[i] = (
            channel,
            stack.slack.user_posts("U0ALICE", channel, f"{BOT} conversation number {i}"),
        )
    await stack.settle(within_s=120)
    for i, (channel, ts) in roots.items():
        assert stack.reply_text(channel, ts) == f"You said: conversation number {i}"
    assert conversation_count(stack) == 20


async def test_second_message_waits_its_turn_instead_of_thread_busy(stack_factory: Any) -> None:
    stack = await stack_factory({"delay": 0.05, "turns": []})
    root = stack.slack.user_posts("U0ALICE", "D0ALICE", "first")
    await eventually(lambda: stack.replies("D0ALICE", root), "the first answer under way")
    stack.slack.user_posts("U0ALICE", "D0ALICE", "second", thread_ts=root)
    await stack.settle()
    assert [r.visible_text for r in stack.replies("D0ALICE", root)] == [
        "You said: first",
        "You said: second",
    ]


async def test_first_mention_in_a_human_thread_brings_context(stack_factory: Any) -> None:
    stack = await stack_factory()
    root = stack.slack.user_posts(
        "U0BOB", "C0GENERAL", "Our deploy failed with <https://ci.example/1|build 1> &amp; logs"
    )
    stack.slack.user_posts("U0ALICE", "C0GENERAL", "I saw it too", thread_ts=root)
    stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} what do you think?", thread_ts=root)
    await stack.settle()
    (contents,) = agent_inputs(stack)
    assert contents[0].startswith("Earlier messages in this Slack thread")
    assert "@bob: Our deploy failed with build 1 (https://ci.example/1) & logs" in contents[0]
    assert "@alice: I saw it too" in contents[0]
    assert contents[1] == "what do you think?"


class WeatherTools:
    """A minimal ToolRunner (the plugin registry provides the real one)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.contexts: list[Any] = []
        self.until: Any = None  # runs until this holds (a status line seen), when set

    async def definitions(self, context: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ]

    async def run(self, calls: Any, context: Any, ids: Any = None) -> list[dict[str, str]]:
        self.contexts.append(context)
        if self.until is not None:
            await eventually(self.until, "the status line shown while the tool runs")
        if self.fail:
            raise RuntimeError("tool runner bug")
        return [{"tool_call_id": call.id, "output": "sunny, 21C"} for call in calls]


async def test_a_tool_call_shows_a_status_line_then_the_answer(stack_factory: Any) -> None:
    tools = WeatherTools()
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Let me check."},
                        {"tool_calls": [{"name": "get_weather", "arguments": {}}]},
                        {"text": "It is ${output}."},
                    ]
                }
            ]
        },
        tools=tools,
    )
    set_agent_tools(stack, [{"type": "code_interpreter"}])
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} weather?")
    tools.until = lambda: any("Running get_weather" in line for line in status_lines(stack, "C0GENERAL", ts))
    await stack.settle()
    reply = stack.replies("C0GENERAL", ts)[0]
    assert any("Running get_weather" in line for line in status_lines(stack, "C0GENERAL", ts))
    assert reply.visible_text == "Let me check.\n\nIt is sunny, 21C."
    assert run_tool_types(run_bodies(stack)[0]) == expected_run_tool_types(
        stack, ["code_interpreter", "function"]
    )  # nothing lost
    assert tools.contexts[0].user_id == "U0ALICE" and tools.contexts[0].thread_ts == ts


async def test_our_own_failure_shows_a_reference(
    stack_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Partial"},
                        {"tool_calls": [{"name": "get_weather", "arguments": {}}]},
                    ]
                }
            ]
        },
        tools=WeatherTools(fail=True),
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} weather?")
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    match = re.search(r"Something went wrong \(ref: ([0-9a-f]{8})\)", text)
    assert text.startswith("Partial") and match
    assert any(getattr(r, "fields", {}).get("ref") == match.group(1) for r in caplog.records)


async def test_a_stream_that_breaks_still_ends_with_the_whole_answer(stack_factory: Any) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "The first half, "},
                        {"disconnect": True},
                        {"text": "and the second half.", "delay": 0.05},
                    ]
                }
            ]
        }
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} go")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "The first half, and the second half."


async def test_a_stream_that_breaks_before_a_tool_call_goes_on_with_the_tool(stack_factory: Any) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"text": "Checking. "},
                        {"disconnect": True},
                        {"tool_calls": [{"name": "get_weather", "arguments": {}}]},
                        {"text": "It is ${output}."},
                    ]
                }
            ]
        },
        tools=WeatherTools(),
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} weather after a drop")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "Checking. \n\nIt is sunny, 21C."


class SlowTools:
    """A tool that runs until released: Stop (or a deadline) arrives while it runs."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.started = asyncio.Event()
        self.seconds = seconds

    async def definitions(self, context: Any) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": "slow_lookup", "parameters": {"type": "object"}}}]

    async def run(self, calls: Any, context: Any, ids: Any = None) -> list[dict[str, str]]:
        self.started.set()
        await asyncio.sleep(self.seconds)
        return [{"tool_call_id": call.id, "output": "done"} for call in calls]


async def test_stop_during_a_tool_round_then_a_follow_up_is_answered(stack_factory: Any) -> None:
    tools = SlowTools()
    stack = await stack_factory(
        {
            "turns": [
                {
                    "match": "look",
                    "actions": [
                        {"tool_calls": [{"name": "slow_lookup", "arguments": {}}]},
                        {"text": "Found ${output}."},
                    ],
                },
                {"match": "again", "actions": [{"text": "Here I am again."}]},
            ]
        },
        tools=tools,
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} look it up")
    await asyncio.wait_for(tools.started.wait(), 20)
    await eventually(lambda: stop_button(stack, "C0GENERAL", ts), "a Stop button on the running reply")
    where, value = stop_button(stack, "C0GENERAL", ts) or ("", "")
    assert await stack.slack.click("U0ALICE", "C0GENERAL", where, "stop_run", value) == 200
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts).endswith("_Stopped._")
    stack.slack.user_posts("U0ALICE", "C0GENERAL", "again please", thread_ts=ts)
    await stack.settle()
    replies = stack.replies("C0GENERAL", ts)
    assert replies[-1].visible_text == "Here I am again."
    if stack.bot.settings.backend == "foundry":  # the call was answered before the thread went on
        outputs = [i for items in stack.agent.responses_api.items.values() for i in items]
        answered = [i for i in outputs if i.get("type") == "function_call_output"]
        assert answered and answered[0]["output"] == "error: cancelled by the user"


async def test_slack_context_reaches_the_agent_with_every_turn(stack_factory: Any) -> None:
    stack = await stack_factory()
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
    await stack.settle()
    body = run_bodies(stack)[0]
    if stack.bot.settings.backend == "foundry":
        context = body["input"][0]
        assert context["role"] == "developer"
        text = context["content"]
    else:
        text = body["additional_instructions"]
    assert "U0ALICE" in text and "Europe/London" in text and "C0GENERAL" in text
    assert stack.reply_text("C0GENERAL", ts) == "You said: hello"


async def test_classic_a_tool_round_that_would_outlast_the_run_is_declined_in_time(tmp_path: Path) -> None:
    tools = SlowTools(seconds=60)
    stack = await start_stack(
        {
            "turns": [
                {
                    "actions": [
                        {"tool_calls": [{"name": "slow_lookup", "arguments": {}}]},
                        {"text": "Tool said: ${output}"},
                    ]
                }
            ]
        },
        tmp_path=tmp_path,
        tools=tools,
        agent_kwargs={"action_expiry_s": 8},
    )
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} look it up")
        await stack.settle(within_s=40)
        text = stack.reply_text("C0GENERAL", ts)
        assert "Tool said: error: not run: the agent's run would expire" in text
        run = next(iter(stack.agent.runs.values()))
        assert run.status == "completed"  # the outputs arrived before the run's own deadline
    finally:
        await stack.close()


async def test_classic_runs_expire_at_their_own_expires_at_and_refuse_late_outputs() -> None:
    from bot.agents.classic import AgentsClient
    from bot.agents.errors import BadRequestError
    from bot.emulators.agents import AgentServiceEmulator

    script = Script.parse(
        {"turns": [{"actions": [{"tool_calls": [{"name": "slow_lookup", "arguments": {}}]}]}]}
    )
    async with AgentServiceEmulator(script, action_expiry_s=1) as agent:
        async with AgentsClient(agent.endpoint, "t") as client:
            thread = await client.create_thread()
            await client.add_message(thread.id, "go")
            stream = await client.stream_run(thread.id, "asst_demo")
            async with stream:
                names = [name async for name, _ in stream]
            assert "thread.run.requires_action" in names and stream.expires_at is not None
            waiting = await client.get_run(thread.id, stream.run_id or "")
            await agent.wait_run(waiting.id, limit=5)
            with pytest.raises(BadRequestError) as late:
                await client.submit_tool_outputs_stream(
                    thread.id, waiting.id, [{"tool_call_id": waiting.tool_calls[0].id, "output": "x"}]
                )
            assert late.value.message == 'Runs in status "expired" do not accept tool outputs.'
            assert (await client.get_run(thread.id, waiting.id)).status == "expired"


async def test_new_agents_mcp_approval_is_asked_in_slack_and_answered(tmp_path: Path) -> None:
    script = {
        "turns": [
            {
                "actions": [
                    {
                        "mcp_approval": {
                            "server_label": "docs",
                            "name": "search",
                            "arguments": {"q": "pricing"},
                        }
                    },
                    {"text": "The search was ${output}."},
                ]
            }
        ]
    }
    stack = await start_stack(script, tmp_path=tmp_path, backend="foundry")
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} search the docs")
        prompt, key = await wait_for_prompt(stack, "C0GENERAL", ts)
        assert "*docs: search*" in prompt.text and "pricing" in str(prompt.blocks)
        assert await stack.slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
        await stack.settle()
        assert stack.replies("C0GENERAL", ts)[0].visible_text == "The search was approved."
        sent = [b for m, p, b in stack.agent.requests if p.endswith("/responses")][-1]
        assert sent["input"][0]["type"] == "mcp_approval_response" and sent["input"][0]["approve"] is True
        from bot.store import AuditQuery

        [decided] = await stack.bot.store.audit_entries(AuditQuery())  # in the audit trail too
        assert (decided.kind, decided.tool, decided.user) == ("approval", "docs: search", "U0ALICE")
        assert (decided.outcome, decided.approval, decided.approver) == ("approved", "approved", "U0ALICE")
        assert decided.ids["approval_id"] == sent["input"][0]["approval_request_id"]
    finally:
        await stack.close()


async def test_new_agents_a_conversation_too_long_offers_a_fresh_thread(tmp_path: Path) -> None:
    stack = await start_stack(
        tmp_path=tmp_path, backend="foundry", agent_kwargs={"context_limit_chars": 1500}
    )
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
        await stack.settle()
        stack.slack.user_posts("U0ALICE", "C0GENERAL", "x" * 2000, thread_ts=ts)
        await stack.settle()
        last = stack.replies("C0GENERAL", ts)[-1].visible_text
        assert "too long for the agent" in last and "new thread" in last
    finally:
        await stack.close()
