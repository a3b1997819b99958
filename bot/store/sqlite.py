"""SQLite store (the default): one file, no server, safe across restarts.

aiosqlite runs the sqlite3 calls on its own thread so the event loop never blocks.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite

from .base import ConversationKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    team TEXT NOT NULL, channel TEXT NOT NULL, thread_ts TEXT NOT NULL,
    agent_thread_id TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (team, channel, thread_ts)
);
CREATE TABLE IF NOT EXISTS tool_settings (
    team TEXT NOT NULL, channel TEXT NOT NULL, tool TEXT NOT NULL, enabled INTEGER NOT NULL,
    changed_by TEXT NOT NULL, changed_at REAL NOT NULL,
    PRIMARY KEY (team, channel, tool)
);
CREATE TABLE IF NOT EXISTS claims (
    kind TEXT NOT NULL, ident TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, ident)
);
"""


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._claims_since_sweep = 0

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative/path.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``."""
        path = url.removeprefix("sqlite://")
        if path.startswith("/"):  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
            path = path[1:]
        return cls(path or ":memory:")

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def get_agent_thread(self, key: ConversationKey) -> str | None:
        async with self.db.execute(
            "SELECT agent_thread_id FROM conversations WHERE team=? AND channel=? AND thread_ts=?",
            tuple(key),
        ) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_agent_thread(self, key: ConversationKey, agent_thread_id: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?)",
            (*key, agent_thread_id, time.time()),
        )
        await self.db.commit()

    async def claim(self, kind: str, ident: str, ttl_s: float) -> bool:
        now = time.time()
        self._claims_since_sweep += 1
        if self._claims_since_sweep >= 500:
            self._claims_since_sweep = 0
            await self.db.execute("DELETE FROM claims WHERE expires_at < ?", (now,))
        cursor = await self.db.execute(
            "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(kind, ident) DO UPDATE "
            "SET expires_at = excluded.expires_at WHERE claims.expires_at < ?",
            (kind, ident, now + ttl_s, now),
        )
        await self.db.commit()
        return cursor.rowcount == 1

    async def disabled_tools(self, team: str, channel: str) -> set[str]:
        async with self.db.execute(
            "SELECT tool FROM tool_settings WHERE team=? AND channel=? AND enabled=0", (team, channel)
        ) as cursor:
            return {row[0] for row in await cursor.fetchall()}

    async def set_tool_enabled(self, team: str, channel: str, tool: str, enabled: bool, by: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO tool_settings VALUES (?, ?, ?, ?, ?, ?)",
            (team, channel, tool, int(enabled), by, time.time()),
        )
        await self.db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
