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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from .. import telemetry
from ..agents.events import ToolCall
from ..logs import log
from ..store import AuditEntry
from ..store.audit import AuditTrail, arguments_digest
from .context import ToolContext
from .registry import Registry
from .tool import ToolSpec
from .workers import ToolWorkers, WorkersBusy

logger = logging.getLogger("bot.plugins.runner")
DEFAULT_OUTPUT_LIMIT = 32 * 1024


@dataclass(frozen=True)
class Verdict:
    """A person's answer to "run this tool?": truthy when approved, with who decided (a Slack
    user id, or ``timeout``)."""

    approved: bool
    by: str = ""

    def __bool__(self) -> bool:
        return self.approved


@dataclass
class Attempt:
    """How one call went, for the agent (``output``) and for the audit trail."""

    outcome: str
    output: str
    arguments: Any = None
    approval: str = ""
    approver: str = ""
    duration_ms: int | None = None


class CannotAsk(Exception):
    """The approval cannot be asked fairly (e.g. the arguments are too long to show): the
    call is declined without asking, with this reason."""


class Confirmer(Protocol):
    """Asks the requesting person to approve one call (the Slack surface implements it)."""

    async def confirm(
        self, context: ToolContext, spec: ToolSpec, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> bool | Verdict: ...


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
        audit: AuditTrail | None = None,
    ) -> None:
        self.workers = workers or ToolWorkers()
        self.audit = audit
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

    async def run(
        self, calls: Sequence[ToolCall], context: ToolContext, ids: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        """Run one round of calls; ``ids`` (the Slack event, turn, agent thread and run) go into
        each call's audit entry."""
        disabled = await self._disabled(context)
        outputs = await asyncio.gather(*(self._one(call, context, disabled, ids=ids) for call in calls))
        return [{"tool_call_id": call.id, "output": out} for call, out in zip(calls, outputs, strict=True)]

    async def call(
        self, name: str, arguments_json: str, context: ToolContext, *, confirmed: bool = False
    ) -> str:
        """One call by name (the command line's ``tools call``)."""
        return await self._one(ToolCall("cli", name, arguments_json), context, set(), confirmed=confirmed)

    async def _one(
        self,
        call: ToolCall,
        context: ToolContext,
        disabled: set[str],
        *,
        confirmed: bool = False,
        ids: Mapping[str, str] | None = None,
    ) -> str:
        attributes = {"tool.name": call.name, "tool.call_id": call.id, "slack.channel": context.channel}
        with telemetry.span("tool.call", attributes):
            attempt = await self._attempt(call, context, disabled, confirmed=confirmed)
            telemetry.annotate(**{"tool.outcome": attempt.outcome, "tool.approval": attempt.approval})
        if self.on_outcome is not None:
            self.on_outcome(attempt.outcome)
        if self.audit is not None:
            await self.audit.record(
                AuditEntry(
                    kind="tool_call",
                    team=context.team,
                    channel=context.channel,
                    user=context.user_id,
                    tool=call.name,
                    outcome=attempt.outcome,
                    args_digest=arguments_digest(
                        attempt.arguments if attempt.arguments is not None else call.arguments
                    ),
                    approval=attempt.approval,
                    approver=attempt.approver,
                    duration_ms=attempt.duration_ms,
                    thread_ts=context.thread_ts,
                    ids={**(ids or {}), "call_id": call.id},
                )
            )
        return attempt.output

    async def _attempt(
        self, call: ToolCall, context: ToolContext, disabled: set[str], *, confirmed: bool = False
    ) -> Attempt:
        spec = self.registry.get(call.name)
        fields = {"tool": call.name, "call_id": call.id, "channel": context.channel, "user": context.user_id}
        if spec is None:
            available = ", ".join(self.registry.tools) or "none"
            return Attempt("unknown", f"error: there is no tool named {call.name!r} (available: {available})")
        if call.name in disabled:
            return Attempt(
                "disabled", f"error: the tool {call.name} is turned off in this channel; answer without it"
            )
        if spec.admin_only and not context.is_admin:
            log(logger, "tool.refused_not_admin", **fields)
            return Attempt(
                "refused",
                f"refused: {call.name} is only available to workspace admins; "
                f"tell {context.user_name} you cannot run it for them",
            )
        try:
            arguments = spec.model.model_validate_json(call.arguments or "{}")
        except ValidationError as exc:
            return Attempt("invalid", _invalid(call.name, exc))
        attempt = Attempt("", "", arguments=arguments.model_dump(mode="json"))
        # an admin tool in a thread where others wrote: what they wrote may be steering the
        # agent, so an admin approves the exact call first
        admins_only = spec.admin_only and context.thread_has_others
        if (spec.confirm or admins_only) and not confirmed:
            refusal = await self._approve(spec, attempt, context, admins_only, fields)
            if refusal is not None:
                attempt.outcome, attempt.output = "declined", refusal
                return attempt
        values = {key: getattr(arguments, key) for key in type(arguments).model_fields}
        if spec.context_param:
            values[spec.context_param] = context
        return await self._execute(spec, values, attempt, fields)

    async def _approve(
        self,
        spec: ToolSpec,
        attempt: Attempt,
        context: ToolContext,
        admins_only: bool,
        fields: dict[str, Any],
    ) -> str | None:
        """Ask the person; None when approved, else what the agent is told."""
        if self.confirmer is None:
            attempt.approval = "not asked: nobody to ask"
            return f"error: {spec.name} needs the user's approval and nobody can be asked"
        try:
            verdict = await self.confirmer.confirm(context, spec, attempt.arguments, admins_only=admins_only)
        except CannotAsk as why:
            log(logger, "tool.declined", reason=str(why), **fields)
            attempt.approval = f"not asked: {why}"
            return f"declined: {spec.name} was not run: {why}"
        attempt.approver = verdict.by if isinstance(verdict, Verdict) else ""
        if not verdict:
            attempt.approval = "timeout" if attempt.approver == "timeout" else "declined"
            log(logger, "tool.declined", **fields)
            return f"the user declined: {spec.name} was not run"
        attempt.approval = "approved"
        return None

    async def _execute(
        self, spec: ToolSpec, values: dict[str, Any], attempt: Attempt, fields: dict[str, Any]
    ) -> Attempt:
        started = time.monotonic()
        try:
            if spec.is_async:
                result = await asyncio.wait_for(spec.function(**values), spec.timeout)
            else:
                result = await asyncio.wait_for(self.workers.run(spec.function, **values), spec.timeout)
            attempt.outcome, attempt.output = "ok", self._render(result)
        except WorkersBusy:
            log(logger, "tool.workers_busy", logging.WARNING, threads=self.workers.size, **fields)
            attempt.outcome = "busy"
            attempt.output = (
                f"error: {spec.name} was not run: all {self.workers.size} tool threads are busy "
                "(a tool may be hanging); try again later or answer without it"
            )
            return attempt  # never started: no duration
        except TimeoutError:
            log(logger, "tool.timeout", logging.WARNING, timeout_s=spec.timeout, **fields)
            attempt.outcome = "timeout"
            attempt.output = f"error: {spec.name} timed out after {spec.timeout:g} s"
        except Exception as exc:
            # the agent (and from it, Slack) gets the type and a reference; the log, the rest
            ref = uuid.uuid4().hex[:8]
            logger.exception("tool failed", extra={"fields": {**fields, "ref": ref}})
            attempt.outcome = "error"
            attempt.output = (
                f"error: {spec.name} failed ({type(exc).__name__}; reference {ref}, details in the bot's log)"
            )
        attempt.duration_ms = round((time.monotonic() - started) * 1000)
        if attempt.outcome == "ok":
            log(logger, "tool.ok", ms=attempt.duration_ms, **fields)
        return attempt

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
