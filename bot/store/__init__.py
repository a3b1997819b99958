"""State that must outlive a process: Slack thread -> agent thread, dedupe marks, leases,
queued turns, replies in flight. ``open_store(BOT_STORE_URL)`` picks the backend."""

from __future__ import annotations

from .base import (
    DEFAULT_AUDIT_RETENTION_S,
    DEFAULT_RETENTION_S,
    AgentFile,
    AuditEntry,
    AuditQuery,
    ConversationKey,
    InFlight,
    Store,
)
from .sqlite import SQLiteStore


async def open_store(
    url: str,
    *,
    retention_s: float = DEFAULT_RETENTION_S,
    audit_retention_s: float = DEFAULT_AUDIT_RETENTION_S,
) -> Store:
    if url.startswith("sqlite:"):
        store: Store = SQLiteStore.from_url(url, retention_s=retention_s, audit_retention_s=audit_retention_s)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStore

        store = RedisStore(url, retention_s=retention_s, audit_retention_s=audit_retention_s)
    else:
        raise ValueError(
            f"BOT_STORE_URL must start with sqlite:/// or redis:// (got {url.split(':', 1)[0]}:...)"
        )
    await store.open()  # type: ignore[attr-defined]
    return store


__all__ = [
    "AgentFile",
    "AuditEntry",
    "AuditQuery",
    "ConversationKey",
    "InFlight",
    "SQLiteStore",
    "Store",
    "open_store",
]
