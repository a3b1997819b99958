"""Test access to the emulated stack, and backend-neutral views of what the agent saw."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.devstack.stack import EmulatedStack as Stack
from bot.devstack.stack import start_stack as _start_stack


async def start_stack(script: Any = None, *, tmp_path: Any, **kwargs: Any) -> Stack:
    return await _start_stack(script, store_url=f"sqlite:///{tmp_path}/bot.db", admins="U0ADMIN", **kwargs)


def _foundry(stack: Stack) -> bool:
    return stack.bot.settings.backend == "foundry"


def run_bodies(stack: Stack) -> list[dict[str, Any]]:
    """The bodies of the requests that started agent runs (classic runs or responses)."""
    if _foundry(stack):
        return [
            b
            for m, p, b in stack.agent.requests
            if m == "POST"
            and p.endswith("/responses")
            and any(i.get("type") == "message" for i in (b or {}).get("input") or [])
        ]
    return [b for m, p, b in stack.agent.requests if m == "POST" and p.endswith("/runs")]


def run_count(stack: Stack) -> int:
    return len(run_bodies(stack))


def conversation_count(stack: Stack) -> int:
    return len(stack.agent.responses_api.conversations) if _foundry(stack) else len(stack.agent.threads)


def agent_inputs(stack: Stack) -> list[list[str]]:
    """Per conversation, the texts the agent received from people (context included)."""
    if _foundry(stack):
        found = []
        for items in stack.agent.responses_api.items.values():
            found.append(
                [
                    "".join(p.get("text", "") for p in i.get("content") or [])
                    for i in items
                    if i.get("type") == "message" and i.get("role") == "user"
                ]
            )
        return found
    return [
        [m["content"][0]["text"]["value"] for m in messages if m["role"] == "user"]
        for messages in stack.agent.messages.values()
    ]


def argument_deltas(stack: Stack) -> int:
    """How many pieces the agent streamed function-call arguments in (either protocol)."""
    if _foundry(stack):
        return sum(
            1
            for r in stack.agent.responses_api.responses.values()
            for e in r.events
            if isinstance(e, dict) and e.get("type") == "response.function_call_arguments.delta"
        )
    return sum(
        1
        for r in stack.agent.runs.values()
        for e in r.events
        if isinstance(e, tuple) and e[0] == "thread.run.step.delta"
    )


async def eventually(predicate: Any, what: str, *, within_s: float = 30.0, step: float = 0.02) -> None:
    """Wait for an observable condition (a plain or async predicate) under a generous
    deadline; fail naming ``what`` was never seen. No test sleeps a guessed time instead."""
    deadline = time.monotonic() + within_s
    while True:
        seen = predicate()
        if asyncio.iscoroutine(seen):
            seen = await seen
        if seen:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"never seen within {within_s:g} s: {what}")
        await asyncio.sleep(step)


def status_lines(stack: Stack, channel: str, ts: str) -> list[str]:
    """Every status line the first reply has shown: the context block under an edited
    reply's text, or the task cards of a streamed one (by title)."""
    replies = stack.replies(channel, ts)
    if not replies:
        return []
    stream = stack.slack.stream_of(channel, replies[0].ts)
    cards = [str(card.get("title")) for card in stream.tasks.values()] if stream is not None else []
    return cards + [
        blocks[1]["elements"][0]["text"]
        for _, _, blocks in replies[0].history
        if blocks and len(blocks) > 1 and blocks[1]["type"] == "context"
    ]


def streamed(stack: Stack, channel: str, ts: str) -> bool:
    """The first reply was written as a native stream (not posted and edited)."""
    replies = stack.replies(channel, ts)
    return bool(replies) and stack.slack.stream_of(channel, replies[0].ts) is not None


def stop_button(stack: Stack, channel: str, ts: str, user: str = "U0ALICE") -> tuple[str, str] | None:
    """The Stop that ``user`` sees for the reply to ``ts``, as (message ts, button value):
    under the reply while it is edited, or sent to the asker privately while it streams."""
    replies = stack.replies(channel, ts)
    places = [(r.ts, r.blocks or []) for r in replies[:1]]
    places += [
        (e["ts"], e.get("blocks") or [])
        for e in stack.slack.ephemerals_for(user, channel)
        if e.get("thread_ts") == ts
    ]
    for where, blocks in places:
        for block in blocks:
            for element in block.get("elements") or []:
                if block.get("type") == "actions" and element.get("action_id") == "stop_run":
                    return where, str(element["value"])
    return None


async def wait_for_prompt(
    where: Any, channel: str, ts: str, *, missing: str = "no approval prompt", within_s: float = 30.0
) -> tuple[Any, str]:
    """The approval prompt posted in the thread and its button value, once it is up (``where``:
    a stack or the Slack emulator)."""
    slack = getattr(where, "slack", where)
    found: list[tuple[Any, str]] = []

    def posted() -> bool:
        found[:] = [
            (message, block["elements"][0]["value"])
            for message in slack.bot_replies(channel, ts)
            for block in message.blocks or []
            if block.get("block_id") == "confirm"
        ]
        return bool(found)

    await eventually(posted, missing, within_s=within_s)
    return found[0]


def set_agent_tools(stack: Stack, tools: list[dict[str, Any]]) -> None:
    if _foundry(stack):
        stack.agent.responses_api.agents["demo-agent"][-1]["definition"]["tools"] = tools
    else:
        stack.agent.agents["asst_demo"]["tools"] = tools


def run_tool_types(body: dict[str, Any]) -> list[str]:
    return [t["type"] for t in body.get("tools") or []]


def expected_run_tool_types(stack: Stack, classic: list[str]) -> list[str]:
    """New agents are never sent ``tools`` (the service refuses them with an agent named)."""
    return [] if _foundry(stack) else classic


__all__ = [
    "Stack",
    "agent_inputs",
    "argument_deltas",
    "conversation_count",
    "expected_run_tool_types",
    "run_bodies",
    "run_count",
    "set_agent_tools",
    "start_stack",
    "wait_for_prompt",
]
