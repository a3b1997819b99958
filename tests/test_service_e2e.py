"""Run as a service, in one process: faults through the emulators, security, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.stack import eventually

BOT = "<@U0BOT>"


async def test_500_on_run_create_is_retried_and_the_reply_completes(stack_factory: Any) -> None:
    stack = await stack_factory()
    stack.agent.fail_next("POST", "/threads/*/runs", 500, times=2)
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} still works")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "You said: still works"


async def test_a_429_storm_on_the_agent_ends_with_a_clear_line(stack_factory: Any) -> None:
    # busy past the retry deadline (kept short here): retries end at a deadline, not a count
    storm = [{"status": 429, "retry_after": 0.01}] * 1000
    stack = await stack_factory(
        {"turns": [{"reject": storm, "actions": [{"text": "never"}]}]},
        settings_overrides={"agents_retry_seconds": 1.0},
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} busy?")
    await stack.settle()
    assert (
        stack.reply_text("C0GENERAL", ts)
        == "_The agent service is busy right now. Please try again in a minute._"
    )


async def test_a_slow_slack_still_gets_the_whole_answer(stack_factory: Any) -> None:
    answer = "Slow networks deserve complete answers too. " * 8
    stack = await stack_factory(
        {"turns": [{"actions": [{"text": answer, "deltas": 30, "delay": 0.02}]}]},
        slack_kwargs={"latency": 0.25},
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} slowly")
    await stack.settle(within_s=60)
    assert stack.reply_text("C0GENERAL", ts) == answer


async def test_mass_mentions_are_defused(stack_factory: Any) -> None:
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {
                            "text": "Attention <!channel> and <!here|here> and @everyone "
                            "and <!subteam^S01|@oncall>!"
                        }
                    ]
                }
            ]
        }
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} ping everyone")
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    assert "<!" not in text and "@everyone" not in text
    assert text == "Attention @\u200bchannel and @\u200bhere and @\u200beveryone and @\u200boncall!"


async def test_allow_lists_keep_the_bot_out_of_other_channels(stack_factory: Any) -> None:
    stack = await stack_factory(settings_overrides={"allowed_channels": "C0GENERAL"})
    stack.slack.add_channel("C0OTHER", "other")
    here = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} here")
    there = stack.slack.user_posts("U0ALICE", "C0OTHER", f"{BOT} there")
    dm = stack.slack.user_posts("U0ALICE", "D0ALICE", "a DM is fine")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", here) == "You said: here"
    assert stack.replies("C0OTHER", there) == []
    assert stack.reply_text("D0ALICE", dm) == "You said: a DM is fine"


async def test_run_limits_answer_with_a_friendly_private_note(stack_factory: Any) -> None:
    stack = await stack_factory(settings_overrides={"user_runs_per_minute": 2})
    roots = [stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} n{i}") for i in range(3)]
    await stack.settle()
    answered = [ts for ts in roots if stack.replies("C0GENERAL", ts)]
    assert len(answered) == 2
    notes = [c for c in stack.slack.calls_of("chat.postEphemeral") if c.params.get("user") == "U0ALICE"]
    assert len(notes) == 1 and "faster than I can answer" in notes[0].params["text"]


async def test_oversized_requests_are_refused(stack_factory: Any) -> None:
    stack = await stack_factory()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.url}/slack/events",
            content=b"x" * (1024 * 1024 + 1),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert stack.agent.runs == {}


async def test_metrics_count_turns_and_first_writes(stack_factory: Any) -> None:
    stack = await stack_factory()
    stack.slack.force_error("chat.update", times=1, retry_after=1)
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} count me")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "You said: count me"
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"{stack.ops_url}/metrics")).text
    assert "bot_turns_started_total 1.0" in page
    assert 'bot_turns_ended_total{outcome="completed"} 1.0' in page
    assert "bot_time_to_first_write_seconds_count 1.0" in page
    assert "bot_slack_rate_limited_total 1.0" in page
    assert "bot_active_streams 0.0" in page


async def test_graceful_shutdown_marks_what_it_cannot_finish(stack_factory: Any) -> None:
    stack = await stack_factory(
        {"turns": [{"actions": [{"text": "a slow reply " * 30, "deltas": 30, "delay": 0.2}]}]}
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} slow")
    await eventually(lambda: stack.bot.orchestrator.answering, "the reply being answered")
    await stack.bot.shutdown(grace_s=0.3)
    text = stack.reply_text("C0GENERAL", ts)
    assert text.endswith("_This reply was interrupted (the bot was stopping). Please ask again._")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{stack.url}/healthz")).status_code == 503
    stack.bot.aclose = _noop  # type: ignore[method-assign]  # already closed by shutdown


async def _noop() -> None:
    return None


async def test_tool_calls_are_counted_by_outcome(stack_factory: Any, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "t.py").write_text(
        "from bot.plugins import tool\n\n@tool\ndef ok() -> str:\n    '''Ok.'''\n    return 'fine'\n\n"
        "@tool\ndef bad() -> str:\n    '''Bad.'''\n    raise ValueError('no')\n"
    )
    stack = await stack_factory(
        {
            "turns": [
                {
                    "actions": [
                        {"tool_calls": [{"name": "ok"}, {"name": "bad"}, {"name": "ok", "arguments": "{x"}]},
                        {"text": "done"},
                    ]
                }
            ]
        },
        tools_dir=str(tools),
    )
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} tools")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == "done"
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"{stack.ops_url}/metrics")).text
    for outcome in ("ok", "error", "invalid"):
        assert f'bot_tool_calls_total{{outcome="{outcome}"}} 1.0' in page
