"""What the playground's scripted agent does, to show the product's range."""

from __future__ import annotations

from typing import Any

from ..plugins import ToolContext, tool


def _long_part(i: int) -> str:
    text = f"### Part {i}\n\n" + "A long answer keeps going so it outgrows one Slack message. " * 12
    if i % 4 == 0:
        text += "\n\n```python\n" + "\n".join(f"step_{i}_{j} = {j} ** 2" for j in range(25)) + "\n```"
    return text


LONG = "\n\n".join(_long_part(i) for i in range(1, 31))

DEMO_SCRIPT: dict[str, Any] = {
    "delay": 0.04,
    "deltas": 24,
    "turns": [
        {
            "match": "time",
            "repeat": True,
            "actions": [
                {"text": "Let me check the clock. "},
                {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "Europe/Amsterdam"}}]},
                {"text": "In Amsterdam it is now: `${output}`."},
            ],
        },
        {"match": "long", "repeat": True, "actions": [{"text": LONG, "deltas": 160, "delay": 0.02}]},
        {
            "match": "slow",
            "repeat": True,
            "actions": [
                {"sleep": 1.0},
                {
                    "text": "This answer takes its time, one word after another, so you can press Stop. " * 6,
                    "deltas": 60,
                    "delay": 0.25,
                },
            ],
        },
        {
            "match": "restart",
            "repeat": True,
            "actions": [
                {"text": "Restarting a service needs your approval. "},
                {"tool_calls": [{"name": "restart_service", "arguments": {"service": "billing"}}]},
                {"text": "Result: ${output}"},
            ],
        },
        {
            "repeat": True,
            "actions": [
                {
                    "text": "Hello! I am a **scripted demo agent** running on emulated services.\n\n"
                    "Streaming replies are paced to Slack's rate limits, citations become links",
                    "deltas": 12,
                },
                {"citation": {"url": "https://api.slack.com/apis/rate-limits", "title": "Slack rate limits"}},
                {
                    "text": ", and code arrives intact:\n\n```python\nfrom bot.plugins import tool\n\n@tool\n"
                    'def add_numbers(a: int, b: int) -> int:\n    """Add two numbers."""\n'
                    "    return a + b\n```\n\nTry: *what time is it*, *long*, *slow* (then press Stop), "
                    "or *restart billing* (a tool that asks first).",
                    "deltas": 20,
                },
            ],
        },
    ],
}


@tool(confirm=True)
async def restart_service(ctx: ToolContext, service: str) -> str:
    """Restart a service (a playground demo: nothing is restarted). Asks the user first."""
    return f"{service} restarted (pretend) at {ctx.user_name}'s request"
