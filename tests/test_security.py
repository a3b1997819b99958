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
