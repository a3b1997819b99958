"""Asking a person in Slack to approve one tool call: Approve / Deny buttons in the thread.

Only the person who asked (or an admin) can answer; anyone else who clicks is told so
privately. No answer within the timeout declines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from ..logs import log
from ..mentions import escape_mrkdwn, neutralise_mentions
from ..plugins.context import ToolContext
from ..plugins.runner import CannotAsk
from ..plugins.tool import ToolSpec

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
    answer: asyncio.Future[bool]
    admins_only: bool = False


class SlackConfirmer:
    def __init__(self, client: AsyncWebClient, *, admins: frozenset[str], timeout_s: float = 120.0) -> None:
        self.client = client
        self.admins = admins
        self.timeout_s = timeout_s
        self._pending: dict[str, _Pending] = {}

    async def confirm(
        self, context: ToolContext, spec: ToolSpec, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> bool:
        """A plugin tool marked ``confirm=True``, or an ``admin_only`` one in a thread where
        people who are not admins wrote (then only an admin may approve)."""
        return await self.ask(context, spec.name, arguments, admins_only=admins_only)

    async def ask(
        self, context: ToolContext, title: str, arguments: dict[str, Any], *, admins_only: bool = False
    ) -> bool:
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
        response = await self.client.chat_postMessage(
            channel=context.channel, thread_ts=context.thread_ts, text=text, blocks=blocks
        )
        pending = _Pending(
            context.user_id,
            context.channel,
            response["ts"],
            name,
            asyncio.get_running_loop().create_future(),
            admins_only,
        )
        self._pending[key] = pending
        log(logger, "confirm.asked", tool=title, user=context.user_id, channel=context.channel)
        try:
            approved = await asyncio.wait_for(asyncio.shield(pending.answer), self.timeout_s)
        except TimeoutError:
            approved = False
            await self._close(pending, f"No answer in time, so *{name}* was not run.")
        finally:
            self._pending.pop(key, None)
        return approved

    async def answer(self, key: str, user: str, approve: bool) -> str | None:
        """A click. Returns a private note for the clicker, or None when it was taken."""
        pending = self._pending.get(key)
        if pending is None or pending.answer.done():
            return "This request has already been answered."
        if pending.admins_only and user not in self.admins:
            return "Only an admin can approve this tool here."
        if user != pending.requester and user not in self.admins:
            return f"Only <@{pending.requester}> (or an admin) can answer this."
        verdict = "approved" if approve else "declined"
        await self._close(pending, f"<@{user}> {verdict} running *{pending.tool}*.")
        pending.answer.set_result(approve)
        log(logger, "confirm.answered", tool=pending.tool, user=user, approved=approve)
        return None

    async def _close(self, pending: _Pending, text: str) -> None:
        try:
            await self.client.chat_update(
                channel=pending.channel,
                ts=pending.ts,
                text=text,
                blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            )
        except Exception as exc:  # the answer stands even if the message cannot change
            log(logger, "confirm.update_failed", logging.INFO, error=repr(exc))
