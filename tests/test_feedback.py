"""Thumbs up / down under every answer: the click is counted, kept in the audit trail with
the turn, agent and run, acknowledged to the clicker only; `python -m bot feedback` sums it
up per agent and per day, with the worst-rated answers linked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store import AuditQuery
from tests.stack import eventually

BOT = "<@U0BOT>"


def _feedback_buttons(message: Any) -> dict[str, Any] | None:
    for block in message.blocks or []:
        if block.get("type") == "context_actions":
            return block["elements"][0]
    return None


async def test_a_thumbs_up_and_down_are_recorded_and_summed_up(stack_factory: Any, tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    stack = await stack_factory()
    slack = stack.slack
    ts = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
    other = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} second question")
    await stack.settle()
    [answer] = slack.bot_replies("C0GENERAL", ts)
    buttons = _feedback_buttons(answer)
    assert buttons is not None and buttons["type"] == "feedback_buttons"
    good, bad = buttons["positive_button"]["value"], buttons["negative_button"]["value"]
    assert good.startswith("good|") and bad.startswith("bad|")
    action = buttons["action_id"]
    assert await slack.click("U0ALICE", "C0GENERAL", answer.ts, action, good) == 200
    assert await slack.click("U0BOB", "C0GENERAL", answer.ts, action, bad) == 200
    [second] = slack.bot_replies("C0GENERAL", other)
    second_bad = _feedback_buttons(second)["negative_button"]["value"]  # type: ignore[index]
    assert await slack.click("U0BOB", "C0GENERAL", second.ts, action, second_bad) == 200
    assert await slack.click("U0BOB", "C0GENERAL", second.ts, action, second_bad) == 200  # twice: one rating

    async def recorded() -> list[Any]:
        return await stack.bot.store.audit_entries(AuditQuery(kind="feedback"))

    await eventually(lambda: _len_at_least(recorded, 4), "four clicks in the audit trail")
    entries = await recorded()
    alice = next(e for e in entries if e.user == "U0ALICE")
    assert (alice.kind, alice.outcome, alice.tool, alice.channel) == (
        "feedback",
        "good",
        "default",
        "C0GENERAL",
    )
    assert alice.ids["message_ts"] == answer.ts and alice.ids["turn"] and alice.ids["run"]
    # acknowledged to the clicker only
    notes = [c.params for c in slack.calls_of("chat.postEphemeral")]
    assert {n["user"] for n in notes} == {"U0ALICE", "U0BOB"} and all("feedback" in n["text"] for n in notes)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{stack.ops_url}/metrics")).text
    assert 'bot_answer_feedback_total{rating="good"} 1.0' in metrics
    assert 'bot_answer_feedback_total{rating="bad"} 3.0' in metrics

    summary = await asyncio.to_thread(
        run_cli, "feedback", env={"BOT_STORE_URL": stack.bot.settings.store_url}
    )
    assert summary.returncode == 0, summary.stderr
    out = summary.stdout
    assert "3 rating(s) on 2 answer(s)" in out  # Bob's second click on the same answer counts once
    assert "default agent" in out and "good    1  bad    2  (33% good)" in out
    worst = [line.strip() for line in out.split("worst-rated answers:")[1].strip().splitlines()]
    # the most bad ratings first, then the fewest good: the second answer, then the first
    assert worst[0].startswith("bad 1 good 0  default agent  run ") and "run ?" not in worst[0]
    assert f"https://slack.com/archives/C0GENERAL/p{second.ts.replace('.', '')}" in worst[0]
    assert worst[1].startswith("bad 1 good 1") and answer.ts.replace(".", "") in worst[1]


async def _len_at_least(entries: Any, n: int) -> bool:
    return len(await entries()) >= n


async def test_only_answers_get_feedback_buttons(stack_factory: Any) -> None:
    """A reply that failed carries no thumbs (there is no answer to rate)."""
    stack = await stack_factory()
    stack.agent.fail_next("POST", "*/runs", 400, times=1, message="Invalid 'model': the model is gone.")
    stack.agent.fail_next("POST", "*/responses", 400, times=1, message="Invalid 'model': the model is gone.")
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
    await stack.settle()
    [reply] = stack.slack.bot_replies("C0GENERAL", ts)
    assert "hello" not in reply.visible_text and _feedback_buttons(reply) is None


async def test_slack_refuses_feedback_buttons_it_cannot_show() -> None:
    from bot.emulators.slack import SlackEmulator

    slack = SlackEmulator()
    await slack.start()
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    half = {
        "type": "feedback_buttons",
        "action_id": "f",
        "positive_button": {"text": {"type": "plain_text", "text": "+"}, "value": "g"},
    }
    try:
        for broken in (
            {"type": "context_actions", "elements": [half]},
            {"type": "context_actions", "elements": []},
            {"type": "context_actions", "elements": [{"type": "button", "action_id": "x"}]},
        ):
            with pytest.raises(SlackApiError) as refused:
                await client.chat_postMessage(channel="C0GENERAL", text="t", blocks=[broken])
            assert refused.value.response["error"] == "invalid_blocks"
    finally:
        await slack.stop()
