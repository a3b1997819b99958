"""Traces (OpenTelemetry): a span per Slack event and per turn, with the agent run, each tool
call and each Slack write beneath, carrying the ids operators search by (Slack event id,
channel, thread; agent thread and run; tool). Exported by OTLP (HTTP/protobuf) when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, to Azure Monitor when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is; with neither, no SDK is loaded and every span
is the API's no-op: off, and free.

A turn may be answered on another replica than the one that took its event: the event's
trace context travels with the queued turn (W3C ``traceparent``), so the turn's span is its
child wherever it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .logs import log

logger = logging.getLogger("bot.telemetry")
_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP: Tracer = trace.NoOpTracer()


class _State:
    tracer: Tracer = _NOOP
    provider: Any = None  # the SDK's TracerProvider, when exporting


def configure(
    *,
    otlp_endpoint: str = "",
    azure_connection_string: str = "",
    service_name: str = "slack-agent-bot",
    replica: str = "",
) -> bool:
    """Export spans where the settings say; True when something exports. Called once per bot."""
    if not otlp_endpoint and not azure_connection_string:
        _State.tracer, _State.provider = _NOOP, None
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.name": service_name, **({"service.instance.id": replica} if replica else {})}
    provider = TracerProvider(resource=Resource.create(attributes))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):  # the base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT is
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if azure_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        exporter = AzureMonitorTraceExporter(connection_string=azure_connection_string)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _State.tracer, _State.provider = provider.get_tracer("slack-agent-bot"), provider
    log(
        logger,
        "telemetry.on",
        otlp=otlp_endpoint or None,
        azure_monitor=bool(azure_connection_string) or None,
    )
    return True


async def shutdown() -> None:
    """Send what is buffered, then stop exporting (off the event loop: exporters block)."""
    provider = _State.provider
    _State.tracer, _State.provider = _NOOP, None
    if provider is not None:
        await asyncio.to_thread(provider.shutdown)


async def flush() -> None:
    if _State.provider is not None:
        await asyncio.to_thread(_State.provider.force_flush)


def tracer() -> Tracer:
    return _State.tracer


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, *, parent: str = "") -> Iterator[Span]:
    """A span around a block (a child of the current one, or of ``parent``, a traceparent);
    an exception marks it failed and goes on."""
    context = _PROPAGATOR.extract({"traceparent": parent}) if parent else None
    clean = {k: v for k, v in (attributes or {}).items() if v not in (None, "")}
    with _State.tracer.start_as_current_span(name, context=context, attributes=clean) as current:
        try:
            yield current
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def traceparent() -> str:
    """The current span's context, to carry with a queued turn ("" when tracing is off)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=otel_context.get_current())
    return carrier.get("traceparent", "")


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (an id learnt along the way)."""
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value not in (None, ""):
            current.set_attribute(key, value)
