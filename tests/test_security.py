"""The security review's findings (issue 13), one test each, named after the finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.settings import Settings
from tests.stack import start_stack

BOT = "<@U0BOT>"


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
