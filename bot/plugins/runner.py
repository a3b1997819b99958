"""Runs the agent's function calls through the registry, safely.

Arguments are validated against the tool's schema; the calls of one ``requires_action``
run concurrently; each has a timeout; nothing a tool does (bad arguments, an exception,
a hang, a huge result) crashes the run: the agent always gets an output it can act on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from ..agents.events import ToolCall
from ..logs import log
from .context import ToolContext
from .registry import Registry
from .tool import ToolSpec
from .workers import ToolWorkers, WorkersBusy

logger = logging.getLogger("bot.plugins.runner")
DEFAULT_OUTPUT_LIMIT = 32 * 1024


class CannotAsk(Exception):
    """The approval cannot be asked fairly (e.g. the arguments are too long to show): the
    call is declined without asking, with this reason."""


class Confirmer(Protocol):
    """Asks the requesting person to approve one call (the Slack surface implements it)."""

    async def confirm(
        self, context: ToolContext, spec: ToolSpec, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> bool: ...


class ToolSettingsStore(Protocol):
    async def disabled_tools(self, team: str, channel: str) -> set[str]: ...


class PluginToolRunner:
    def __init__(
        self,
        registry: Registry,
        *,
        store: ToolSettingsStore | None = None,
        confirmer: Confirmer | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        on_outcome: Callable[[str], None] | None = None,
        workers: ToolWorkers | None = None,
    ) -> None:
        self.workers = workers or ToolWorkers()
        self.on_outcome = on_outcome  # ok | invalid | error | timeout | declined | refused | ...
        self.registry = registry
        self.store = store
        self.confirmer = confirmer
        self.output_limit = output_limit

    async def _disabled(self, context: ToolContext) -> set[str]:
        if self.store is None:
            return set()
        return await self.store.disabled_tools(context.team, context.channel)

    async def definitions(self, context: ToolContext) -> list[dict[str, Any]]:
        disabled = await self._disabled(context)
        return [spec.definition() for name, spec in self.registry.tools.items() if name not in disabled]

    async def run(self, calls: Sequence[ToolCall], context: ToolContext) -> list[dict[str, str]]:
        disabled = await self._disabled(context)
        outputs = await asyncio.gather(*(self._one(call, context, disabled) for call in calls))
        return [{"tool_call_id": call.id, "output": out} for call, out in zip(calls, outputs, strict=True)]

    async def call(
        self, name: str, arguments_json: str, context: ToolContext, *, confirmed: bool = False
    ) -> str:
        """One call by name (the command line's ``tools call``)."""
        return await self._one(ToolCall("cli", name, arguments_json), context, set(), confirmed=confirmed)

    async def _one(
        self, call: ToolCall, context: ToolContext, disabled: set[str], *, confirmed: bool = False
    ) -> str:
        outcome, output = await self._attempt(call, context, disabled, confirmed=confirmed)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return output

    async def _attempt(
        self, call: ToolCall, context: ToolContext, disabled: set[str], *, confirmed: bool = False
    ) -> tuple[str, str]:
        spec = self.registry.get(call.name)
        fields = {
            "tool": call.name,
            "call_id": call.id,
            "channel": context.channel,
            "user": context.user_id,
        }
        if spec is None:
            available = ", ".join(self.registry.tools) or "none"
            return "unknown", f"error: there is no tool named {call.name!r} (available: {available})"
        if call.name in disabled:
            return "disabled", f"error: the tool {call.name} is turned off in this channel; answer without it"
        if spec.admin_only and not context.is_admin:
            log(logger, "tool.refused_not_admin", **fields)
            return "refused", (
                f"refused: {call.name} is only available to workspace admins; "
                f"tell {context.user_name} you cannot run it for them"
            )
        try:
            arguments = spec.model.model_validate_json(call.arguments or "{}")
        except ValidationError as exc:
            return "invalid", _invalid(call.name, exc)
        values = {key: getattr(arguments, key) for key in type(arguments).model_fields}
        # an admin tool in a thread where others wrote: what they wrote may be steering the
        # agent, so an admin approves the exact call first
        admins_only = spec.admin_only and context.thread_has_others
        if (spec.confirm or admins_only) and not confirmed:
            if self.confirmer is None:
                return "declined", f"error: {call.name} needs the user's approval and nobody can be asked"
            try:
                approved = await self.confirmer.confirm(
                    context, spec, arguments.model_dump(mode="json"), admins_only=admins_only
                )
            except CannotAsk as why:
                log(logger, "tool.declined", reason=str(why), **fields)
                return "declined", f"declined: {call.name} was not run: {why}"
            if not approved:
                log(logger, "tool.declined", **fields)
                return "declined", f"the user declined: {call.name} was not run"
        if spec.context_param:
            values[spec.context_param] = context
        started = time.monotonic()
        try:
            if spec.is_async:
                result = await asyncio.wait_for(spec.function(**values), spec.timeout)
            else:
                result = await asyncio.wait_for(self.workers.run(spec.function, **values), spec.timeout)
        except WorkersBusy:
            log(logger, "tool.workers_busy", logging.WARNING, threads=self.workers.size, **fields)
            return "busy", (
                f"error: {call.name} was not run: all {self.workers.size} tool threads are busy "
                "(a tool may be hanging); try again later or answer without it"
            )
        except TimeoutError:
            log(logger, "tool.timeout", logging.WARNING, timeout_s=spec.timeout, **fields)
            return "timeout", f"error: {call.name} timed out after {spec.timeout:g} s"
        except Exception as exc:
            # the agent (and from it, Slack) gets the type and a reference; the log, the rest
            ref = uuid.uuid4().hex[:8]
            logger.exception("tool failed", extra={"fields": {**fields, "ref": ref}})
            return "error", (
                f"error: {call.name} failed ({type(exc).__name__}; reference {ref}, details in the bot's log)"
            )
        log(logger, "tool.ok", ms=round((time.monotonic() - started) * 1000), **fields)
        return "ok", self._render(result)

    def _render(self, result: Any) -> str:
        if isinstance(result, str):
            text = result
        else:
            try:
                text = json.dumps(to_jsonable_python(result), ensure_ascii=False)
            except Exception:
                text = str(result)
        encoded = text.encode("utf-8")
        if len(encoded) <= self.output_limit:
            return text
        note = f"\n[output truncated: the first {self.output_limit} of {len(encoded)} bytes]"
        head = encoded[: self.output_limit - len(note.encode())].decode("utf-8", "ignore")
        return head + note


def _invalid(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:10]:
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return f"error: invalid arguments for {name}: " + "; ".join(problems) + ". Fix them and call it again."
