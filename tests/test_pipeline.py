"""The turn pipeline's promises (issue 12): no message dropped whatever Slack does, bounded
work per turn, queue correctness, approvals across replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.emulators.slack import Limit, default_limits
from tests.stack import start_stack

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
