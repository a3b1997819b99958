"""What the bot keeps at the agent service, deleted when its retention ends: the agent
conversations (threads) of Slack threads idle for ``BOT_RETENTION_DAYS``, and the files
uploaded for them. Each is forgotten in the store first, only while still due (a thread used
again meanwhile keeps everything), then deleted; a deletion that fails is put back, due at
once, for the next clean-up. ``python -m bot retention --dry-run`` shows what is due."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..agents import AgentServiceError
from ..agents.routing import AgentRouter, RoutesError
from ..logs import log
from ..store import AgentFile, ConversationKey, Store

logger = logging.getLogger("bot.retention")


@dataclass
class RetentionReport:
    conversations: list[tuple[ConversationKey, str]] = field(default_factory=list)
    files: list[AgentFile] = field(default_factory=list)
    deleted_conversations: int = 0
    deleted_files: int = 0
    failed: int = 0


async def due(store: Store, *, limit: int = 500) -> RetentionReport:
    """What the next clean-up would delete (nothing is changed)."""
    return RetentionReport(await store.conversations_due(limit), await store.agent_files_due(limit))


async def enforce(store: Store, router: AgentRouter, *, limit: int = 500) -> RetentionReport:
    """Delete what is due, each with the agent it belongs to: the files first, then the
    conversations that held them."""
    report = await due(store, limit=limit)
    for file in report.files:
        if not await store.forget_agent_file(file):
            continue  # used again meanwhile, or another replica has it
        fields = {"agent_file": file.agent_file_id, "conversation": file.key.as_str()}
        try:
            agents, file_id = router.resolve(file.agent_file_id)
            await agents.delete_file(file_id)
        except (AgentServiceError, RoutesError) as exc:
            log(logger, "retention.file_delete_failed", logging.WARNING, error=str(exc), **fields)
            await store.remember_agent_file(file, due=True)
            report.failed += 1
            continue
        report.deleted_files += 1
        log(logger, "retention.file_deleted", **fields)
    for key, thread_id in report.conversations:
        if not await store.forget_conversation(key, thread_id):
            continue
        fields = {"agent_thread": thread_id, "conversation": key.as_str()}
        try:
            agents, conversation_id = router.resolve(thread_id)
            await agents.delete_conversation(conversation_id)
        except (AgentServiceError, RoutesError) as exc:
            log(logger, "retention.conversation_delete_failed", logging.WARNING, error=str(exc), **fields)
            await store.restore_conversation(key, thread_id)
            report.failed += 1
            continue
        report.deleted_conversations += 1
        log(logger, "retention.conversation_deleted", **fields)
    return report
