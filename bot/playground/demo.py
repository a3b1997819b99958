"""What the playground's scripted agent does, to show the product's range."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from ..plugins import ToolContext, tool

SALES = {"north": 120, "south": 80, "east": 150, "west": 95}
BAR_COLOURS = [(0x36, 0xC5, 0xF0), (0x2E, 0xB6, 0x7D), (0xEC, 0xB2, 0x2E), (0xE0, 0x1E, 0x5A)]


def bar_chart_png(values: dict[str, int], *, width: int = 360, height: int = 220) -> bytes:
    """A bar chart as a PNG (what a code interpreter would draw), made without a plotting
    library: white ground, an axis, one coloured bar per value."""
    top, left, gap = max(values.values()), 24, 16
    bar = (width - left - gap * (len(values) + 1)) // len(values)
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    for y in range(12, height - 16):
        pixels[y][left] = (0x61, 0x60, 0x61)
    for x in range(left, width - 8):
        pixels[height - 16][x] = (0x61, 0x60, 0x61)
    for i, value in enumerate(values.values()):
        x0 = left + gap + i * (bar + gap)
        y0 = height - 16 - round((height - 40) * value / top)
        for y in range(y0, height - 16):
            pixels[y][x0 : x0 + bar] = [BAR_COLOURS[i % len(BAR_COLOURS)]] * bar
    raw = b"".join(b"\0" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


SALES_CSV = "region,sales\n" + "".join(f"{region},{amount}\n" for region, amount in SALES.items())


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
            "match": "[attached files:",  # how the bot tells the agent a message carries files
            "repeat": True,
            "actions": [
                {
                    "text": "The files reached me through the agent service's files API. "
                    "I was given: ${files}.\n\n"
                    "A real agent's code interpreter or file search would now read them."
                },
            ],
        },
        {
            "match": "time",
            "repeat": True,
            "actions": [
                {"text": "Let me check the clock. "},
                {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "Europe/Amsterdam"}}]},
                {"text": "In Amsterdam it is now **${output_readable}** (${output_timezone})."},
            ],
        },
        {
            "match": "chart",
            "repeat": True,
            "actions": [
                {
                    "text": "I ran the numbers in the code interpreter. Sales by region "
                    f"({', '.join(f'{r} {v}' for r, v in SALES.items())}):\n\n"
                },
                {
                    "file": {
                        "name": "sales_by_region.png",
                        "base64": base64.b64encode(bar_chart_png(SALES)).decode(),
                    }
                },
                {"text": "\n\nThe table behind it: "},
                {"file": {"name": "sales_by_region.csv", "text": SALES_CSV}},
                {"text": "\n\nAttach a file of your own (the Attach button) and ask about it."},
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
                    "*restart billing* (a tool that asks first), *chart* (the agent makes files), "
                    "or attach a file (the Attach button) and ask about it.",
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
