"""Traces: a turn's spans (Slack event -> turn -> agent run -> tool call, and the Slack
writes) reach an OTLP collector with the ids operators search by; with nothing configured,
tracing is off and no SDK is even loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot import telemetry
from tests.stack import eventually, start_stack

BOT = "<@U0BOT>"
ADD = '''
from bot.plugins import tool


@tool
def add_numbers(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b
'''


class Collector:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (protobuf, as the exporter sends)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _traces(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "service": service.get("service.name"),
                            "error": span.status.code == 2,
                        }
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    await found.start()
    yield found
    await found.stop()


async def test_a_turns_spans_reach_the_collector_with_the_ids_operators_search_by(
    tmp_path: Path, collector: Collector
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "add.py").write_text(ADD)
    script = {
        "turns": [
            {
                "actions": [
                    {"tool_calls": [{"name": "add_numbers", "arguments": {"a": 2, "b": 3}}]},
                    {"text": "The sum is ${output}."},
                ]
            }
        ]
    }
    stack = await start_stack(
        script,
        tmp_path=tmp_path,
        tools_dir=str(tools),
        settings_overrides={
            "otel_exporter_otlp_endpoint": collector.url,
            "otel_service_name": "bot-under-test",
        },
    )
    try:
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} add two and three")
        await stack.settle()
        assert stack.reply_text("C0GENERAL", ts) == "The sum is 5."

        async def exported() -> bool:
            await telemetry.flush()
            return bool(collector.named("tool.call")) and bool(collector.named("turn"))

        await eventually(exported, "the turn's spans at the collector")
    finally:
        await stack.close()
    [event] = collector.named("slack.event")
    [turn] = collector.named("turn")
    [run] = collector.named("agent.run")
    [call] = collector.named("tool.call")
    assert event["attributes"]["slack.event_id"].startswith("Ev")
    assert (
        event["attributes"]["slack.channel"] == "C0GENERAL" and event["attributes"]["slack.thread_ts"] == ts
    )
    # one trace: the event, the turn under it (the queued turn carried its context), the run...
    assert turn["trace"] == event["trace"] == run["trace"] == call["trace"]
    assert turn["parent"] == event["id"] and run["parent"] == turn["id"] and call["parent"] == run["id"]
    assert turn["attributes"]["slack.event_id"] == event["attributes"]["slack.event_id"]
    assert turn["attributes"]["turn.outcome"] == "completed"
    thread_id, run_id = run["attributes"]["agent.thread_id"], run["attributes"]["agent.run_id"]
    assert thread_id.startswith("thread_") and run_id.startswith("run_")
    assert turn["attributes"]["agent.run_id"] == run_id
    assert (call["attributes"]["tool.name"], call["attributes"]["tool.outcome"]) == ("add_numbers", "ok")
    # ... and the Slack writes the reply took (the placeholder goes up at intake: under the event)
    writes = collector.named("slack.chat.postMessage") + collector.named("slack.chat.update")
    assert writes and all(w["trace"] == event["trace"] for w in writes)
    assert {w["parent"] for w in writes} <= {event["id"], turn["id"]}
    assert {s["service"] for s in collector.spans} == {"bot-under-test"}


async def test_with_nothing_configured_tracing_is_off(tmp_path: Path) -> None:
    """No exporter configured: the API's no-op tracer, spans that record nothing, no context
    carried with turns (the bot pays a function call per span, nothing more)."""
    from opentelemetry import trace

    stack = await start_stack(tmp_path=tmp_path)
    try:
        assert isinstance(telemetry.tracer(), trace.NoOpTracer)
        with telemetry.span("turn", {"turn.id": "t1"}) as current:
            assert not current.is_recording() and telemetry.traceparent() == ""
        ts = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello")
        await stack.settle()
        assert stack.reply_text("C0GENERAL", ts) == "You said: hello"
    finally:
        await stack.close()
