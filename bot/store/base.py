"""The store protocol every backend implements: SQLite (one process) and Redis (replicas)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

DEFAULT_RETENTION_S = 90 * 86400.0  # BOT_RETENTION_DAYS
DEFAULT_AUDIT_RETENTION_S = 365 * 86400.0  # BOT_AUDIT_RETENTION_DAYS


class ConversationKey(NamedTuple):
    """One Slack conversation: a thread in a channel (or DM) of a workspace."""

    team: str
    channel: str
    thread_ts: str

    def as_str(self) -> str:
        return f"{self.team}/{self.channel}/{self.thread_ts}"


class AgentFile(NamedTuple):
    """A file uploaded to the agent service for one conversation, by the Slack file it came
    from (so a file shared again in the thread is not uploaded twice)."""

    key: ConversationKey
    slack_file_id: str
    agent_file_id: str


@dataclass
class InFlight:
    """A reply being written, recorded so another process can finish it if this one dies."""

    turn_id: str
    team: str
    channel: str
    thread_ts: str
    message_ts: str
    owner: str
    started_at: float
    agent_thread_id: str = ""
    run_id: str = ""
    user: str = ""
    # received: taken from Slack, not yet queued; queued: waiting for its conversation's
    # owner; running: being answered; undelivered: answered, but Slack did not take it before
    # the delivery deadline (``payload`` holds the final text; recovery delivers it)
    state: str = "queued"
    pages: list[str] = field(default_factory=list)  # ts of every message of the reply, in order
    payload: str = ""  # the turn, as queued, so another process can queue it again

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditEntry:
    """One thing an operator may have to account for: a tool call (who asked, where, which
    tool, a digest of the arguments, who approved it, how it ended, how long it took), a
    decision on the agent's own tools, or an admin's change to the tool settings."""

    kind: str  # tool_call | approval | tool_setting | feedback | install
    team: str
    channel: str
    user: str  # who asked (a call) or who acted (an admin action)
    tool: str
    outcome: str  # ok, error, timeout, declined, refused... | approved, denied | enabled, disabled
    at: float = field(default_factory=time.time)
    args_digest: str = ""  # sha256 of the canonical JSON arguments: never the arguments
    approval: str = ""  # "" (not asked) | approved | declined | timeout | not asked: <why>
    approver: str = ""
    duration_ms: int | None = None
    thread_ts: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # event_id, turn, agent thread, run, call

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AuditEntry:
        known = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc}
        return cls(**known)


@dataclass(frozen=True)
class AuditQuery:
    user: str | None = None
    tool: str | None = None
    kind: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    limit: int = 1000

    def matches(self, entry: AuditEntry) -> bool:
        return (
            (self.user is None or entry.user == self.user)
            and (self.tool is None or entry.tool == self.tool)
            and (self.kind is None or entry.kind == self.kind)
            and (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
        )


class Store(Protocol):
    async def get_agent_thread(self, key: ConversationKey) -> str | None: ...

    async def set_agent_thread(self, key: ConversationKey, agent_thread_id: str) -> None: ...

    async def claim(self, kind: str, ident: str, ttl_s: float) -> bool:
        """True the first time ``(kind, ident)`` is claimed within ``ttl_s``; False after."""
        ...

    async def disabled_tools(self, team: str, channel: str) -> set[str]: ...

    async def set_tool_enabled(self, team: str, channel: str, tool: str, enabled: bool, by: str) -> None: ...

    # leases: one owner at a time (per conversation, per replica heartbeat)
    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def release_lease(self, name: str, owner: str) -> None: ...

    async def lease_owner(self, name: str) -> str | None: ...

    # per-conversation queue of turns waiting for the owner
    async def push_turn(self, key: ConversationKey, payload: str, *, first: bool = False) -> None:
        """Queue a turn last; ``first``: ahead of every turn queued (a turn asked afresh after
        its replica died came before them)."""
        ...

    async def pop_turn(self, key: ConversationKey, owner: str | None = None) -> str | None:
        """The next queued turn; with ``owner``, its reply is recorded as running by that owner
        in the same atomic step."""
        ...

    async def queue_length(self, key: ConversationKey) -> int: ...

    async def queued_conversations(self) -> list[ConversationKey]: ...

    # replies in flight
    async def record_reply(self, reply: InFlight) -> None: ...

    async def finish_reply(self, turn_id: str) -> None: ...

    async def reply(self, turn_id: str) -> InFlight | None: ...

    async def replies_in_flight(self) -> list[InFlight]: ...

    # approvals asked in Slack: any replica can answer them; the first decision wins
    async def put_approval(self, key: str, doc: dict[str, Any], ttl_s: float) -> None: ...

    async def get_approval(self, key: str) -> tuple[dict[str, Any], bool | None, str] | None:
        """(what was asked, the verdict or None while undecided, who decided)."""
        ...

    async def decide_approval(self, key: str, approve: bool, by: str) -> bool:
        """Fix the verdict if nobody has: True for the decision that won."""
        ...

    # agent conversations past their retention, deleted from the agent service
    async def conversations_due(self, limit: int = 100) -> list[tuple[ConversationKey, str]]:
        """(Slack thread, agent conversation id) of conversations unused for the retention."""
        ...

    async def forget_conversation(self, key: ConversationKey, agent_thread_id: str) -> bool:
        """Forget a conversation that is still due: True when it was (the caller then deletes it
        from the agent service); False when it was used again meanwhile (it stays)."""
        ...

    async def restore_conversation(self, key: ConversationKey, agent_thread_id: str) -> None:
        """Put back, still due, a conversation whose deletion failed (the next sweep tries
        again); a new message in its Slack thread starts a new one meanwhile."""
        ...

    # files uploaded to the agent service, per conversation; deleted when its retention ends
    async def agent_file(self, key: ConversationKey, slack_file_id: str) -> str | None:
        """The agent's id of this Slack file in this conversation (its use keeps it)."""
        ...

    async def remember_agent_file(self, file: AgentFile, *, due: bool = False) -> None:
        """Keep the file for its conversation; ``due`` puts back one whose deletion failed,
        due at once (the next sweep tries again)."""
        ...

    async def agent_files_due(self, limit: int = 100) -> list[AgentFile]:
        """Files whose conversation and own last use are both older than the retention."""
        ...

    async def forget_agent_file(self, file: AgentFile) -> bool:
        """Forget a file that is still due: True when it was (the caller then deletes it from
        the agent service); False when it was used again meanwhile (it stays)."""
        ...

    # the audit trail: kept for BOT_AUDIT_RETENTION_DAYS, oldest first
    async def add_audit(self, entry: AuditEntry) -> None: ...

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching the query, oldest first, at most ``query.limit``."""
        ...

    # rate limits: how many hits in the current window
    async def hit(self, kind: str, ident: str, window_s: float) -> int: ...

    async def sweep(self) -> int:
        """Forget what has expired: old dedupe marks, leases, hit counters, approvals, audit
        entries, dead replicas' heartbeats. Returns how many. (Conversations past their
        retention go with their agent conversations: ``forget_conversation``.)"""
        ...

    async def close(self) -> None: ...
