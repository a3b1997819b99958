"""The store protocol on SQLite: mappings survive a restart, claims dedupe with a TTL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.store import ConversationKey, SQLiteStore, open_store


async def test_mapping_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/bot.db"
    key = ConversationKey("T1", "C1", "1700000000.000100")
    store = await open_store(url)
    assert await store.get_agent_thread(key) is None
    await store.set_agent_thread(key, "thread_abc")
    await store.close()
    again = await open_store(url)
    assert await again.get_agent_thread(key) == "thread_abc"
    assert await again.get_agent_thread(key._replace(channel="C2")) is None
    await again.close()


async def test_claims_are_exclusive_and_expire(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    results = await asyncio.gather(*(store.claim("event", "Ev1", 60) for _ in range(10)))
    assert results.count(True) == 1
    assert await store.claim("post", "Ev1", 60) is True  # kinds are separate
    assert await store.claim("event", "short", 0.05) is True
    await asyncio.sleep(0.1)
    assert await store.claim("event", "short", 60) is True
    await store.close()


def test_url_forms() -> None:
    assert SQLiteStore.from_url("sqlite:///./data/bot.db").path == "./data/bot.db"
    assert SQLiteStore.from_url("sqlite:////var/lib/bot.db").path == "/var/lib/bot.db"
    assert SQLiteStore.from_url("sqlite://:memory:").path == ":memory:"
