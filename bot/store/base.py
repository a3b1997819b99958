"""The store protocol every backend implements (SQLite now; Redis for replicas)."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class ConversationKey(NamedTuple):
    """One Slack conversation: a thread in a channel (or DM) of a workspace."""

    team: str
    channel: str
    thread_ts: str


class Store(Protocol):
    async def get_agent_thread(self, key: ConversationKey) -> str | None: ...

    async def set_agent_thread(self, key: ConversationKey, agent_thread_id: str) -> None: ...

    async def claim(self, kind: str, ident: str, ttl_s: float) -> bool:
        """True the first time ``(kind, ident)`` is claimed within ``ttl_s``; False after."""
        ...

    async def disabled_tools(self, team: str, channel: str) -> set[str]: ...

    async def set_tool_enabled(self, team: str, channel: str, tool: str, enabled: bool, by: str) -> None: ...

    async def close(self) -> None: ...
