"""Files people share reach the agent, on both backends: data for the code interpreter,
images as image input; a file over the limit, or of a type the agent cannot use, gets a
note in the reply and the message is still answered."""

from __future__ import annotations

from typing import Any

BOT = "<@U0BOT>"
CSV = b"region,amount\nnorth,120\nsouth,80\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\0" * 64
READER = {"turns": [{"repeat": True, "actions": [{"text": "I was given: ${files}."}]}]}


def _read_as(stack: Any, classic: str, new: str) -> str:
    return new if stack.bot.settings.backend == "foundry" else classic


async def test_a_csv_reaches_the_agent_for_its_code_interpreter(stack_factory: Any) -> None:
    stack = await stack_factory(READER)
    ts = stack.slack.user_shares(
        "U0ALICE", "C0GENERAL", f"{BOT} total by region?", [("sales.csv", CSV, "text/csv")]
    )
    await stack.settle()
    how = _read_as(stack, "code_interpreter", "input_file")
    expected = f"I was given: {how}: sales.csv ({len(CSV)} bytes, first line 'region,amount')."
    assert stack.reply_text("C0GENERAL", ts) == expected
    [uploaded] = stack.agent.files.files.values()
    assert uploaded.content == CSV and uploaded.purpose == "assistants"


async def test_an_image_reaches_the_agent_as_image_input(stack_factory: Any) -> None:
    stack = await stack_factory(READER)
    ts = stack.slack.user_shares(
        "U0ALICE", "C0GENERAL", f"{BOT} what is this?", [("photo.png", PNG, "image/png")]
    )
    await stack.settle()
    assert stack.reply_text("C0GENERAL", ts) == f"I was given: image: photo.png ({len(PNG)} bytes)."


async def test_an_oversized_or_unreadable_file_gets_a_note_and_the_text_an_answer(stack_factory: Any) -> None:
    stack = await stack_factory(READER, settings_overrides={"file_max_mb": 0.001})  # about 1 KB
    big = b"x" * 4096
    ts = stack.slack.user_shares(
        "U0ALICE",
        "C0GENERAL",
        f"{BOT} look at these",
        [
            ("big.csv", big, "text/csv"),
            ("tool.exe", b"MZ\0\0", "application/octet-stream"),
            ("ok.csv", CSV, "text/csv"),
        ],
    )
    await stack.settle()
    text = stack.reply_text("C0GENERAL", ts)
    how = _read_as(stack, "code_interpreter", "input_file")
    assert text.startswith(f"I was given: {how}: ok.csv (")
    assert "_big.csv: not given to the agent (0.0 MB, over the 0.0 MB limit)_" in text
    assert "_tool.exe: not given to the agent (it cannot read this type of file)_" in text
    big_id = next(f.id for f in stack.slack.files.files.values() if f.name == "big.csv")
    assert stack.slack.files.files[big_id].downloads == 0  # refused before a byte was read
    assert [f.filename for f in stack.agent.files.files.values()] == ["ok.csv"]


async def test_a_file_shared_again_in_the_thread_is_uploaded_once(stack_factory: Any) -> None:
    stack = await stack_factory(READER)
    ts = stack.slack.user_shares(
        "U0ALICE", "C0GENERAL", f"{BOT} first look", [("sales.csv", CSV, "text/csv")]
    )
    await stack.settle()
    shared = stack.slack.thread("C0GENERAL", ts)[0].files
    stack.slack.user_posts(
        "U0ALICE", "C0GENERAL", "and again", thread_ts=ts, files=shared, subtype="file_share"
    )
    await stack.settle()
    assert len(stack.slack.bot_replies("C0GENERAL", ts)) == 2
    assert len(stack.agent.files.files) == 1  # the same Slack file, the same agent file


async def test_a_100_mb_file_streams_from_slack_to_the_agent_in_flat_memory(tmp_path: Any) -> None:
    """Size-checked, then streamed: Slack -> spool (memory up to 4 MB, then disk) -> the agent
    service, never whole in memory (peak traced memory while it moves, beside its size)."""
    import hashlib
    import os
    import tracemalloc

    from bot.agents import make_backend
    from bot.emulators.agents import AgentServiceEmulator
    from bot.emulators.slack import SlackEmulator
    from bot.settings import Settings
    from bot.store import ConversationKey, open_store
    from bot.turns.files_in import FilesIn

    size = 100 * 1024 * 1024
    content = os.urandom(size)
    agent = AgentServiceEmulator()
    agent.files.keep_content = False  # the service side keeps a digest, not the bytes
    slack = SlackEmulator()
    await agent.start()
    await slack.start()
    store = await open_store(f"sqlite:///{tmp_path}/bot.db")
    settings = Settings(
        PROJECT_ENDPOINT=agent.endpoint, AGENT_ID="asst_demo", AGENTS_ACCESS_TOKEN="t", _env_file=None
    )  # type: ignore[call-arg]
    backend = make_backend(settings)
    files_in = FilesIn(backend, store, slack.bot_token, max_bytes=size + 1)
    try:
        shared = slack.files.share("U0ALICE", "big.csv", content, "text/csv")
        tracemalloc.start()
        prepared = await files_in.prepare(ConversationKey("T0EMU", "C0GENERAL", "1.0"), [shared], {})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [f.name for f in prepared.files] == ["big.csv"] and not prepared.notes
        assert agent.files.received == [("big.csv", size, hashlib.sha256(content).hexdigest())]
        print(
            f"\n100 MB file Slack -> agent: peak traced memory {peak / 1024 / 1024:.1f} MB "
            f"({peak / size:.3f}x the file)"
        )
        assert peak < 0.2 * size
    finally:
        await files_in.aclose()
        await backend.aclose()
        await store.close()
        await slack.stop()
        await agent.stop()
