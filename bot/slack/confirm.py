"""Asking a person in Slack to approve one tool call: Approve / Deny buttons in the thread.

Only the person who asked (or an admin) can answer; anyone else who clicks is told so
privately. No answer within the timeout declines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from ..logs import log
from ..mentions import escape_mrkdwn, neutralise_mentions
from ..plugins.context import ToolContext
from ..plugins.runner import CannotAsk, Verdict
from ..plugins.tool import ToolSpec
from .workspaces import Workspaces

logger = logging.getLogger("bot.slack.confirm")

SHOW_LIMIT = 2800  # characters of arguments an approver can read in one prompt
APPROVE_ACTION = "tool_approve"
DENY_ACTION = "tool_deny"


@dataclass
class _Pending:
    requester: str
    channel: str
    ts: str
    tool: str
    admins_only: bool = False
    team: str = ""

    def as_doc(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "requester": self.requester,
            "channel": self.channel,
            "ts": self.ts,
            "tool": self.tool,
            "admins_only": self.admins_only,
        }


class ApprovalStore(Protocol):
    async def put_approval(self, key: str, doc: dict[str, Any], ttl_s: float) -> None: ...

    async def get_approval(self, key: str) -> tuple[dict[str, Any], bool | None, str] | None: ...

    async def decide_approval(self, key: str, approve: bool, by: str) -> bool: ...


class SlackConfirmer:
    """Approvals live in the store: a click that reaches any replica (HTTP behind a load
    balancer, several Socket Mode connections) decides the call, and the first decision is
    fixed atomically in the store before anything else happens, so two clicks can never show
    "approved" while the tool was declined."""

    def __init__(
        self,
        workspaces: Workspaces,
        store: ApprovalStore,
        *,
        admins: frozenset[str],
        timeout_s: float = 120.0,
        poll_s: float = 0.5,
    ) -> None:
        self.workspaces = workspaces  # approvals are posted and closed with their workspace's token
        self.store = store
        self.admins = admins
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._decided: dict[str, asyncio.Event] = {}  # asked here: woken when a click lands here

    async def confirm(
        self, context: ToolContext, spec: ToolSpec, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> Verdict:
        """A plugin tool marked ``confirm=True``, or an ``admin_only`` one in a thread where
        people who are not admins wrote (then only an admin may approve)."""
        return await self.ask(context, spec.name, arguments, admins_only=admins_only)

    async def ask(
        self, context: ToolContext, title: str, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> Verdict:
        """Any tool call a person must approve (plugins, the agent's own MCP tools).

        The arguments are shown in full as literal text (a preformatted rich text block, which
        Slack does not parse for mentions, links or formatting); arguments too long to show are
        declined without asking, so nothing runs that the approver could not see."""
        shown = json.dumps(arguments, ensure_ascii=False, indent=1)
        if len(shown) > SHOW_LIMIT:
            log(logger, "confirm.too_long", tool=title, chars=len(shown), user=context.user_id)
            raise CannotAsk(
                f"its arguments are too long to show for approval ({len(shown)} characters, "
                f"at most {SHOW_LIMIT}); call it with shorter arguments"
            )
        key = uuid.uuid4().hex[:16]
        name = escape_mrkdwn(title)
        text = f"<@{context.user_id}>, the agent wants to run *{name}*. Approve?"
        if admins_only:
            text = (
                f"The agent wants to run *{name}*, an admin-only tool, and this thread has messages "
                "from people who are not admins: an admin must approve it. Approve?"
            )
        blocks = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_preformatted",
                        "elements": [{"type": "text", "text": neutralise_mentions(shown)}],
                    }
                ],
            },
            {
                "type": "actions",
                "block_id": "confirm",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "value": key,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "value": key,
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                    },
                ],
            },
        ]
        client = context.slack or self.workspaces.client(context.team)
        response = await client.chat_postMessage(
            channel=context.channel, thread_ts=context.thread_ts, text=text, blocks=blocks
        )
        pending = _Pending(context.user_id, context.channel, response["ts"], name, admins_only, context.team)
        await self.store.put_approval(key, pending.as_doc(), self.timeout_s + 60)
        self._decided[key] = asyncio.Event()
        log(logger, "confirm.asked", tool=title, user=context.user_id, channel=context.channel)
        try:
            return await self._verdict(key, pending)
        finally:
            self._decided.pop(key, None)

    async def _verdict(self, key: str, pending: _Pending) -> Verdict:
        """Wait for the decision, whichever replica took the click; no answer in time declines
        (unless a click won the race to the store first)."""
        deadline = time.monotonic() + self.timeout_s
        decided = self._decided[key]
        while time.monotonic() < deadline:
            found = await self.store.get_approval(key)
            if found is not None and found[1] is not None:
                return Verdict(found[1], found[2])
            try:
                await asyncio.wait_for(
                    decided.wait(), min(self.poll_s, max(0.0, deadline - time.monotonic()))
                )
            except TimeoutError:
                pass
        if await self.store.decide_approval(key, False, "timeout"):
            await self._close(pending, f"No answer in time, so *{pending.tool}* was not run.")
            return Verdict(False, "timeout")
        found = await self.store.get_approval(key)
        return Verdict(bool(found and found[1]), found[2] if found else "")

    async def answer(self, key: str, user: str, approve: bool) -> str | None:
        """A click, on whichever replica Slack sent it to. Returns a private note for the
        clicker, or None when the click decided the call."""
        found = await self.store.get_approval(key)
        if found is None or found[1] is not None:
            return "This request has already been answered."
        pending = _Pending(**found[0])
        if pending.admins_only and user not in self.admins:
            return "Only an admin can approve this tool here."
        if user != pending.requester and user not in self.admins:
            return f"Only <@{pending.requester}> (or an admin) can answer this."
        if not await self.store.decide_approval(key, approve, user):
            return "This request has already been answered."  # another click won the race
        decided = self._decided.get(key)
        if decided is not None:
            decided.set()
        verdict = "approved" if approve else "declined"
        log(logger, "confirm.answered", tool=pending.tool, user=user, approved=approve)
        await self._close(pending, f"<@{user}> {verdict} running *{pending.tool}*.")
        return None

    async def _close(self, pending: _Pending, text: str) -> None:
        try:
            await self.workspaces.client(pending.team).chat_update(
                channel=pending.channel,
                ts=pending.ts,
                text=text,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            )
        except Exception as exc:  # the answer stands even if the message cannot change
            log(logger, "confirm.update_failed", logging.INFO, error=repr(exc))
