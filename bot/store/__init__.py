"""State that must outlive a process: Slack thread -> agent thread, and dedupe marks.

``open_store(url)`` picks the implementation from ``BOT_STORE_URL``.
"""

from __future__ import annotations

from .base import ConversationKey, Store
from .sqlite import SQLiteStore


async def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        store = SQLiteStore.from_url(url)
        await store.open()
        return store
    raise ValueError(f"BOT_STORE_URL must start with sqlite:/// (got {url.split(':', 1)[0]}:...)")


__all__ = ["ConversationKey", "SQLiteStore", "Store", "open_store"]
