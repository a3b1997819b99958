"""The security review's findings (issue 13), one test each, named after the finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.settings import Settings
from tests.stack import start_stack, status_lines, wait_for_prompt

BOT = "<@U0BOT>"
TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"


async def test_metrics_port_serves_only_metrics_and_health_on_loopback(tmp_path: Path) -> None:
    """Finding 1: the Socket Mode metrics listener was the whole app, unsigned, on 0.0.0.0."""
    from bot.runtime import serve_ops
    from bot.slack.app import http_app

    assert Settings(_env_file=None).metrics_host == "127.0.0.1"  # type: ignore[call-arg]
    stack = await start_stack(tmp_path=tmp_path)
    try:
        settings = stack.bot.settings.model_copy(update={"metrics_port": _free_port()})
        runner = await serve_ops(settings, stack.bot)
        assert runner is not None
        try:
            host, port = runner.addresses[0][:2]
            assert host == "127.0.0.1"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/metrics")).status_code == 200
                assert (await http.get("/healthz")).status_code == 200
                forged = await http.post("/slack/events", json={"type": "event_callback"})
                assert forged.status_code == 404
        finally:
            await runner.cleanup()
        # never mount /slack/events where Slack's signature is not checked
        with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
            http_app(stack.bot.bolt, signing_secret=None)
        # in HTTP mode /metrics is not on the public Slack port
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{stack.url}/metrics")).status_code == 404
            assert (await http.get(f"{stack.ops_url}/metrics")).status_code == 200
    finally:
        await stack.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_ = Any


async def test_playground_refuses_other_origins_other_hosts_and_requests_without_its_token() -> None:
    """Finding 2: /api/* took text/plain cross-origin POSTs and any Host (DNS rebinding)."""
    import asyncio

    from bot.playground.server import serve

    port = _free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(Settings(BOT_TOOLS_DIR="", _env_file=None), port=port, ready=ready, stop=stop)  # type: ignore[call-arg]
    )
    await asyncio.wait_for(ready.wait(), 30)
    base = f"http://127.0.0.1:{port}"
    post = {"user": "U0ALICE", "channel": "D0ALICE", "text": "hello"}
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            rebound = await http.get("/", headers={"Host": f"attacker.example:{port}"})
            assert rebound.status_code == 403
            page = (await http.get("/")).text
            token = page.split('name="playground-token" content="', 1)[1].split('"', 1)[0]
            assert len(token) >= 20
            simple = await http.post(
                "/api/post",
                content='{"user": "U0ALICE", "channel": "D0ALICE", "text": "x"}',
                headers={"Content-Type": "text/plain", "Origin": "http://attacker.example"},
            )
            assert simple.status_code in (403, 415)
            no_token = await http.post("/api/post", json=post, headers={"Origin": base})
            assert no_token.status_code == 403
            other_origin = await http.post(
                "/api/post",
                json=post,
                headers={"Origin": "http://attacker.example", "X-Playground-Token": token},
            )
            assert other_origin.status_code == 403
            assert (await http.get("/api/state")).status_code == 403
            assert (await http.get("/api/state", headers={"X-Playground-Token": "guess"})).status_code == 403
            rebound_api = await http.get(
                "/api/state", headers={"X-Playground-Token": token, "Host": f"attacker.example:{port}"}
            )
            assert rebound_api.status_code == 403
            ok = await http.post(
                "/api/post", json=post, headers={"Origin": base, "X-Playground-Token": token}
            )
            assert ok.status_code == 200 and ok.json()["ok"] is True
            state = await http.get("/api/state", headers={"X-Playground-Token": token})
            texts = [m["text"] for m in state.json()["messages"]]
            assert texts.count("hello") == 1 and "x" not in texts  # nothing refused got through
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("callback https://bot.example/slack/oauth_redirect?code=4f2a91c7d3&state=x", "4f2a91c7d3"),
        ("blob https://acct.blob.core.windows.net/c/f?sv=2024&sig=AbC%2Bd3F%3D&se=1", "AbC%2Bd3F%3D"),
        ("config api_key=sk-live-51Habc", "sk-live-51Habc"),
        ("header x-api-key: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
        ("user token xoxc-1234-5678-abcdef", "1234-5678-abcdef"),
        ("refresh xoxe.xoxp-1-Mi0yLTEyMw", "Mi0yLTEyMw"),
        ("rotation xoxe-1-My0xLTQ1Ng", "My0xLTQ1Ng"),
        ("app token xapp-1-A0B1C2-3456-deadbeef", "deadbeef"),
        ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXBhcnQ", "c2lnbmF0dXJlLXBhcnQ"),
    ],
)
def test_tool_errors_and_secrets_log_redaction_covers_every_credential_shape(raw: str, secret: str) -> None:
    """Finding 4 (logs): redaction missed sig=, api_key=, code=, x-api-key, xoxc-/xoxe-/xapp-, JWTs."""
    from bot.logs import redact

    assert secret not in redact(raw)


def test_tool_errors_and_secrets_redaction_keeps_plain_fields() -> None:
    from bot.logs import redact

    assert redact("turn.run_failed code=rate_limit_exceeded") == "turn.run_failed code=rate_limit_exceeded"


async def test_tool_errors_and_secrets_the_agent_gets_the_type_and_a_reference_only() -> None:
    """Finding 4 (tools): a tool's exception text went to the agent verbatim."""
    from bot.agents.events import ToolCall
    from bot.plugins import PluginToolRunner, Registry, tool
    from bot.plugins.context import ToolContext
    from bot.plugins.registry import specs_in

    @tool
    def leaky() -> str:
        """Fails with a secret in its message."""
        raise RuntimeError("db password=hunter2 at postgres://10.0.0.5/prod")

    registry = Registry()
    for spec in specs_in([leaky]):
        registry.add(spec, "test")
    runner = PluginToolRunner(registry)
    context = ToolContext(user_id="U1", user_name="a", team="T", channel="C", thread_ts="1")
    [output] = await runner.run([ToolCall("call_1", "leaky", "{}")], context)
    text = output["output"]
    assert "RuntimeError" in text and "ref" in text
    assert "hunter2" not in text and "10.0.0.5" not in text and "postgres" not in text


async def test_tool_errors_and_secrets_agent_service_errors_in_slack_carry_no_host_path_or_body(
    tmp_path: Path,
) -> None:
    """Finding 4 (Slack): an agent-service error showed its host, path and body in the thread."""
    stack = await start_stack(tmp_path=tmp_path)
    try:
        stack.agent.fail_next(
            "POST",
            "/threads/*/runs",
            status=200,
            times=10,
            body="<html>upstream 10.1.2.3 trace: /var/app/secret.py</html>",
            content_type="text/html",
        )
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
        await stack.settle()
        text = stack.reply_text("C0GENERAL", ts)
        assert "agent service" in text and "ref:" in text
        for leak in ("/threads", "10.1.2.3", "<html>", "secret.py", "127.0.0.1", "api/projects"):
            assert leak not in text
    finally:
        await stack.close()


async def test_hung_sync_tools_get_their_own_bounded_threads_and_a_full_pool_refuses_at_once() -> None:
    """Finding 5: hung sync tools starved the loop's default executor (DNS for Slack and the agent)."""
    import asyncio
    import threading

    from bot.agents.events import ToolCall
    from bot.plugins import PluginToolRunner, Registry, tool
    from bot.plugins.context import ToolContext
    from bot.plugins.registry import specs_in
    from bot.plugins.workers import ToolWorkers

    release = threading.Event()
    threads: list[str] = []

    @tool(timeout=0.2)
    def hangs() -> str:
        """Waits on a network call that never answers."""
        threads.append(threading.current_thread().name)
        release.wait(30)
        return "late"

    registry = Registry()
    for spec in specs_in([hangs]):
        registry.add(spec, "test")
    runner = PluginToolRunner(registry, workers=ToolWorkers(2))
    context = ToolContext(user_id="U1", user_name="a", team="T", channel="C", thread_ts="1")
    try:
        first = await runner.run([ToolCall("c1", "hangs", "{}"), ToolCall("c2", "hangs", "{}")], context)
        assert all("timed out" in o["output"] for o in first)
        [third] = await runner.run([ToolCall("c3", "hangs", "{}")], context)
        assert "not run: all 2 tool threads are busy" in third["output"]
        assert threads and all(name.startswith("tool") for name in threads)
        # the loop's own executor is free: a DNS lookup still answers
        await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("localhost", 80), 10)
    finally:
        release.set()


def _blocks_text(blocks: list[dict[str, Any]], kinds: tuple[str, ...]) -> str:
    """The text of the blocks Slack renders as mrkdwn (what can ping or link)."""
    out = []
    for block in blocks or []:
        text = block.get("text")
        if isinstance(text, dict) and text.get("type") in kinds:
            out.append(text.get("text", ""))
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("type") in kinds:
                out.append(element.get("text", ""))
    return "\n".join(out)


async def test_approval_prompts_escape_arguments_and_decline_what_cannot_be_shown(tmp_path: Path) -> None:
    """Finding 3: arguments sat in a code span unescaped: ``` ended it, <!channel> and a spoofed
    link rendered beside Approve."""
    import asyncio

    from bot.plugins import tool

    ran: list[str] = []

    @tool(confirm=True)
    def send_note(text: str) -> str:
        """Sends a note."""
        ran.append(text)
        return "sent"

    hostile = "ok``` <!channel> <https://evil.example/login|Approve here> *bold*"
    script = {
        "turns": [
            {
                "match": "short",
                "actions": [
                    {"tool_calls": [{"name": "send_note", "arguments": {"text": hostile}}]},
                    {"text": "Result: ${output}"},
                ],
            },
            {
                "match": "long",
                "actions": [
                    {"tool_calls": [{"name": "send_note", "arguments": {"text": "y" * 5000}}]},
                    {"text": "Result: ${output}"},
                ],
            },
        ]
    }
    stack = await start_stack(script, tmp_path=tmp_path, extra_tools=[send_note])
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} short")
        prompt = None
        for _ in range(300):
            prompt = next(
                (
                    m
                    for m in stack.replies("C0GENERAL", ts)
                    if any(b.get("block_id") == "confirm" for b in m.blocks or [])
                ),
                None,
            )
            if prompt:
                break
            await asyncio.sleep(0.02)
        assert prompt is not None
        rendered = _blocks_text(prompt.blocks, ("mrkdwn",)) + prompt.text
        assert "<!channel>" not in rendered and "<https://evil.example" not in rendered
        literal = str(prompt.blocks)
        assert "evil.example/login" in literal  # shown in full, as literal text
        key = next(b for b in prompt.blocks if b.get("block_id") == "confirm")["elements"][0]["value"]
        assert await stack.slack.click("U0ALICE", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
        await stack.settle()
        assert ran == [hostile]
        ts2 = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} long")
        await stack.settle()
        assert len(ran) == 1  # never run with arguments the approver could not see
        assert "too long to show" in stack.reply_text("C0GENERAL", ts2)
    finally:
        await stack.close()


async def test_user_lookup_is_closed_to_guests_and_slack_connect_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 7: user_lookup exposed the directory to guests and Slack Connect users."""
    import importlib.util

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.emulators.slack import SlackEmulator
    from bot.plugins.context import ToolContext

    path = TOOLS_DIR / "user_lookup.py"
    module_spec = importlib.util.spec_from_file_location("user_lookup_under_test", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    lookup = module.lookup_slack_user

    slack = SlackEmulator()
    await slack.start()
    try:
        slack.add_user("U0GUEST", "gus", "Gus Guest", guest=True)
        slack.add_user("U0EXT", "ext", "Ext Ernal", team_id="T0OTHER")
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)

        async def ask(user: str, *, admin: bool = False) -> list[dict[str, Any]]:
            ctx = ToolContext(
                user_id=user,
                user_name=user,
                team=slack.team_id,
                channel="C0GENERAL",
                thread_ts="1",
                slack=client,
                is_admin=admin,
            )
            return await lookup(ctx, "alice")

        assert (await ask("U0ALICE"))[0]["name"] == "alice"
        assert "refused" in (await ask("U0GUEST"))[0]
        assert "refused" in (await ask("U0EXT"))[0]
        assert (await ask("U0GUEST", admin=True))[0]["name"] == "alice"
        monkeypatch.setenv("BOT_USER_LOOKUP_ACCESS", "admins")
        assert "refused" in (await ask("U0ALICE"))[0]
        monkeypatch.setenv("BOT_USER_LOOKUP_ACCESS", "everyone")
        assert (await ask("U0GUEST"))[0]["name"] == "alice"
    finally:
        await slack.stop()


async def test_slash_command_stop_and_approve_respect_the_allow_lists(tmp_path: Path) -> None:
    """Finding 9: the slash command, Stop and Approve skipped BOT_ALLOWED_TEAMS/CHANNELS."""
    from slack_sdk.web.async_client import AsyncWebClient

    stack = await start_stack(tmp_path=tmp_path, settings_overrides={"allowed_channels": "C0OTHER"})
    try:
        stack.slack.add_channel("C0OTHER", "other")
        stack.slack.add_user("U0ADMIN", "admin", "Ada Admin")
        listing = await stack.slack.slash_command("U0ADMIN", "C0GENERAL", "/agent-tools")
        assert "not available in this channel" in str(listing)
        allowed = await stack.slack.slash_command("U0ADMIN", "C0OTHER", "/agent-tools")
        assert "not available" not in str(allowed)
        # a bot message with Stop and Approve, left in a channel the allow-list no longer has
        as_bot = AsyncWebClient(token=stack.slack.bot_token, base_url=stack.slack.api_url)
        buttons = [
            {
                "type": "button",
                "action_id": action,
                "value": value,
                "text": {"type": "plain_text", "text": action},
            }
            for action, value in (("stop_run", "turn-x"), ("tool_approve", "key-x"))
        ]
        posted = await as_bot.chat_postMessage(
            channel="C0GENERAL", text="working", blocks=[{"type": "actions", "elements": buttons}]
        )
        before = len(stack.slack.calls)
        await stack.slack.click("U0ALICE", "C0GENERAL", posted["ts"], "stop_run", "turn-x")
        await stack.slack.click("U0ALICE", "C0GENERAL", posted["ts"], "tool_approve", "key-x")
        await stack.settle()
        assert not [c for c in stack.slack.calls[before:] if c.method == "chat.postEphemeral"]
    finally:
        await stack.close()


async def test_slash_command_shows_broken_plugins_errors_to_admins_only(tmp_path: Path) -> None:
    """Finding 9: `/agent-tools list` showed a broken plugin's exception text to anyone."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "broken.py").write_text("raise RuntimeError('db at 10.9.8.7 refused user svc_bot')\n")
    stack = await start_stack(tmp_path=tmp_path, tools_dir=str(tools))
    try:
        stack.slack.add_user("U0ADMIN", "admin", "Ada Admin")
        member = str(await stack.slack.slash_command("U0ALICE", "C0GENERAL", "/agent-tools"))
        assert "broken" in member and "10.9.8.7" not in member and "svc_bot" not in member
        admin = str(await stack.slack.slash_command("U0ADMIN", "C0GENERAL", "/agent-tools"))
        assert "10.9.8.7" in admin
    finally:
        await stack.close()


def test_status_line_and_citations_labels_are_escaped_and_only_http_links_survive() -> None:
    """Finding 8 (citations): titles went into Markdown unescaped; any URL scheme was linked."""
    from bot.agents.events import Annotation
    from bot.slack.render import Citations

    citations = Citations()
    citations.add(
        [
            Annotation(
                "url_citation",
                marker="【1】",
                url="https://docs.example.com/a",
                title="Docs](https://evil.example) <!channel>",
            ),
            Annotation("url_citation", marker="【2】", url="javascript:alert(1)", title="click me"),
            Annotation("url_citation", marker="【3】", url="https://ok.example/p(1) x", title="Paren"),
        ]
    )
    body = citations.render("See 【1】 and 【2】 and 【3】.", final=True) + citations.footer()
    assert "](https://evil.example)" not in body and "<!channel>" not in body
    assert "javascript:" not in body
    assert "docs.example.com" in body and "(ok.example)" in body
    assert "[1](https://docs.example.com/a)" in body
    assert "https://ok.example/p%281%29%20x" in body


async def test_status_line_and_citations_the_status_names_only_registry_tools(tmp_path: Path) -> None:
    """Finding 8 (status line): tool names from the agent went into mrkdwn unescaped."""
    from tests.test_slack_e2e import WeatherTools

    script = {
        "turns": [
            {
                "actions": [
                    {"tool_calls": [{"name": "<!channel> *urgent*", "arguments": {}}]},
                    {"sleep": 0.3},
                    {"text": "done"},
                ]
            }
        ]
    }
    tools = WeatherTools()
    stack = await start_stack(script, tmp_path=tmp_path, tools=tools)
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} go")
        tools.until = lambda: any("an unknown tool" in s for s in status_lines(stack, "C0GENERAL", ts))
        await stack.settle()
        statuses = status_lines(stack, "C0GENERAL", ts)
        assert statuses and all("<!channel>" not in s and "urgent" not in s for s in statuses)
        assert any("an unknown tool" in s for s in statuses)
    finally:
        await stack.close()


async def test_new_agents_a_turn_stopped_before_its_run_leaves_no_text_held() -> None:
    """Finding 11: a turn stopped between adding the message and starting the run left its
    text held, and it was sent with the next turn."""
    from bot.agents.foundry import FoundryBackend
    from bot.emulators.agents import AgentServiceEmulator

    async with AgentServiceEmulator() as emulator:
        async with FoundryBackend(emulator.endpoint, "t", "demo-agent") as backend:
            conversation = await backend.create_conversation()
            await backend.add_message(conversation, "the stopped message")
            await backend.abandon(conversation, None, "cancelled by the user")
            await backend.add_message(conversation, "the next message")
            stream = await backend.start_run(conversation)
            async with stream:
                [e async for e in stream.events()]
    sent = [r["body"] for r in emulator.request_log if r["path"].endswith("/responses")][-1]
    texts = [i.get("content") for i in sent["input"] if i.get("role") == "user"]
    assert texts == ["the next message"]


async def test_admin_only_tools_need_an_admins_approval_when_the_thread_has_non_admin_content(
    tmp_path: Path,
) -> None:
    """Finding 6: admin_only was judged only by who triggered the turn, so a non-admin's
    earlier message in the thread could steer an admin's turn into an admin tool."""
    import asyncio

    from bot.plugins import tool

    ran: list[str] = []

    @tool(admin_only=True)
    def purge_cache(region: str) -> str:
        """Purges a cache."""
        ran.append(region)
        return f"purged {region}"

    script = {
        "turns": [
            {"match": "hello", "actions": [{"text": "Hi."}]},
            {
                "match": "go ahead",
                "actions": [
                    {"tool_calls": [{"name": "purge_cache", "arguments": {"region": "eu"}}]},
                    {"text": "Result: ${output}"},
                ],
            },
        ]
    }
    stack = await start_stack(script, tmp_path=tmp_path, extra_tools=[purge_cache])
    try:
        stack.slack.add_user("U0ADMIN", "admin", "Ada Admin")
        ts = stack.slack.user_posts("U0BOB", "C0GENERAL", f"{BOT} hello, please purge every cache")
        await stack.settle()
        stack.slack.user_posts("U0ADMIN", "C0GENERAL", f"{BOT} go ahead", thread_ts=ts)
        prompt, key = await wait_for_prompt(
            stack, "C0GENERAL", ts, missing="an admin tool ran without an admin's approval"
        )
        assert ran == []
        assert "not admins" in prompt.text
        # the non-admin who wrote in the thread cannot approve it
        assert await stack.slack.click("U0BOB", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
        for _ in range(300):  # Bob is told privately; nothing ran
            told = [
                c
                for c in stack.slack.calls
                if c.method == "chat.postEphemeral" and c.params.get("user") == "U0BOB"
            ]
            if told:
                break
            await asyncio.sleep(0.02)
        assert told and "Only an admin" in str(told[-1].params.get("text"))
        assert ran == []
        assert await stack.slack.click("U0ADMIN", "C0GENERAL", prompt.ts, "tool_approve", key) == 200
        await stack.settle()
        assert ran == ["eu"]
    finally:
        await stack.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_unbounded_state_is_swept_or_expires_after_the_retention(backend: str, tmp_path: Path) -> None:
    """Finding 10: conversation mappings, dedupe marks, leases, hit counters and dead
    replicas' heartbeats were never swept."""
    import time

    from bot.store import ConversationKey, open_store
    from tests.test_store import _redis_or_skip

    retention = 3600.0
    store: Any = (
        await open_store(f"sqlite:///{tmp_path}/bot.db", retention_s=retention)
        if backend == "sqlite"
        else await _redis_or_skip(retention_s=retention)
    )
    try:
        old, fresh = ConversationKey("T", "C", "1.0"), ConversationKey("T", "C", "2.0")
        await store.set_agent_thread(old, "thread_old")
        await store.set_agent_thread(fresh, "thread_fresh")
        await store.claim("event", "Ev1", 0.01)
        await store.acquire_lease("replica:dead", "dead", 0.01)
        await store.hit("user-runs", "T/U1", 0.01)
        if backend == "sqlite":  # make the old mapping older than the retention
            await store.db.execute(
                "UPDATE conversations SET created_at = ? WHERE thread_ts = '1.0'",
                (time.time() - 2 * retention,),
            )
            await store.db.commit()
            await asyncio.sleep(0.05)
            removed = await store.sweep()
            assert removed >= 3  # the old mapping goes with its agent conversation (retention)
            counts = {
                table: (await (await store.db.execute(f"SELECT COUNT(*) FROM {table}")).fetchone())[0]
                for table in ("claims", "leases", "hits")
            }
            assert counts == {"claims": 0, "leases": 0, "hits": 0}
            assert await store.get_agent_thread(old) is None
            assert await store.conversations_due() == [(old, "thread_old")]  # to delete, then forget
        else:  # Redis: every key carries a TTL, the mapping the retention
            ttl = await store.r.ttl(store.key("conv", fresh.as_str()))
            assert 0 < ttl <= retention
            assert await store.sweep() == 0
        assert await store.get_agent_thread(fresh) == "thread_fresh"
    finally:
        await store.close()


import asyncio  # noqa: E402


async def test_unbounded_state_the_running_bot_sweeps_its_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="bot.recovery")
    stack = await start_stack(tmp_path=tmp_path)
    try:
        assert any(r.getMessage() == "recovery.store_swept" for r in caplog.records)
    finally:
        await stack.close()
