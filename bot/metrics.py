"""Prometheus metrics (``/metrics`` in HTTP mode, ``BOT_METRICS_PORT`` in Socket Mode).

One registry per bot, so several bots in one process (tests, the playground) never mix.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns_started = Counter(
            "bot_turns_started", "Turns started (messages the bot answers)", registry=r
        )
        self.turns_ended = Counter(
            "bot_turns_ended", "Turns ended, by outcome", ["outcome"], registry=r
        )  # completed | failed | stopped | error | interrupted | limited
        self.first_write = Histogram(
            "bot_time_to_first_write_seconds",
            "Event received to the first Slack write",
            buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.stream_duration = Histogram(
            "bot_stream_duration_seconds",
            "How long a reply streamed",
            buckets=(1, 2, 5, 10, 20, 40, 60, 120, 300),
            registry=r,
        )
        self.slack_rate_limited = Counter("bot_slack_rate_limited", "Slack 429 answers", registry=r)
        self.tool_calls = Counter("bot_tool_calls", "Tool calls, by outcome", ["outcome"], registry=r)
        self.feedback = Counter(
            "bot_answer_feedback", "Thumbs up / down on answers, by rating", ["rating"], registry=r
        )
        self.active_streams = Gauge("bot_active_streams", "Replies streaming right now", registry=r)
        self.recovered = Counter("bot_replies_recovered", "Replies finished by recovery", ["how"], registry=r)
        self.undelivered = Counter(
            "bot_replies_undelivered",
            "Replies Slack did not take before their delivery deadline (recovery delivers them later)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
