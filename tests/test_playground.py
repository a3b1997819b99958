"""The playground as a newcomer meets it: `make run` with no settings, and the page in a
real (headless) browser: mention the bot, watch the reply grow, press Stop, approve a tool."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.playground import serve
from bot.settings import Settings
from tests.browser import LAUNCH_ARGS, chromium_path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def playground() -> AsyncIterator[str]:
    port = _free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    settings = Settings(BOT_TOOLS_DIR=str(ROOT / "tools"), _env_file=None)  # type: ignore[call-arg]
    task = asyncio.create_task(serve(settings, port=port, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 30)
    yield f"http://127.0.0.1:{port}"
    stop.set()
    await asyncio.wait_for(task, 30)


async def last_bot_text(page: Any) -> str:
    replies = page.locator("#thread-messages .message:has(.avatar.bot) .body")
    count = await replies.count()
    return (await replies.nth(count - 1).inner_text()) if count else ""


async def test_the_page_in_a_browser(playground: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 860})
        await page.goto(playground)
        await page.wait_for_selector("#channel-list li")

        # mention the bot; the reply grows in the thread pane
        await page.fill("#text", "@agent hello there")
        await page.click("#send")
        states: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = await last_bot_text(page)
            if text and (not states or states[-1] != text):
                states.append(text)
            if "restart billing" in text and "Stop" not in text:
                break
            await asyncio.sleep(0.03)
        await page.screenshot(path=str(tmp_path / "1-answer.png"))
        final = states[-1]
        assert "scripted demo agent" in final and "def add_numbers" in final and "[1]" not in final
        assert await page.locator("#thread-messages pre code").count() >= 1  # the code block renders
        assert (
            await page.locator("#thread-messages a[href='https://api.slack.com/apis/rate-limits']").count()
            >= 1
        )
        intermediate = [s for s in states[:-1] if "Thinking" not in s and s != final]
        assert len(intermediate) >= 2, states
        timeline = await page.inner_text("#timeline-list")
        assert "slack chat.update" in timeline and "agent thread.message.delta ×" in timeline  # runs fold
        assert "agentbot" in await page.inner_text("#thread-messages .message:has(.avatar.bot) .who")

        # a thumbs up: the bot thanks the clicker privately, and only they see it
        await page.click("#thread-messages button[data-value^='good|']")
        await page.wait_for_selector("#thread-messages .ephemeral", timeout=15000)
        assert "Only visible to you" in await page.inner_text("#thread-messages .ephemeral")
        await page.select_option("#as-user", "U0BOB")
        assert await page.locator("#thread-messages .ephemeral").count() == 0
        await page.select_option("#as-user", "U0ALICE")

        # a slow reply, stopped with its Stop button
        await page.click("#close-thread")
        await page.fill("#text", "@agent slow please")
        await page.click("#send")
        stop_button = page.locator("#thread-messages button[data-action='stop_run']")
        await stop_button.first.wait_for(timeout=15000)
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#thread-messages .content')]"
            ".some(e => e.innerText.includes('one word'))",
            timeout=15000,
        )
        await stop_button.first.click()
        await page.wait_for_function(
            "() => document.querySelector('#thread-messages').innerText.includes('Stopped.')", timeout=15000
        )
        await page.screenshot(path=str(tmp_path / "2-stopped.png"))

        # a tool that asks first: approve it
        await page.click("#close-thread")
        await page.fill("#text", "@agent restart billing")
        await page.click("#send")
        approve = page.locator("#thread-messages button[data-action='tool_approve']")
        await approve.first.wait_for(timeout=15000)
        await page.screenshot(path=str(tmp_path / "3-confirm.png"))
        await approve.first.click()
        await page.wait_for_function(
            "() => document.querySelector('#thread-messages').innerText.includes('billing restarted')",
            timeout=15000,
        )
        await page.screenshot(path=str(tmp_path / "4-approved.png"))

        # a file attached with the paperclip reaches the agent; the person's message shows it
        await page.click("#close-thread")
        upload = tmp_path / "q3.csv"
        upload.write_text("region,amount\nnorth,120\n")
        await page.set_input_files("#attach", str(upload))
        await page.wait_for_function("() => document.querySelector('#attached').innerText.includes('q3.csv')")
        await page.fill("#text", "@agent what is in this file?")
        await page.click("#send")
        await page.wait_for_function(
            "() => document.querySelector('#thread-messages').innerText"
            ".includes('I was given: code_interpreter: q3.csv')",
            timeout=15000,
        )
        assert await page.locator("#messages a.file", has_text="q3.csv").count() == 1
        assert await page.inner_text("#attached") == ""  # sent: the picker is cleared

        # the agent makes a chart and a CSV: the picture is shown, the table is a download
        await page.click("#close-thread")
        await page.fill("#text", "@agent chart our sales")
        await page.click("#send")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#thread-messages figure.file img')]"
            ".some(i => i.complete && i.naturalWidth > 0)",
            timeout=20000,
        )
        csv_link = page.locator("#thread-messages a.file", has_text="sales_by_region.csv")
        await csv_link.wait_for(timeout=15000)
        async with page.expect_download() as download_info:
            await csv_link.click()
        download = await download_info.value
        saved = tmp_path / "downloaded.csv"
        await download.save_as(saved)
        assert saved.read_text().startswith("region,sales\nnorth,120")
        reply = await page.inner_text("#thread-messages")
        assert (
            "`sales_by_region.csv` (attached below)" in reply
            or "sales_by_region.csv (attached below)" in reply
        )
        await page.screenshot(path=str(tmp_path / "5-files.png"))
        await browser.close()
    assert all(
        (tmp_path / name).stat().st_size > 0 for name in ("1-answer.png", "2-stopped.png", "4-approved.png")
    )


async def test_the_assistant_pane_native_stream_task_cards_and_feedback_in_a_browser(
    playground: str, tmp_path: Path
) -> None:
    """Slack's AI surfaces as a person meets them in the playground: the writer switched to
    native streams, the assistant pane opened from #general, a suggested prompt clicked, a
    tool run shown as a task card, Stop offered privately while it streams, a thumbs up
    recorded (and acknowledged to the clicker)."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 860})
        await page.goto(playground)
        await page.wait_for_selector("#channel-list li")
        async with page.expect_response("**/api/writer"):
            await page.select_option("#writer", "native")

        await page.click("#open-pane")
        prompt = page.locator("#pane-prompts button.prompt", has_text="Summarize this channel")
        await prompt.wait_for(timeout=15000)
        assert "Ask me anything" in await page.inner_text("#thread-messages")
        await prompt.click()
        await page.wait_for_function(
            "() => document.querySelector('#thread-messages').innerText.includes('scripted demo agent')",
            timeout=20000,
        )
        await page.wait_for_function(
            "() => document.querySelector('#thread-title').innerText.startsWith('Summarize the recent')",
            timeout=15000,
        )

        await page.fill("#thread-text", "what time is it?")
        await page.click("#thread-send")
        card = page.locator("#thread-messages .task.complete", has_text="current_time")
        await card.wait_for(timeout=20000)
        await page.wait_for_function(
            "() => document.querySelector('#thread-messages').innerText.includes('In Amsterdam it is now')",
            timeout=20000,
        )
        await page.wait_for_function(
            "() => !document.querySelector('#thread-messages .streaming')", timeout=20000
        )
        await page.screenshot(path=str(tmp_path / "assistant-pane.png"))

        # a stream carries no buttons: Stop was offered to the asker alone
        assert await page.locator("#thread-messages .ephemeral button[data-action='stop_run']").count() >= 1
        good = page.locator("#thread-messages button[data-value^='good|']")
        await good.last.click()
        thanks = page.locator("#thread-messages .ephemeral", has_text="your feedback")
        await thanks.wait_for(timeout=15000)
        assert "Only visible to you" in await thanks.inner_text()
        await browser.close()
    assert (tmp_path / "assistant-pane.png").stat().st_size > 0


def test_make_run_with_no_settings_starts_the_playground_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PROJECT_", "AGENT", "BOT_"))}
    started = time.monotonic()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"ARGS=--port {port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any("Playground: http://127.0.0.1" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        # a hang guard, not a goal (the fresh-clone time is measured for the closing note)
        assert time.monotonic() - started < 180
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "slack-agent-bot playground" in page.text
        output = "".join([*lines, process.stdout.readline()])
        assert "demo on emulated services" in output and "Traceback" not in output
        assert "Missing for Slack: SLACK_BOT_TOKEN" in output and "manifest.yml" in output
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        process.wait(30)
    with socket.socket() as probe:  # everything it started is gone: the port is free again
        probe.bind(("127.0.0.1", port))


async def playground_client(port: int) -> httpx.AsyncClient:
    """A client the playground accepts: its page's token and its own origin, as the page sends."""
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"{base}/")).text
    token = page.split('name="playground-token" content="', 1)[1].split('"', 1)[0]
    return httpx.AsyncClient(base_url=base, headers={"X-Playground-Token": token, "Origin": base})


async def test_with_agent_settings_the_playground_uses_that_agent() -> None:
    from bot.emulators.agents import AgentServiceEmulator

    # stands in for the team's real agent: the playground must talk to it, not to its own
    async with AgentServiceEmulator(token="real-token") as real:
        port = _free_port()
        stop, ready = asyncio.Event(), asyncio.Event()
        settings = Settings(
            PROJECT_ENDPOINT=real.endpoint,
            AGENT_ID="asst_demo",  # type: ignore[call-arg]
            AGENTS_ACCESS_TOKEN="real-token",
            BOT_TOOLS_DIR="",
            _env_file=None,
        )
        task = asyncio.create_task(serve(settings, port=port, ready=ready, stop=stop))
        await asyncio.wait_for(ready.wait(), 30)
        try:
            async with await playground_client(port) as http:
                answer = await http.get("/api/state")
                assert answer.status_code == 200, answer.text
                state = answer.json()
                assert state["real_agent"] is True
                posted = (
                    await http.post(
                        "/api/post",
                        json={"user": "U0ALICE", "channel": "D0ALICE", "text": "hello real agent"},
                    )
                ).json()
                for _ in range(100):
                    state = (await http.get("/api/state")).json()
                    replies = [m for m in state["messages"] if m["bot"] and m["thread_ts"] == posted["ts"]]
                    if replies and replies[0]["blocks"][0]["text"] == "You said: hello real agent":
                        break
                    await asyncio.sleep(0.1)
            assert replies[0]["blocks"][0]["text"] == "You said: hello real agent"
            assert len(real.runs) == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def test_the_playground_runs_on_new_foundry_agents_too() -> None:
    port = _free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    settings = Settings(BOT_TOOLS_DIR=str(ROOT / "tools"), _env_file=None)  # type: ignore[call-arg]
    task = asyncio.create_task(serve(settings, port=port, ready=ready, stop=stop, backend="foundry"))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        async with await playground_client(port) as http:
            posted = (
                await http.post(
                    "/api/post", json={"user": "U0ALICE", "channel": "D0ALICE", "text": "what time is it"}
                )
            ).json()
            text = ""
            for _ in range(200):
                state = (await http.get("/api/state")).json()
                replies = [m for m in state["messages"] if m["bot"] and m["thread_ts"] == posted["ts"]]
                text = replies[0]["blocks"][0]["text"] if replies and replies[0]["blocks"] else ""
                if "In Amsterdam it is now" in text:
                    break
                await asyncio.sleep(0.05)
            assert "In Amsterdam it is now" in text
            timeline = (await http.get("/api/state")).json()["timeline"]
            assert any(e["kind"] == "agent" and e["event"] == "response.output_text.delta" for e in timeline)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_the_playgrounds_attachments_are_checked_and_served_safely(playground: str) -> None:
    """What the page attaches is refused with a clear reason when it cannot be a file; what
    the workspace holds is served as a picture only when it is one, else as a download."""
    import base64

    from tests.stack import eventually

    port = int(playground.rsplit(":", 1)[1])
    async with await playground_client(port) as http:
        post = {"user": "U0ALICE", "channel": "C0GENERAL", "text": "look"}
        bad = await http.post("/api/post", json={**post, "files": [{"name": "a.csv", "data": "not base64!"}]})
        assert (
            bad.status_code == 400 and "a.csv: the file's content is not valid base64" in bad.json()["error"]
        )
        nameless = await http.post("/api/post", json={**post, "files": [{"name": "", "data": ""}]})
        assert nameless.status_code == 400 and "plain name" in nameless.json()["error"]
        many = await http.post("/api/post", json={**post, "files": [{"name": "a", "data": ""}] * 11})
        assert many.status_code == 400 and "at most 10 files" in many.json()["error"]

        page = "<script>alert(document.cookie)</script>"
        files = [
            {"name": "page.html", "type": "text/html", "data": base64.b64encode(page.encode()).decode()},
            {"name": "dot.png", "type": "image/png", "data": base64.b64encode(b"\x89PNG fake").decode()},
        ]
        posted = await http.post(
            "/api/post", json={"user": "U0ALICE", "channel": "C0GENERAL", "text": "", "files": files}
        )
        assert posted.status_code == 200, posted.text
        shared: dict[str, str] = {}

        async def seen() -> bool:
            state = (await http.get("/api/state")).json()
            message = next((m for m in state["messages"] if m["ts"] == posted.json()["ts"]), None)
            shared.update({f["name"]: f["id"] for f in (message or {}).get("files") or []})
            return len(shared) == 2

        await eventually(seen, "the shared files on the message")
        html = await http.get(f"/api/files/{shared['page.html']}")
        assert html.status_code == 200 and html.text == page
        assert html.headers["content-type"] == "application/octet-stream"
        assert html.headers["content-disposition"] == 'attachment; filename="page.html"'
        assert html.headers["x-content-type-options"] == "nosniff"
        image = await http.get(f"/api/files/{shared['dot.png']}")
        assert image.headers["content-type"] == "image/png" and "content-disposition" not in image.headers
        assert (await http.get("/api/files/FNOPE")).status_code == 404
        http.headers.pop("X-Playground-Token")
        assert (
            await http.get(f"/api/files/{shared['dot.png']}")
        ).status_code == 403  # the token guards files too
