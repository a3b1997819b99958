"""Files people share reach the agent, on both backends: data for the code interpreter,
images as image input; a file over the limit, or of a type the agent cannot use, gets a
note in the reply and the message is still answered."""

from __future__ import annotations

from typing import Any

import pytest

from bot.agents.uploads import TooLargeError

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


async def test_a_first_mention_gives_the_agent_the_threads_earlier_files(stack_factory: Any) -> None:
    """The thread's earlier files come with a first mention: the message's own first, then
    the newest earlier ones, within one limit; what cannot go is said, earlier ones marked."""
    stack = await stack_factory(READER, settings_overrides={"max_files": 3})
    slack = stack.slack
    top = slack.user_shares("U0ALICE", "C0GENERAL", "numbers for q3", [("sales.csv", CSV, "text/csv")])
    slack.user_shares(
        "U0BOB", "C0GENERAL", "and the chart",
        [("photo.png", PNG, "image/png"), ("tool.exe", b"MZ\0\0", "application/octet-stream")],
        thread_ts=top,
    )  # fmt: skip
    slack.user_shares(
        "U0CAROL", "C0GENERAL", "my notes", [("notes.txt", b"one\ntwo\n", "text/plain")], thread_ts=top
    )
    slack.user_shares(
        "U0ALICE",
        "C0GENERAL",
        f"{BOT} what do you make of these?",
        [("q.csv", CSV, "text/csv")],
        thread_ts=top,
    )
    await stack.settle()
    text = slack.bot_replies("C0GENERAL", top)[-1].text
    how = _read_as(stack, "code_interpreter", "input_file")
    given = text.split("\n")[0].removeprefix("I was given: ").removesuffix(".").split("; ")
    assert sorted(given) == sorted(
        [
            f"{how}: q.csv ({len(CSV)} bytes, first line 'region,amount')",
            f"{how}: notes.txt (8 bytes, first line 'one')",
            f"image: photo.png ({len(PNG)} bytes)",
        ]
    )
    assert (
        "_tool.exe (earlier in the thread): not given to the agent (it cannot read this type of file)_"
        in text
    )
    assert "_1 earlier file(s) in the thread not given to the agent (at most 3 files a message)_" in text
    assert sorted(f.filename for f in stack.agent.files.files.values()) == ["notes.txt", "photo.png", "q.csv"]
    # a follow-up does not bring the thread's files again
    slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} thanks", thread_ts=top)
    await stack.settle()
    assert slack.bot_replies("C0GENERAL", top)[-1].text == "I was given: no files."


def _conversations(stack: Any) -> set[str]:
    """The agent conversations the agent service holds (threads, or Responses conversations)."""
    if stack.bot.settings.backend == "foundry":
        return set(stack.agent.responses_api.conversations)
    return set(stack.agent.threads)


async def test_a_conversation_and_its_files_are_deleted_when_its_retention_ends(stack_factory: Any) -> None:
    from tests.stack import eventually

    retention_s = 3.0
    stack = await stack_factory(READER, settings_overrides={"retention_days": retention_s / 86400})
    ts = stack.slack.user_shares(
        "U0ALICE", "C0GENERAL", f"{BOT} first look", [("sales.csv", CSV, "text/csv")]
    )
    await stack.settle()
    [uploaded] = stack.agent.files.files
    [conversation] = _conversations(stack)
    await stack.bot.recovery.forget_expired()  # the hourly clean-up, now: all just used
    assert list(stack.agent.files.files) == [uploaded] and _conversations(stack) == {conversation}

    async def deleted() -> bool:
        await stack.bot.recovery.forget_expired()
        return not stack.agent.files.files and not _conversations(stack)

    await eventually(deleted, "the conversation and its file deleted once idle", within_s=30, step=0.5)
    assert stack.reply_text("C0GENERAL", ts).startswith("I was given: ")
    # the Slack thread carries on in a new conversation; the same Slack file is uploaded afresh,
    # never pointed at the deleted one
    shared = stack.slack.thread("C0GENERAL", ts)[0].files
    stack.slack.user_posts(
        "U0ALICE", "C0GENERAL", f"{BOT} again", thread_ts=ts, files=shared, subtype="file_share"
    )
    await stack.settle()
    assert len(stack.agent.files.files) == 1 and uploaded not in stack.agent.files.files
    assert len(_conversations(stack)) == 1 and conversation not in _conversations(stack)
    assert stack.slack.bot_replies("C0GENERAL", ts)[-1].text.startswith("I was given: ")


async def test_retention_dry_run_lists_and_the_command_deletes(stack_factory: Any) -> None:
    """`python -m bot retention --dry-run` shows what is due and changes nothing; without it,
    what is due is deleted now."""
    import asyncio

    from tests.stack import eventually
    from tests.test_cli import run_cli

    # the service refuses past the retry deadline (kept short here), not for a number of tries
    stack = await stack_factory(
        READER, settings_overrides={"retention_days": 1 / 86400, "agents_retry_seconds": 0.5}
    )
    stack.slack.user_shares("U0ALICE", "C0GENERAL", f"{BOT} look", [("sales.csv", CSV, "text/csv")])
    await stack.settle()
    [conversation] = _conversations(stack)
    [uploaded] = stack.agent.files.files
    await eventually(stack.bot.store.agent_files_due, "the file falls due", within_s=30, step=0.2)
    settings = stack.bot.settings
    agent = (
        {"AGENT_BACKEND": "foundry", "AGENT_NAME": settings.agent_name or ""}
        if settings.backend == "foundry"
        else {"AGENT_ID": settings.agent_id or ""}
    )
    env = {
        "BOT_STORE_URL": settings.store_url,
        "BOT_RETENTION_DAYS": str(settings.retention_days),
        "PROJECT_ENDPOINT": settings.project_endpoint or "",
        "AGENTS_ACCESS_TOKEN": settings.access_token or "",
        **agent,
    }
    dry = await asyncio.to_thread(run_cli, "retention", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "1 agent conversation(s), 1 uploaded file(s)" in dry.stdout
    assert f"conversation {conversation}" in dry.stdout and f"file {uploaded}" in dry.stdout
    assert "dry run: nothing deleted" in dry.stdout
    assert _conversations(stack) == {conversation} and list(stack.agent.files.files) == [uploaded]
    done = await asyncio.to_thread(run_cli, "retention", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted 1 conversation(s) and 1 file(s)" in done.stdout
    assert not _conversations(stack) and not stack.agent.files.files


async def test_a_deletion_the_service_refuses_is_tried_again_at_the_next_sweep(stack_factory: Any) -> None:
    from tests.stack import eventually

    # the service refuses past the retry deadline (kept short here), not for a number of tries
    stack = await stack_factory(
        READER, settings_overrides={"retention_days": 1 / 86400, "agents_retry_seconds": 0.5}
    )
    stack.slack.user_shares("U0ALICE", "C0GENERAL", f"{BOT} look", [("sales.csv", CSV, "text/csv")])
    await stack.settle()
    [uploaded] = stack.agent.files.files
    await eventually(stack.bot.store.agent_files_due, "the file falls due", within_s=30, step=0.2)
    stack.agent.fail_next("DELETE", "*files/*", 500, times=100_000)  # every try of this sweep fails
    await stack.bot.recovery.forget_expired()
    assert list(stack.agent.files.files) == [uploaded]  # not deleted, and not forgotten:
    assert [f.agent_file_id for f in await stack.bot.store.agent_files_due()] == [uploaded]
    stack.agent.faults.clear()  # the service is back
    await stack.bot.recovery.forget_expired()
    assert not stack.agent.files.files and await stack.bot.store.agent_files_due() == []


async def test_a_100_mb_file_streams_from_slack_to_the_agent_in_flat_memory(tmp_path: Any) -> None:
    """Size-checked, then streamed: Slack -> spool (memory up to 4 MB, then disk) -> the agent
    service, never whole in memory (peak traced memory while it moves, beside its size)."""
    import hashlib
    import os
    import tracemalloc

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.agents import make_backend
    from bot.emulators.agents import AgentServiceEmulator
    from bot.emulators.slack import SlackEmulator
    from bot.settings import Settings
    from bot.slack.workspaces import OneWorkspace
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
    as_bot = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    files_in = FilesIn(store, OneWorkspace(as_bot, slack.bot_user), max_bytes=size + 1)
    try:
        shared = slack.files.share("U0ALICE", "big.csv", content, "text/csv")
        tracemalloc.start()
        key = ConversationKey("T0EMU", "C0GENERAL", "1.0")
        prepared = await files_in.prepare(key, [shared], {}, agents=backend)
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


async def test_slacks_file_routes_refuse_what_slack_refuses() -> None:
    """The Slack emulator's files, over the real client and HTTP: the download answers the
    sign-in page without the bot token; the external upload flow needs a length, the exact
    bytes, and an uploaded id, and shares the file in the thread as the app's message."""
    import httpx
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.emulators.slack import SlackEmulator
    from bot.slack.files import FileUnavailable, download

    slack = SlackEmulator()
    await slack.start()
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    try:
        shared = slack.files.share("U0ALICE", "sales.csv", CSV, "text/csv")
        async with httpx.AsyncClient() as http:
            assert b"".join([c async for c in download(http, slack.bot_token, shared)]) == CSV
            try:
                _ = [c async for c in download(http, "xoxb-wrong", shared)]
                raise AssertionError("the sign-in page was taken for the file")
            except FileUnavailable as refused:
                assert "files:read" in str(refused)
            gone = {
                **shared,
                "url_private_download": shared["url_private_download"].replace(shared["id"], "F0NONE"),
            }
            try:
                _ = [c async for c in download(http, slack.bot_token, gone)]
                raise AssertionError("a missing file was downloaded")
            except FileUnavailable as refused:
                assert "404" in str(refused)
            try:
                _ = [c async for c in download(http, slack.bot_token, {"name": "x"})]
                raise AssertionError("a file without an address was downloaded")
            except FileUnavailable as refused:
                assert "no download address" in str(refused)

            for params, error in (
                ({"filename": "a.csv"}, "invalid_arguments"),
                ({"filename": "a.csv", "length": 2**31}, "file_too_large"),
            ):
                try:
                    await client.api_call("files.getUploadURLExternal", params=params)
                    raise AssertionError(f"{params} accepted")
                except SlackApiError as exc:
                    assert exc.response["error"] == error
            ticket = await client.files_getUploadURLExternal(filename="chart.csv", length=len(CSV))
            short = await http.post(ticket["upload_url"], content=CSV[:-1])
            assert short.status_code == 400
            try:
                await client.files_completeUploadExternal(
                    files=[{"id": ticket["file_id"]}], channel_id="C0GENERAL"
                )
                raise AssertionError("completed before the bytes arrived")
            except SlackApiError as exc:
                assert exc.response["error"] == "file_not_found"
            ticket = await client.files_getUploadURLExternal(filename="chart.csv", length=len(CSV))
            assert (await http.post(ticket["upload_url"], content=CSV + b"!")).status_code == 413
            ticket = await client.files_getUploadURLExternal(filename="chart.csv", length=len(CSV))
            assert (await http.post(ticket["upload_url"], content=CSV)).status_code == 200
            assert (await http.post(ticket["upload_url"], content=CSV)).status_code == 404  # one use
        root = slack.user_posts("U0ALICE", "C0GENERAL", "a question")
        for bad in (
            {"files": "not json"},
            {"files": []},
            {"files": [{"id": ticket["file_id"]}], "channel_id": "C0NOPE"},
        ):
            try:
                await client.api_call("files.completeUploadExternal", json=bad)
                raise AssertionError(f"{bad} accepted")
            except SlackApiError as exc:
                assert exc.response["error"] in ("invalid_arguments", "channel_not_found")
        done = await client.files_completeUploadExternal(
            files=[{"id": ticket["file_id"], "title": "Chart data"}], channel_id="C0GENERAL", thread_ts=root
        )
        assert done["files"] == [{"id": ticket["file_id"], "title": "Chart data"}]
        [posted] = slack.bot_replies("C0GENERAL", root)
        assert posted.files and posted.files[0]["name"] == "chart.csv" and posted.files[0]["size"] == len(CSV)
    finally:
        await slack.stop()


async def test_the_agent_services_file_routes_refuse_what_it_refuses() -> None:
    import httpx

    from bot.emulators.agents import AgentServiceEmulator

    async with AgentServiceEmulator(token="t") as agent, httpx.AsyncClient() as http:
        auth = {"Authorization": "Bearer t"}
        url = f"{agent.endpoint}/files"
        q = {"api-version": "v1"}
        assert (
            await http.post(url, params=q, headers=auth, json={"purpose": "assistants"})
        ).status_code == 400
        no_file = await http.post(
            url, params=q, headers=auth, data={"purpose": "assistants"}, files={"x": ("a", b"1")}
        )
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
        bad = await http.post(
            url, params=q, headers=auth, data={"purpose": "nope"}, files={"file": ("a.csv", CSV)}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
        empty = await http.post(
            url, params=q, headers=auth, data={"purpose": "assistants"}, files={"file": ("a.csv", b"")}
        )
        assert empty.status_code == 400
        made = await http.post(
            url, params=q, headers=auth, data={"purpose": "assistants"}, files={"file": ("a.csv", CSV)}
        )
        file_id = made.json()["id"]
        assert made.json()["bytes"] == len(CSV)
        got = await http.get(f"{url}/{file_id}", params=q, headers=auth)
        assert got.json()["filename"] == "a.csv"
        assert (await http.get(f"{url}/{file_id}/content", params=q, headers=auth)).content == CSV
        assert (await http.delete(f"{url}/{file_id}", params=q, headers=auth)).json()["deleted"] is True
        assert (await http.get(f"{url}/{file_id}", params=q, headers=auth)).status_code == 404
        assert (await http.delete(f"{url}/{file_id}", params=q, headers=auth)).status_code == 404
        made_by_agent = agent.files.add("chart.png", PNG)
        assert agent.files.describe(made_by_agent.id, "image") == f"image: chart.png ({len(PNG)} bytes)"
        assert agent.files.describe("assistant_none", "image") == "image: missing assistant_none"
        thread = (await http.post(f"{agent.endpoint}/threads", params=q, headers=auth, json={})).json()["id"]
        for body in (
            {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "nope"}}]},
            {"role": "user", "content": [{"type": "video", "video": {}}]},
            {
                "role": "user",
                "content": "hi",
                "attachments": [{"file_id": "nope", "tools": [{"type": "code_interpreter"}]}],
            },
            {
                "role": "user",
                "content": "hi",
                "attachments": [{"file_id": made_by_agent.id, "tools": [{"type": "magic"}]}],
            },
        ):
            refused = await http.post(
                f"{agent.endpoint}/threads/{thread}/messages", params=q, headers=auth, json=body
            )
            assert refused.status_code == 400, body


async def test_both_backends_upload_and_delete_files(backend: str) -> None:
    """The seam's file calls on each backend: an upload answers an id the service knows, a
    delete removes it, and deleting it again is not an error."""
    from bot.agents import make_backend
    from bot.agents.uploads import Upload
    from bot.emulators.agents import AgentServiceEmulator
    from bot.settings import Settings

    async def pieces() -> Any:
        yield CSV

    async with AgentServiceEmulator(token="t") as agent:
        settings = Settings(
            PROJECT_ENDPOINT=agent.endpoint, AGENT_ID="asst_demo", AGENTS_ACCESS_TOKEN="t", _env_file=None
        )  # type: ignore[call-arg]
        if backend == "foundry":
            settings = settings.model_copy(update={"agent_backend": "foundry", "agent_name": "demo-agent"})
        agents = make_backend(settings)
        try:
            upload = await Upload.spool("sales.csv", "text/csv", pieces(), limit=1024)
            file_id = await agents.upload_file(upload)
            upload.close()
            assert agent.files.files[file_id].content == CSV
            await agents.delete_file(file_id)
            assert file_id not in agent.files.files and agent.files.deleted == [file_id]
            await agents.delete_file(file_id)  # already gone: fine
            with pytest.raises(TooLargeError):
                await Upload.spool("big.csv", "text/csv", pieces(), limit=4)
        finally:
            await agents.aclose()


async def test_a_chart_and_a_csv_the_agent_makes_come_back_to_the_thread(stack_factory: Any) -> None:
    """Code interpreter output (classic: image_file content and a file_path link; new agents:
    container files with container_file_citation) is fetched and shared in the reply's
    thread; the sandbox link in the text says where the file is instead."""
    import base64

    made_csv = "region,total\nnorth,120\n"
    script = {
        "turns": [
            {
                "actions": [
                    {"text": "Here is the chart. "},
                    {"file": {"name": "chart.png", "base64": base64.b64encode(PNG).decode()}},
                    {"text": "The numbers: "},
                    {"file": {"name": "totals.csv", "text": made_csv}},
                ]
            }
        ]
    }
    stack = await stack_factory(script)
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} chart my sales")
    await stack.settle()
    replies = stack.slack.bot_replies("C0GENERAL", ts)
    text = "".join(m.visible_text for m in replies if not m.files)
    assert "sandbox:" not in text and "`totals.csv` (attached below)" in text
    shared = {f["name"]: f for m in replies for f in m.files or []}
    # (classic agents name an image output by its file id: chart.png only on new agents)
    assert len(shared) == 2 and "totals.csv" in shared and any(n.endswith(".png") for n in shared)
    contents = {f.name: f.content for f in stack.slack.files.files.values() if f.name in shared}
    assert contents["totals.csv"] == made_csv.encode()
    assert PNG in contents.values()


async def test_a_made_file_that_cannot_be_fetched_is_said_in_the_thread(stack_factory: Any) -> None:
    script = {"turns": [{"actions": [{"text": "Done: "}, {"file": {"name": "totals.csv", "text": "a,b\n"}}]}]}
    stack = await stack_factory(script, settings_overrides={"agents_retry_seconds": 0.5})
    stack.agent.fail_next("GET", "*/content", 500, times=100_000)  # down past the retry deadline
    ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} make the file")
    await stack.settle()
    texts = [m.visible_text for m in stack.slack.bot_replies("C0GENERAL", ts)]
    assert texts[0] == "Done: `totals.csv` (attached below)"
    assert texts[-1] == "_The agent made totals.csv, but it could not be attached here._"
    assert not any(m.files for m in stack.slack.bot_replies("C0GENERAL", ts))


async def test_a_100_mb_file_the_agent_made_streams_to_slack_in_flat_memory() -> None:
    """The other way: agent service -> spool -> Slack's upload URL, never whole in memory."""
    import hashlib
    import os
    import tracemalloc

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.agents import make_backend
    from bot.agents.events import FileProduced
    from bot.emulators.agents import AgentServiceEmulator
    from bot.emulators.slack import SlackEmulator
    from bot.settings import Settings
    from bot.slack.workspaces import OneWorkspace
    from bot.turns.files_out import FilesOut

    size = 100 * 1024 * 1024
    content = os.urandom(size)
    agent, slack = AgentServiceEmulator(), SlackEmulator()
    await agent.start()
    await slack.start()
    slack.files.keep_content = False  # Slack's side keeps a digest, not the bytes
    settings = Settings(
        PROJECT_ENDPOINT=agent.endpoint, AGENT_ID="asst_demo", AGENTS_ACCESS_TOKEN="t", _env_file=None
    )  # type: ignore[call-arg]
    backend = make_backend(settings)
    files_out = FilesOut(OneWorkspace(AsyncWebClient(token=slack.bot_token, base_url=slack.api_url), None))
    try:
        made = agent.files.add("export.csv", content)
        root = slack.user_posts("U0ALICE", "C0GENERAL", "export please")
        tracemalloc.start()
        made_files = [FileProduced(made.id, "export.csv")]
        shared = await files_out.deliver("T0EMU", "C0GENERAL", root, made_files, {}, agents=backend)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(shared) == 1 and slack.files.digests[shared[0]] == hashlib.sha256(content).hexdigest()
        print(f"\n100 MB file agent -> Slack: peak traced memory {peak / 2**20:.1f} MB ({peak / size:.3f}x)")
        assert peak < 0.2 * size
    finally:
        await files_out.aclose()
        await backend.aclose()
        await slack.stop()
        await agent.stop()
