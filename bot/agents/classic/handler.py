"""The azure-ai-agents SDK's streaming surface, over our client.

People arrive knowing ``AsyncAgentEventHandler`` and ``enable_auto_function_calls``.
``AgentEventHandler`` has the same callbacks; ``FunctionToolSet`` runs plain Python
functions for a ``requires_action`` run, like the SDK's automatic function calls.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import create_model

from ...logs import log
from ..events import ToolCall
from .models import MessageDeltaChunk, RunStep, RunStepDeltaChunk, ThreadMessage, ThreadRun
from .wire import MESSAGE_EVENTS, RUN_EVENTS, STEP_EVENTS

logger = logging.getLogger("bot.agents.classic.handler")


class AgentEventHandler:
    """Override the callbacks you need. ``on_done`` fires once per HTTP response."""

    async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
        return None

    async def on_thread_message(self, message: ThreadMessage) -> None:
        return None

    async def on_thread_run(self, run: ThreadRun) -> None:
        return None

    async def on_run_step(self, step: RunStep) -> None:
        return None

    async def on_run_step_delta(self, delta: RunStepDeltaChunk) -> None:
        return None

    async def on_error(self, data: str) -> None:
        return None

    async def on_done(self) -> None:
        return None

    async def on_unhandled_event(self, event_type: str, event_data: Any) -> None:
        return None


def typed_event_data(name: str, data: Any) -> Any:
    """The wire JSON as the typed object the SDK would hand to a handler."""
    if not isinstance(data, dict):
        return data
    try:
        if name in RUN_EVENTS:
            return ThreadRun.model_validate(data)
        if name in STEP_EVENTS:
            return RunStep.model_validate(data)
        if name in MESSAGE_EVENTS:
            return ThreadMessage.model_validate(data)
        if name == "thread.message.delta":
            return MessageDeltaChunk.model_validate(data)
        if name == "thread.run.step.delta":
            return RunStepDeltaChunk.model_validate(data)
    except ValueError:
        return data
    return data


async def dispatch(handler: AgentEventHandler, name: str, data: Any) -> None:
    """Call the handler's callback for one event; a failing callback is logged, not fatal."""
    try:
        if isinstance(data, MessageDeltaChunk):
            await handler.on_message_delta(data)
        elif isinstance(data, ThreadMessage):
            await handler.on_thread_message(data)
        elif isinstance(data, ThreadRun):
            await handler.on_thread_run(data)
        elif isinstance(data, RunStep):
            await handler.on_run_step(data)
        elif isinstance(data, RunStepDeltaChunk):
            await handler.on_run_step_delta(data)
        elif name == "error":
            await handler.on_error(data if isinstance(data, str) else json.dumps(data))
        elif name == "done":
            await handler.on_done()
        else:
            await handler.on_unhandled_event(name, data)
    except Exception:
        logger.exception("event handler callback failed", extra={"fields": {"event": name}})


def _summary(doc: str | None) -> str:
    return inspect.cleandoc(doc or "").split("\n\n", 1)[0].replace("\n", " ").strip()


class FunctionToolSet:
    """Plain Python functions (sync or async) the agent may call by name."""

    def __init__(self, functions: Iterable[Callable[..., Any]] = ()) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        for function in functions:
            self.add(function)

    def add(self, function: Callable[..., Any], *, name: str | None = None) -> None:
        self._functions[name or function.__name__] = function

    @property
    def names(self) -> list[str]:
        return list(self._functions)

    @property
    def definitions(self) -> list[dict[str, Any]]:
        """Function tool definitions for a run's (or an agent's) ``tools``."""
        return [self._definition(name, fn) for name, fn in self._functions.items()]

    @staticmethod
    def _definition(name: str, function: Callable[..., Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, default)
        schema = create_model(f"{name}_args", **fields).model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": _summary(function.__doc__),
                "parameters": schema,
            },
        }

    async def execute(self, calls: Sequence[ToolCall]) -> list[dict[str, str]]:
        """Run every call concurrently; each failure becomes an output the agent can read."""
        outputs = await asyncio.gather(*(self._run_one(call) for call in calls))
        return [{"tool_call_id": call.id, "output": out} for call, out in zip(calls, outputs, strict=True)]

    async def _run_one(self, call: ToolCall) -> str:
        function = self._functions.get(call.name)
        if function is None:
            return f"error: no function named {call.name!r}; available: {', '.join(self._functions)}"
        try:
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return f"error: invalid arguments for {call.name}: {exc}"
        try:
            if inspect.iscoroutinefunction(function):
                result = await function(**arguments)
            else:
                result = await asyncio.to_thread(function, **arguments)
        except Exception as exc:
            log(
                logger,
                "tool.failed",
                logging.WARNING,
                tool=call.name,
                call_id=call.id,
                error=repr(exc),
            )
            return f"error: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else json.dumps(result, default=str)
