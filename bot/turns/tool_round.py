"""One pause of a run: the function calls it waits for, or the approvals it asks for,
answered within the run's own deadline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from ..agents import ApprovalDecision, ToolOutput
from ..agents.events import ApprovalRequest, ToolCallsRequested
from ..logs import log
from ..mentions import escape_mrkdwn
from ..plugins.context import ToolContext
from ..plugins.runner import CannotAsk, Verdict
from ..slack.writer import ReplyWriter
from ..store import AuditEntry
from ..store.audit import AuditTrail, arguments_digest
from .ports import Approver, ToolRunner

logger = logging.getLogger("bot.turns")


async def run_tools(
    requested: ToolCallsRequested,
    context: ToolContext,
    budget_s: float | None,
    writer: ReplyWriter,
    tools: ToolRunner | None,
    known: set[str],
    fields: dict[str, Any],
) -> list[ToolOutput]:
    """Run the calls the agent asked for; within the run's deadline or declined, never late."""
    names = ", ".join(dict.fromkeys(call.name for call in requested.tool_calls))
    # only the registry's own names reach Slack, never text the agent made up
    shown = dict.fromkeys(
        escape_mrkdwn(c.name) if c.name in known else "an unknown tool" for c in requested.tool_calls
    )
    writer.status(f"Running {', '.join(shown)}…")
    log(logger, "turn.tools", tools=names, budget_s=budget_s, **fields)
    if tools is None:
        return [
            ToolOutput(c.id, f"error: no tool named {c.name!r} is installed") for c in requested.tool_calls
        ]
    declined = [
        ToolOutput(c.id, "error: not run: the agent's run would expire before this tool could finish")
        for c in requested.tool_calls
    ]
    if budget_s is not None and budget_s <= 0:
        log(logger, "turn.tools_declined", logging.WARNING, why="run expiring", **fields)
        return declined
    try:
        async with asyncio.timeout(budget_s):
            raw = await tools.run(requested.tool_calls, context, ids=_ids(fields))
    except TimeoutError:
        log(logger, "turn.tools_declined", logging.WARNING, why="run deadline reached", **fields)
        return declined
    return [ToolOutput(o["tool_call_id"], o["output"]) for o in raw]


def _ids(fields: dict[str, Any]) -> dict[str, str]:
    """The ids an operator searches by, for the audit trail."""
    names = {"event_id": "event_id", "turn": "turn", "thread_id": "agent_thread", "run_id": "run"}
    return {label: str(fields[key]) for key, label in names.items() if fields.get(key)}


async def decide(
    approvals: Sequence[ApprovalRequest],
    context: ToolContext,
    budget_s: float | None,
    writer: ReplyWriter,
    approver: Approver | None,
    fields: dict[str, Any],
    audit: AuditTrail | None = None,
) -> list[ApprovalDecision]:
    """Ask the person (Approve / Deny in Slack) about each MCP call the agent wants."""
    writer.status("Waiting for approval…")
    decisions = []
    for request in approvals:
        verdict: bool | Verdict = Verdict(False, "")
        try:
            arguments = json.loads(request.arguments or "{}")
        except ValueError:
            arguments = {"arguments": request.arguments}
        title = f"{request.server_label}: {request.name}" if request.server_label else request.name
        if approver is not None:
            try:
                async with asyncio.timeout(budget_s):
                    verdict = await approver.ask(context, title, arguments)
            except (TimeoutError, CannotAsk):
                verdict = Verdict(False, "timeout")
        approved = bool(verdict)
        log(logger, "turn.approval", tool=request.name, approved=approved, **fields)
        decisions.append(ApprovalDecision(request.id, approved, "" if approved else "declined in Slack"))
        if audit is not None:
            by = verdict.by if isinstance(verdict, Verdict) else ""
            await audit.record(
                AuditEntry(
                    kind="approval",
                    team=context.team,
                    channel=context.channel,
                    user=context.user_id,
                    tool=title,
                    outcome="approved" if approved else "denied",
                    args_digest=arguments_digest(arguments),
                    approval="approved" if approved else ("timeout" if by == "timeout" else "declined"),
                    approver=by,
                    thread_ts=context.thread_ts,
                    ids={**_ids(fields), "approval_id": request.id},
                )
            )
    return decisions
