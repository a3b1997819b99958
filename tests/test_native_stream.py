"""Native streaming: the emulator's ``chat.*Stream`` methods as Slack answers them (through the
real ``slack_sdk`` client), and the bot's replies streamed natively end to end, falling back
to edits wherever a stream cannot carry the reply, with nothing lost or shown twice."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.emulators.slack import SlackEmulator
from bot.slack.reply_thread import REPLY_EVENT
from tests.stack import Stack, agent_inputs, eventually, start_stack, stop_button

BOT = "<@U0BOT>"


@pytest.fixture
async def slack() -> Any:
    async with SlackEmulator() as emulator:
        yield emulator


def _client(slack: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def _refused(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


# -- the emulator, as Slack answers ------------------------------------------------------------


async def test_a_stream_in_a_channel_names_its_recipient_and_a_dm_need_not(slack: SlackEmulator) -> None:
    client = _client(slack)
    root = slack.user_posts("U0ALICE", "C0GENERAL", "question")
    start = client.chat_startStream
    assert await _refused(start(channel="C0GENERAL", thread_ts=root)) == "missing_recipient_user_id"
    assert (
        await _refused(start(channel="C0GENERAL", thread_ts=root, recipient_user_id="U0ALICE"))
        == "missing_recipient_team_id"
    )
    assert await _refused(start(channel="C0GENERAL", thread_ts="", recipient_user_id="U0ALICE")) in (
        "invalid_arguments",
        "missing_recipient_team_id",
    )
    started = await start(
        channel="C0GENERAL", thread_ts=root, recipient_user_id="U0ALICE", recipient_team_id="T0EMU"
    )
    assert slack.find("C0GENERAL", started["ts"]).thread_ts == root
    dm_root = slack.user_posts("U0ALICE", "D0ALICE", "question")
    assert (await start(channel="D0ALICE", thread_ts=dm_root, markdown_text="Hi"))["ok"]


async def test_appends_grow_the_message_and_the_stop_adds_blocks_and_metadata(slack: SlackEmulator) -> None:
    client = _client(slack)
    root = slack.user_posts("U0ALICE", "D0ALICE", "question")
    ts = (await client.chat_startStream(channel="D0ALICE", thread_ts=root, markdown_text="Hello"))["ts"]
    await client.chat_appendStream(channel="D0ALICE", ts=ts, markdown_text=", world")
    card = {"type": "task_update", "id": "t1", "title": "Running lookup", "status": "in_progress"}
    await client.chat_appendStream(channel="D0ALICE", ts=ts, chunks=[card])
    assert slack.stream_of("D0ALICE", ts).tasks["t1"]["status"] == "in_progress"
    wrong = {**card, "status": "completed"}  # Slack's word is "complete"
    assert await _refused(client.chat_appendStream(channel="D0ALICE", ts=ts, chunks=[wrong])) == (
        "invalid_arguments"
    )
    assert await _refused(client.chat_appendStream(channel="D0ALICE", ts=ts, markdown_text="")) == "no_text"
    too_long = "x" * 12_001
    assert await _refused(client.chat_appendStream(channel="D0ALICE", ts=ts, markdown_text=too_long)) == (
        "msg_too_long"
    )
    meta = {"event_type": REPLY_EVENT, "event_payload": {"turn": "t", "page": 0}}
    button = {
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Ok"}}],
    }
    button["elements"][0]["action_id"] = "ok"
    await client.chat_stopStream(
        channel="D0ALICE",
        ts=ts,
        markdown_text="!",
        chunks=[{**card, "status": "complete"}],
        blocks=[button],
        metadata=meta,
    )
    message = slack.find("D0ALICE", ts)
    assert message.visible_text == "Hello, world!" and message.blocks[-1] == button
    assert message.metadata == meta and slack.stream_of("D0ALICE", ts).tasks["t1"]["status"] == "complete"
    assert [h[1] for h in message.history] == ["Hello", "Hello, world", "Hello, world", "Hello, world!"]
    after = client.chat_appendStream(channel="D0ALICE", ts=ts, markdown_text="more")
    assert await _refused(after) == "message_not_in_streaming_state"


async def test_slack_ends_a_long_stream_and_an_edit_still_shows_the_text(slack: SlackEmulator) -> None:
    client = _client(slack)
    slack.stream_lifetime_s = 0.2
    root = slack.user_posts("U0ALICE", "D0ALICE", "question")
    ts = (await client.chat_startStream(channel="D0ALICE", thread_ts=root, markdown_text="Part"))["ts"]
    await eventually(
        lambda: time.monotonic() - slack.stream_of("D0ALICE", ts).started > 0.2, "the stream ended"
    )
    late = client.chat_appendStream(channel="D0ALICE", ts=ts, markdown_text=" two")
    assert await _refused(late) == "message_not_in_streaming_state"
    assert (
        await _refused(client.chat_stopStream(channel="D0ALICE", ts=ts)) == "message_not_in_streaming_state"
    )
    part_two = [{"type": "markdown", "text": "Part two"}]
    await client.chat_update(channel="D0ALICE", ts=ts, text="Part two", blocks=part_two)
    assert slack.find("D0ALICE", ts).visible_text == "Part two"


async def test_a_workspace_without_streaming_refuses_it_and_others_messages_are_not_ours(
    slack: SlackEmulator,
) -> None:
    client = _client(slack)
    root = slack.user_posts("U0ALICE", "D0ALICE", "question")
    assert await _refused(client.chat_appendStream(channel="D0ALICE", ts=root, markdown_text="x")) == (
        "message_not_owned_by_app"
    )
    assert await _refused(client.chat_appendStream(channel="D0ALICE", ts="1.000000", markdown_text="x")) == (
        "message_not_found"
    )
    slack.refuse_native_streaming("T0EMU")
    assert (
        await _refused(client.chat_startStream(channel="D0ALICE", thread_ts=root)) == "not_allowed_token_type"
    )


async def test_an_ephemeral_button_is_clicked_by_its_one_person_and_changed_only_by_response_url(
    slack: SlackEmulator,
) -> None:
    """A streamed reply's Stop is sent privately: only its recipient can click it, no API call
    edits it, and the click's ``response_url`` replaces it (five uses at most)."""
    import httpx

    from bot.emulators.slack_ephemeral import ResponseTarget

    client = _client(slack)
    root = slack.user_posts("U0ALICE", "C0GENERAL", "question")
    button = {
        "type": "button",
        "action_id": "stop_run",
        "value": "t1",
        "text": {"type": "plain_text", "text": "Stop"},
    }
    posted = await client.chat_postEphemeral(
        channel="C0GENERAL",
        user="U0ALICE",
        thread_ts=root,
        text="Stop?",
        blocks=[{"type": "actions", "elements": [button]}],
    )
    ts = posted["message_ts"]
    assert slack.find("C0GENERAL", ts) is None  # not a message: nobody else sees it
    assert (
        await _refused(client.chat_update(channel="C0GENERAL", ts=ts, text="edited")) == "message_not_found"
    )
    with pytest.raises(ValueError, match="does not see"):
        await slack.click("U0BOB", "C0GENERAL", ts, "stop_run", "t1")
    ephemeral = slack.ephemeral("C0GENERAL", ts)
    url = slack.response_url(ResponseTarget("U0ALICE", "C0GENERAL", root, ts, ephemeral))
    async with httpx.AsyncClient() as http:
        assert (
            await http.post(url, json={"text": "", "replace_original": True})
        ).status_code == 400  # no_text
        answered = await http.post(url, json={"text": "Stopping…", "replace_original": True})
        assert answered.status_code == 200 and answered.text == "ok"
        assert [e["text"] for e in slack.ephemerals_for("U0ALICE", "C0GENERAL")] == ["Stopping…"]
        with pytest.raises(ValueError, match="nobody can click it"):  # the button gave way
            await slack.click("U0ALICE", "C0GENERAL", ts, "stop_run", "t1")
        for _ in range(4):
            assert (await http.post(url, json={"text": "again"})).status_code == 200
        assert (await http.post(url, json={"text": "once too often"})).status_code == 404
        assert (await http.post(slack.base_url + "/response/forged", json={"text": "x"})).status_code == 404
    assert len(slack.ephemerals_for("U0ALICE", "C0GENERAL")) == 5  # the replaced one, four new
    # a click on an ordinary message: its response_url edits, then deletes, that message
    message = await client.chat_postMessage(channel="C0GENERAL", thread_ts=root, text="Pick one")
    url = slack.response_url(ResponseTarget("U0ALICE", "C0GENERAL", root, message["ts"], None))
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json={"text": "Picked", "replace_original": True})).status_code == 200
        assert slack.find("C0GENERAL", message["ts"]).text == "Picked"
        assert (await http.post(url, json={"delete_original": True})).status_code == 200
        assert slack.find("C0GENERAL", message["ts"]).deleted


# -- the bot, streaming natively -----------------------------------------------------------------


async def _stack(tmp_path: Path, script: Any, mode: str, **kwargs: Any) -> Stack:
    overrides = {"stream_mode": mode, **kwargs.pop("settings_overrides", {})}
    return await start_stack(script, tmp_path=tmp_path, settings_overrides=overrides, **kwargs)


def _methods(stack: Stack) -> list[str]:
    return [c.method for c in stack.slack.calls if c.ok and c.method.startswith("chat.")]


ANSWER = "A native answer that streams in over a second or so, word by word. " * 3


async def test_a_reply_streams_natively_with_its_feedback_buttons_and_metadata(tmp_path: Path) -> None:
    stack = await _stack(
        tmp_path, {"turns": [{"actions": [{"text": ANSWER.strip(), "deltas": 20, "delay": 0.1}]}]}, "native"
    )
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} explain")
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)
        assert reply.visible_text == ANSWER.strip()
        assert any(b["type"] == "context_actions" for b in reply.blocks)  # thumbs up / down
        assert reply.metadata["event_type"] == REPLY_EVENT
        methods = _methods(stack)
        assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
        assert methods.count("chat.appendStream") >= 2 and "chat.update" not in methods
        started = stack.slack.calls_of("chat.startStream")[0].params
        assert (started["recipient_user_id"], started["recipient_team_id"]) == ("U0ALICE", "T0EMU")
        texts = [h[1] for h in reply.history]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # only ever grew
        # the private Stop outlives the stream (Slack offers no way to take an ephemeral back):
        # pressed late, it says so in its own place
        where, value = stop_button(stack, "C0GENERAL", ts) or ("", "")
        assert await stack.slack.click("U0ALICE", "C0GENERAL", where, "stop_run", value) == 200
        await eventually(
            lambda: (
                [e["text"] for e in stack.slack.ephemerals_for("U0ALICE", "C0GENERAL")]
                == ["This reply has already finished."]
            ),
            "the late Stop answered in place",
        )
    finally:
        await stack.close()


@pytest.mark.parametrize(("mode", "method"), [("edit", "chat.postMessage"), ("native", "chat.startStream")])
async def test_a_post_whose_answer_was_lost_is_found_in_the_thread_not_made_twice(
    tmp_path: Path, mode: str, method: str
) -> None:
    """Slack took the first post (or stream start) but the connection broke before its answer:
    neither the SDK nor the writer sends it again blindly; the reply goes on in that message."""
    stack = await _stack(
        tmp_path, {"turns": [{"actions": [{"text": ANSWER.strip(), "deltas": 10, "delay": 0.05}]}]}, mode
    )
    try:
        stack.slack.lose_response(method)
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} explain")
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)  # one message, not a second above or below it
        assert reply.visible_text == ANSWER.strip()
        assert len([c for c in stack.slack.calls_of(method) if c.ok]) == 1
        assert reply.metadata["event_type"] == REPLY_EVENT
        stream = stack.slack.stream_of("C0GENERAL", reply.ts)
        assert (stream is not None) == (mode == "native") and not (stream and stream.open)
    finally:
        await stack.close()


async def test_an_append_whose_answer_was_lost_is_not_appended_twice(tmp_path: Path) -> None:
    """An append Slack may or may not have taken is not sent again (the words could show
    twice): the page goes on whole, by an edit."""
    stack = await _stack(
        tmp_path, {"turns": [{"actions": [{"text": ANSWER.strip(), "deltas": 20, "delay": 0.1}]}]}, "native"
    )
    try:
        stack.slack.lose_response("chat.appendStream")
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} explain")
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)
        assert reply.visible_text == ANSWER.strip()
        assert stack.slack.calls_of("chat.update")  # finished by an edit after the lost append
        assert not stack.slack.stream_of("C0GENERAL", reply.ts).open
    finally:
        await stack.close()


async def test_auto_falls_back_to_edits_where_the_workspace_refuses_and_remembers(tmp_path: Path) -> None:
    script = {"turns": [{"repeat": True, "actions": [{"text": ANSWER.strip(), "deltas": 6, "delay": 0.05}]}]}
    stack = await _stack(tmp_path, script, "auto")
    try:
        stack.slack.refuse_native_streaming("T0EMU")
        first = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} one")
        await stack.settle()
        second = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} two")
        await stack.settle()
        for root in (first, second):
            [reply] = stack.replies("C0GENERAL", root)
            assert reply.visible_text == ANSWER.strip()
        starts = stack.slack.calls_of("chat.startStream")
        assert len(starts) == 1 and not starts[0].ok  # tried once, then remembered
        assert stack.bot.orchestrator.native.refused == {"T0EMU": "not_allowed_token_type"}
    finally:
        await stack.close()


async def test_a_stream_slack_closes_mid_reply_is_finished_by_an_edit_without_loss(tmp_path: Path) -> None:
    script = {"turns": [{"actions": [{"text": ANSWER.strip(), "deltas": 20, "delay": 0.05}]}]}
    stack = await _stack(tmp_path, script, "native")
    try:
        stack.slack.stream_lifetime_s = 0.3
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} explain")
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)
        assert reply.visible_text == ANSWER.strip()
        refused = [c for c in stack.slack.calls if c.error == "message_not_in_streaming_state"]
        assert refused and "chat.update" in _methods(stack)
        assert any(b["type"] == "context_actions" for b in reply.blocks)
    finally:
        await stack.close()


@pytest.mark.parametrize("first", ["text", "tool"])
async def test_a_tool_run_is_a_task_card_in_progress_then_complete(tmp_path: Path, first: str) -> None:
    """Whether the reply had words before the tool ran (the card joins an open stream) or
    not (the stream starts with the card)."""
    from tests.test_slack_e2e import WeatherTools

    before = [{"text": "Let me check."}] if first == "text" else []
    script = {
        "turns": [
            {
                "actions": [
                    *before,
                    {"tool_calls": [{"name": "get_weather", "arguments": {}}]},
                    {"text": "It is ${output}."},
                ]
            }
        ]
    }
    tools = WeatherTools()
    stack = await _stack(tmp_path, script, "native", tools=tools)
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} weather?")

        def card_in_progress() -> bool:
            streams = [stack.slack.stream_of("C0GENERAL", m.ts) for m in stack.replies("C0GENERAL", ts)]
            return any(
                card["status"] == "in_progress" and "get_weather" in card["title"]
                for s in streams
                if s is not None
                for card in s.tasks.values()
            )

        tools.until = card_in_progress
        await stack.settle()
        [reply] = stack.replies("C0GENERAL", ts)
        said = "Let me check.\n\nIt is sunny, 21C." if first == "text" else "It is sunny, 21C."
        assert reply.visible_text == said
        cards = stack.slack.stream_of("C0GENERAL", reply.ts).tasks
        assert [c["status"] for c in cards.values()] == ["complete"]
    finally:
        await stack.close()


async def test_a_reply_past_one_message_continues_in_a_second_stream(tmp_path: Path) -> None:
    long = ("A long paragraph of the answer, which goes on and on. " * 20 + "\n\n") * 14
    script = {"turns": [{"actions": [{"text": long.strip(), "deltas": 30, "delay": 0.05}]}]}
    stack = await _stack(tmp_path, script, "native")
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} a long one")
        await stack.settle()
        replies = stack.replies("C0GENERAL", ts)
        assert len(replies) >= 2
        shown = "".join(r.visible_text for r in replies)
        assert shown.replace("\n", "").replace(" ", "") == long.strip().replace("\n", "").replace(" ", "")
        # each page a stream, stopped (or, when its text was final before Slack took it, one post)
        streams = [stack.slack.stream_of("C0GENERAL", r.ts) for r in replies]
        assert any(s is not None for s in streams)
        still_open = [r.ts for r, s in zip(replies, streams, strict=True) if s is not None and s.open]
        calls = [(c.method, c.ok, c.error, c.params.get("ts")) for c in stack.slack.calls]
        assert not still_open, (still_open, calls)
    finally:
        await stack.close()


# -- the assistant pane ---------------------------------------------------------------------------


async def test_the_assistant_pane_greets_offers_prompts_shows_a_status_and_a_title(tmp_path: Path) -> None:
    script = {
        "turns": [{"repeat": True, "actions": [{"text": "Here is the summary.", "deltas": 4, "delay": 0.05}]}]
    }
    stack = await _stack(tmp_path, script, "edit")
    try:
        slack = stack.slack
        dm, thread_ts = slack.open_assistant("U0ALICE", viewing="C0GENERAL")
        await eventually(
            lambda: (slack.pane(dm, thread_ts) or None) and slack.pane(dm, thread_ts).prompts, "prompts"
        )
        pane = slack.pane(dm, thread_ts)
        assert [p["title"] for p in pane.prompts] == [
            "Summarize this channel",
            "What can you do?",
            "Draft a message",
        ]
        assert "<#C0GENERAL|general>" in pane.prompts[0]["message"]
        greeting = [m for m in slack.thread(dm, thread_ts) if m.bot_id and m.ts != thread_ts]
        assert greeting and "Ask me anything" in greeting[0].visible_text
        # the person clicks the first prompt: its message is posted in the pane's thread
        asked = slack.user_posts("U0ALICE", dm, pane.prompts[0]["message"], thread_ts=thread_ts)
        await stack.settle()
        reply = [m for m in slack.thread(dm, thread_ts) if m.bot_id and m.ts > asked]
        assert [m.visible_text for m in reply] == ["Here is the summary."]
        assert all("Thinking" not in (h[1] or "") for h in reply[0].history)  # no placeholder: a status
        assert pane.statuses and pane.statuses[0][1] == "is thinking…"
        assert pane.title == "Summarize the recent discussion in #general."
        # the agent knew which channel the person was looking at
        assert any("looking at" in text for texts in agent_inputs(stack) for text in texts)
        # a second message keeps the title; the person moves to another channel meanwhile
        slack.add_channel("C0OTHER", "other")
        slack.switch_channel("U0ALICE", dm, thread_ts, "C0OTHER")
        panes = stack.bot.orchestrator.context.panes
        assert panes is not None

        async def switched() -> bool:
            return (await panes.context(dm, thread_ts) or {}).get("channel_id") == "C0OTHER"

        await eventually(switched, "the new channel kept for the agent")
        slack.user_posts("U0ALICE", dm, "and now?", thread_ts=thread_ts)
        await stack.settle()
        assert pane.title.startswith("Summarize the recent discussion")
        last = agent_inputs(stack)[-1][-1]
        assert "and now?" in last and "other" in last, last
        assert len(slack.calls_of("assistant.threads.setTitle")) == 1
    finally:
        await stack.close()


def test_suggested_prompts_that_are_not_a_json_list_are_refused_in_one_line() -> None:
    from bot.settings import Settings, SettingsError, load_settings  # noqa: F401

    with pytest.raises(ValueError, match="BOT_SUGGESTED_PROMPTS"):
        Settings(BOT_SUGGESTED_PROMPTS="What can you do?", _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="neither text nor"):
        Settings(BOT_SUGGESTED_PROMPTS='[{"title": "no message"}]', _env_file=None)  # type: ignore[call-arg]
    ok = Settings(BOT_SUGGESTED_PROMPTS='["Hi", {"title": "T", "message": "M"}]', _env_file=None)  # type: ignore[call-arg]
    assert ok.prompts == [("Hi", "Hi"), ("T", "M")]


def test_a_thread_title_reads_as_a_person_reads_the_message() -> None:
    from bot.slack.assistant import plain_title

    said = "Ask <@U0BOB|bob> about <#C1|general> &amp; <https://x.example/a|the doc>\n  <#C2> too"
    assert plain_title(said) == "Ask @bob about #general & the doc a channel too"
    assert len(plain_title("word " * 100)) == 80


async def test_a_pane_reply_posts_nothing_before_its_first_words(slack: SlackEmulator) -> None:
    """In the assistant pane the reply waits for words (the pane shows a status meanwhile);
    so a replica handing such a turn over has no placeholder to clean up."""
    from bot.slack.pacing import SlackBudget
    from bot.slack.writer import ReplyWriter

    root = slack.user_posts("U0ALICE", "D0ALICE", "question")
    writer = ReplyWriter(_client(slack), SlackBudget(), "D0ALICE", root, stop_value="t1", quiet_start=True)
    writer.begin()
    writer.status("Running lookup…")
    assert writer.holding_back
    writer.update("The first words")
    await eventually(lambda: slack.bot_replies("D0ALICE", root), "the first words posted")
    assert not writer.holding_back
    [first] = slack.bot_replies("D0ALICE", root)
    assert "The first words" in first.history[0][1]  # its first state: words, never a placeholder
    await writer.finish("The first words, and the rest.")
    assert [m.visible_text for m in slack.bot_replies("D0ALICE", root)] == ["The first words, and the rest."]
