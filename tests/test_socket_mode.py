"""The bot in Socket Mode, as deployed (its own process), against the Slack emulator's
Socket Mode: a one-use websocket URL from ``apps.connections.open``, ``hello``, envelopes
acked within 3 s, retried when not, and connections that drop or are asked to refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.devstack.processes import BotProcess, start_bot
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator
from tests.stack import eventually

BOT = "<@U0BOT>"


@pytest.fixture
async def socket_bot(tmp_path: Path, backend: str) -> AsyncIterator[tuple[SlackEmulator, BotProcess]]:
    agent = AgentServiceEmulator()
    await agent.start()
    # Slack retries an event nearly at once, after 1 minute and after 5 (Events API docs):
    # compressed here, still longer than a reconnect takes
    slack = SlackEmulator(retry_delays=(1.0, 10.0, 30.0))
    await slack.start()
    bot = await start_bot(
        agent,
        slack,
        f"sqlite:///{tmp_path}/bot.db",
        str(tmp_path / "bot.log"),
        backend=backend,
        mode="socket",
    )
    await eventually(lambda: slack.sockets.connections, "a socket connected", within_s=10)
    yield slack, bot
    bot.terminate()
    assert await bot.wait(30) == 0
    await slack.stop()
    await agent.stop()


def answered(slack: SlackEmulator, channel: str, ts: str, text: str) -> bool:
    return any(m.visible_text == text for m in slack.bot_replies(channel, ts))


async def test_a_mention_over_socket_mode_is_acked_and_answered(socket_bot: Any) -> None:
    slack, _ = socket_bot
    ts = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello over a socket")
    await eventually(
        lambda: answered(slack, "C0GENERAL", ts, "You said: hello over a socket"),
        "the answer over the socket",
    )
    events = [e for e in slack.sockets.envelopes if e["type"] == "events_api"]
    # every event (the mention arrives as app_mention and as message) went over the socket,
    # none over HTTP (there is no Request URL), and each was acked: the first time, or (a
    # machine loaded past Slack's 3 s) when Slack delivered it again, still answered once.
    # How fast the intake acks is a figure of bench/intake.py, not a clock in this test.
    assert slack.events_url is None and not slack.events_urls
    assert len(slack.deliveries) == len(events) >= 2
    tries: dict[str, list[dict[str, Any]]] = {}
    for delivery in slack.deliveries:
        tries.setdefault(delivery["event_id"], []).append(delivery)
    assert len(tries) >= 2 and all(any(d["status"] == 200 for d in each) for each in tries.values())
    assert [m.visible_text for m in slack.bot_replies("C0GENERAL", ts)] == ["You said: hello over a socket"]


async def test_a_slash_command_and_a_button_over_socket_mode(socket_bot: Any) -> None:
    slack, _ = socket_bot
    listing = await slack.slash_command("U0ALICE", "C0GENERAL", "/agent-tools")
    assert listing["status"] == 200 and listing["text"].startswith(
        "No tools are installed."
    )  # the ack's payload
    ts = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hi")
    await eventually(
        lambda: answered(slack, "C0GENERAL", ts, "You said: hi"), "the answer after the reconnect"
    )
    # a Stop left on a message for a turn this bot has no record of (the emulator sends only
    # clicks on buttons that are there)
    as_bot = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    stop = {
        "type": "button",
        "action_id": "stop_run",
        "value": "no-such-turn",
        "text": {"type": "plain_text", "text": "Stop"},
    }
    stale = await as_bot.chat_postMessage(
        channel="C0GENERAL", thread_ts=ts, text="working", blocks=[{"type": "actions", "elements": [stop]}]
    )
    status = await slack.click("U0ALICE", "C0GENERAL", stale["ts"], "stop_run", "no-such-turn")
    assert status == 200  # acked; a Stop for a finished (or unknown) reply answers privately
    await eventually(
        lambda: any(c.method == "chat.postEphemeral" for c in slack.calls), "a private note sent"
    )
    [note] = [c for c in slack.calls if c.method == "chat.postEphemeral"]
    assert note.params["user"] == "U0ALICE" and note.params["text"] == "This reply has already finished."


async def test_a_dropped_socket_is_reconnected_and_no_event_is_lost(socket_bot: Any) -> None:
    slack, _ = socket_bot
    opened = slack.sockets.opened
    slack.sockets.drop()  # the network fails: no close frame
    posts = [slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} while down {i}") for i in range(3)]
    expected = [(ts, f"You said: while down {i}") for i, ts in enumerate(posts)]
    everything = lambda: all(answered(slack, "C0GENERAL", ts, text) for ts, text in expected)  # noqa: E731
    await eventually(everything, "every event answered", within_s=60)
    assert slack.sockets.opened > opened  # it came back on a fresh connection


async def test_a_refresh_request_moves_the_bot_to_a_new_connection(socket_bot: Any) -> None:
    slack, _ = socket_bot
    opened = slack.sockets.opened
    await slack.sockets.disconnect("refresh_requested")
    await eventually(lambda: slack.sockets.opened > opened, "a new socket opened", within_s=30)
    ts = slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} after the refresh")
    await eventually(
        lambda: answered(slack, "C0GENERAL", ts, "You said: after the refresh"),
        "the answer after the refresh",
    )


async def test_tokens_are_not_interchangeable() -> None:
    async with SlackEmulator() as slack:
        as_bot = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        with pytest.raises(SlackApiError) as refused:
            await as_bot.apps_connections_open(app_token=slack.bot_token)
        assert refused.value.response["error"] == "not_allowed_token_type"
        as_app = AsyncWebClient(token=slack.app_token, base_url=slack.api_url)
        with pytest.raises(SlackApiError) as refused:
            await as_app.chat_postMessage(channel="C0GENERAL", text="hi")
        assert refused.value.response["error"] == "not_allowed_token_type"
        opened = await as_app.apps_connections_open(app_token=slack.app_token)
        assert opened["url"].startswith("ws://") and "ticket=" in opened["url"]
