"""SQLite store (the default): one file, no server, safe across restarts of one process.

aiosqlite runs the sqlite3 calls on its own thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from .base import (
    DEFAULT_AUDIT_RETENTION_S,
    DEFAULT_RETENTION_S,
    AgentFile,
    AuditEntry,
    AuditQuery,
    ConversationKey,
    InFlight,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    team TEXT NOT NULL, channel TEXT NOT NULL, thread_ts TEXT NOT NULL,
    agent_thread_id TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (team, channel, thread_ts)
);
CREATE TABLE IF NOT EXISTS replaced_conversations (
    agent_thread_id TEXT PRIMARY KEY, team TEXT NOT NULL, channel TEXT NOT NULL, thread_ts TEXT NOT NULL
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
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turn_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    turn_id TEXT PRIMARY KEY, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    key TEXT PRIMARY KEY, doc TEXT NOT NULL, verdict INTEGER, decided_by TEXT NOT NULL DEFAULT '',
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_files (
    team TEXT NOT NULL, channel TEXT NOT NULL, thread_ts TEXT NOT NULL,
    slack_file_id TEXT NOT NULL, agent_file_id TEXT NOT NULL, used_at REAL NOT NULL,
    PRIMARY KEY (team, channel, thread_ts, slack_file_id)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT NOT NULL, tool TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS hits (
    kind TEXT NOT NULL, ident TEXT NOT NULL, window INTEGER NOT NULL, count INTEGER NOT NULL,
    expires_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, ident, window)
);
"""


class SQLiteStore:
    def __init__(
        self,
        path: str,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        audit_retention_s: float = DEFAULT_AUDIT_RETENTION_S,
    ) -> None:
        self.path = path
        self.retention_s = retention_s
        self.audit_retention_s = audit_retention_s
        self._db: aiosqlite.Connection | None = None
        self._claims_since_sweep = 0
        # one connection, one transaction at a time: a statement of another task must never
        # join (and commit) a transaction half done
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: float) -> SQLiteStore:
        """``sqlite:///relative/path.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``."""
        path = url.removeprefix("sqlite://")
        if path.startswith("/"):  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
            path = path[1:]
        return cls(path or ":memory:", **kwargs)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: durable across process crashes (what recovery needs); an fsync per
        # write would put disk latency in front of every first reply.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        columns = [row[1] async for row in await self._db.execute("PRAGMA table_info(hits)")]
        if "expires_at" not in columns:  # a store made before counters expired
            await self._db.execute("ALTER TABLE hits ADD COLUMN expires_at REAL NOT NULL DEFAULT 0")
        await self._db.commit()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def _one(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        # one queued operation: a cursor left open across awaits would block other tasks' commits
        rows = await self.db.execute_fetchall(sql, args)
        return tuple(rows[0]) if rows else None  # type: ignore[index]

    async def _write(self, sql: str, args: tuple[object, ...]) -> int:
        async with self._lock:
            cursor = await self.db.execute(sql, args)
            await self.db.commit()
            return cursor.rowcount

    async def get_agent_thread(self, key: ConversationKey) -> str | None:
        # ``created_at`` is kept as "last used": each use keeps the mapping another retention
        async with self._lock:
            row = await self._one(
                "UPDATE conversations SET created_at = ? WHERE team=? AND channel=? AND thread_ts=? "
                "AND created_at >= ? RETURNING agent_thread_id",
                (time.time(), *key, time.time() - self.retention_s),
            )
            await self.db.commit()
        return str(row[0]) if row else None

    async def set_agent_thread(self, key: ConversationKey, agent_thread_id: str) -> None:
        async with self._lock:  # a conversation it replaces (past its retention) is kept to delete
            await self.db.execute(
                "INSERT OR IGNORE INTO replaced_conversations SELECT agent_thread_id, team, channel, "
                "thread_ts FROM conversations WHERE team=? AND channel=? AND thread_ts=? "
                "AND agent_thread_id != ?",
                (*key, agent_thread_id),
            )
            await self.db.execute(
                "INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?, ?)",
                (*key, agent_thread_id, time.time()),
            )
            await self.db.commit()

    async def conversations_due(self, limit: int = 100) -> list[tuple[ConversationKey, str]]:
        rows = await self.db.execute_fetchall(
            "SELECT team, channel, thread_ts, agent_thread_id FROM conversations WHERE created_at < ? "
            "UNION ALL SELECT team, channel, thread_ts, agent_thread_id FROM replaced_conversations LIMIT ?",
            (time.time() - self.retention_s, limit),
        )
        return [(ConversationKey(*row[:3]), str(row[3])) for row in rows]

    async def forget_conversation(self, key: ConversationKey, agent_thread_id: str) -> bool:
        async with self._lock:
            cursor = await self.db.execute(
                "DELETE FROM conversations WHERE team=? AND channel=? AND thread_ts=? AND agent_thread_id=? "
                "AND created_at < ?",
                (*key, agent_thread_id, time.time() - self.retention_s),
            )
            replaced = await self.db.execute(
                "DELETE FROM replaced_conversations WHERE agent_thread_id = ?", (agent_thread_id,)
            )
            await self.db.commit()
            return cursor.rowcount + replaced.rowcount > 0

    async def restore_conversation(self, key: ConversationKey, agent_thread_id: str) -> None:
        await self._write(
            "INSERT OR IGNORE INTO replaced_conversations VALUES (?, ?, ?, ?)", (agent_thread_id, *key)
        )

    async def agent_file(self, key: ConversationKey, slack_file_id: str) -> str | None:
        async with self._lock:
            row = await self._one(
                "UPDATE agent_files SET used_at = ? WHERE team=? AND channel=? AND thread_ts=? "
                "AND slack_file_id=? RETURNING agent_file_id",
                (time.time(), *key, slack_file_id),
            )
            await self.db.commit()
        return str(row[0]) if row else None

    async def remember_agent_file(self, file: AgentFile, *, due: bool = False) -> None:
        used_at = time.time() - (self.retention_s + 1 if due else 0)
        await self._write(
            "INSERT OR REPLACE INTO agent_files VALUES (?, ?, ?, ?, ?, ?)",
            (*file.key, file.slack_file_id, file.agent_file_id, used_at),
        )

    # due: the file's own last use and its conversation's (if still mapped) past the retention
    _DUE = (
        "f.used_at < ? AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.team = f.team "
        "AND c.channel = f.channel AND c.thread_ts = f.thread_ts AND c.created_at >= ?)"
    )

    async def agent_files_due(self, limit: int = 100) -> list[AgentFile]:
        cutoff = time.time() - self.retention_s
        rows = await self.db.execute_fetchall(
            "SELECT team, channel, thread_ts, slack_file_id, agent_file_id FROM agent_files f "
            f"WHERE {self._DUE} LIMIT ?",
            (cutoff, cutoff, limit),
        )
        return [AgentFile(ConversationKey(*row[:3]), row[3], row[4]) for row in rows]

    async def forget_agent_file(self, file: AgentFile) -> bool:
        cutoff = time.time() - self.retention_s
        removed = await self._write(
            "DELETE FROM agent_files AS f WHERE team=? AND channel=? AND thread_ts=? "
            f"AND slack_file_id=? AND {self._DUE}",
            (*file.key, file.slack_file_id, cutoff, cutoff),
        )
        return removed > 0

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._write(
            "INSERT INTO audit (at, user, tool, doc) VALUES (?, ?, ?, ?)",
            (entry.at, entry.user, entry.tool, json.dumps(entry.as_dict())),
        )

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        where, args = ["1=1"], []
        for clause, value in (
            ("user = ?", query.user),
            ("tool = ?", query.tool),
            ("json_extract(doc, '$.kind') = ?", query.kind),
            ("at >= ?", query.since),
            ("at < ?", query.until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = await self.db.execute_fetchall(
            f"SELECT doc FROM audit WHERE {' AND '.join(where)} ORDER BY at, id LIMIT ?",
            (*args, query.limit),
        )
        return [AuditEntry.from_dict(json.loads(row[0])) for row in rows]

    async def claim(self, kind: str, ident: str, ttl_s: float) -> bool:
        now = time.time()
        self._claims_since_sweep += 1
        if self._claims_since_sweep >= 500:
            self._claims_since_sweep = 0
            await self._write("DELETE FROM claims WHERE expires_at < ?", (now,))
        return (
            await self._write(
                "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(kind, ident) DO UPDATE "
                "SET expires_at = excluded.expires_at WHERE claims.expires_at < ?",
                (kind, ident, now + ttl_s, now),
            )
            == 1
        )

    async def disabled_tools(self, team: str, channel: str) -> set[str]:
        rows = await self.db.execute_fetchall(
            "SELECT tool FROM tool_settings WHERE team=? AND channel=? AND enabled=0", (team, channel)
        )
        return {row[0] for row in rows}

    async def set_tool_enabled(self, team: str, channel: str, tool: str, enabled: bool, by: str) -> None:
        await self._write(
            "INSERT OR REPLACE INTO tool_settings VALUES (?, ?, ?, ?, ?, ?)",
            (team, channel, tool, int(enabled), by, time.time()),
        )

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        changed = await self._write(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE leases.expires_at < ? OR leases.owner = excluded.owner",
            (name, owner, now + ttl_s, now),
        )
        return changed == 1

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        changed = await self._write(
            "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at >= ?",
            (time.time() + ttl_s, name, owner, time.time()),
        )
        return changed == 1

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    async def lease_owner(self, name: str) -> str | None:
        row = await self._one(
            "SELECT owner FROM leases WHERE name = ? AND expires_at >= ?", (name, time.time())
        )
        return str(row[0]) if row else None

    async def push_turn(self, key: ConversationKey, payload: str, *, first: bool = False) -> None:
        if first:  # an id below every queued one: popped next
            await self._write(
                "INSERT INTO turn_queue (id, conversation, payload) "
                "VALUES ((SELECT COALESCE(MIN(id), 1) - 1 FROM turn_queue), ?, ?)",
                (key.as_str(), payload),
            )
            return
        await self._write(
            "INSERT INTO turn_queue (conversation, payload) VALUES (?, ?)", (key.as_str(), payload)
        )

    async def pop_turn(self, key: ConversationKey, owner: str | None = None) -> str | None:
        """The conversation's next turn; with ``owner``, its reply is recorded as running by
        that owner in the same transaction (a crash can never leave it popped but not running)."""
        async with self._lock:
            row = await self._one(
                "DELETE FROM turn_queue WHERE id = (SELECT id FROM turn_queue WHERE conversation = ? "
                "ORDER BY id LIMIT 1) RETURNING payload",
                (key.as_str(),),
            )
            if row and owner is not None:
                await self.db.execute(
                    "UPDATE replies SET doc = json_set(doc, '$.state', 'running', '$.owner', ?) "
                    "WHERE turn_id = json_extract(?, '$.turn_id')",
                    (owner, row[0]),
                )
            await self.db.commit()
        return str(row[0]) if row else None

    async def queue_length(self, key: ConversationKey) -> int:
        row = await self._one("SELECT COUNT(*) FROM turn_queue WHERE conversation = ?", (key.as_str(),))
        return int(row[0]) if row else 0  # type: ignore[arg-type]

    async def queued_conversations(self) -> list[ConversationKey]:
        rows = await self.db.execute_fetchall("SELECT DISTINCT conversation FROM turn_queue")
        return [ConversationKey(*str(row[0]).split("/", 2)) for row in rows]

    async def record_reply(self, reply: InFlight) -> None:
        await self._write(
            "INSERT OR REPLACE INTO replies VALUES (?, ?)", (reply.turn_id, json.dumps(reply.as_dict()))
        )

    async def finish_reply(self, turn_id: str) -> None:
        await self._write("DELETE FROM replies WHERE turn_id = ?", (turn_id,))

    async def reply(self, turn_id: str) -> InFlight | None:
        row = await self._one("SELECT doc FROM replies WHERE turn_id = ?", (turn_id,))
        return InFlight(**json.loads(str(row[0]))) if row else None

    async def replies_in_flight(self) -> list[InFlight]:
        rows = await self.db.execute_fetchall("SELECT doc FROM replies")
        return [InFlight(**json.loads(row[0])) for row in rows]

    async def put_approval(self, key: str, doc: dict[str, Any], ttl_s: float) -> None:
        await self._write(
            "INSERT OR REPLACE INTO approvals (key, doc, verdict, decided_by, expires_at) "
            "VALUES (?, ?, NULL, '', ?)",
            (key, json.dumps(doc), time.time() + ttl_s),
        )

    async def get_approval(self, key: str) -> tuple[dict[str, Any], bool | None, str] | None:
        row = await self._one(
            "SELECT doc, verdict, decided_by FROM approvals WHERE key = ? AND expires_at >= ?",
            (key, time.time()),
        )
        if row is None:
            return None
        verdict = None if row[1] is None else bool(row[1])
        return json.loads(str(row[0])), verdict, str(row[2])

    async def decide_approval(self, key: str, approve: bool, by: str) -> bool:
        changed = await self._write(
            "UPDATE approvals SET verdict = ?, decided_by = ? "
            "WHERE key = ? AND verdict IS NULL AND expires_at >= ?",
            (int(approve), by, key, time.time()),
        )
        return changed == 1

    async def hit(self, kind: str, ident: str, window_s: float) -> int:
        window = int(time.time() // window_s)
        # RETURNING makes the count atomic with the increment (concurrent callers each see theirs)
        async with self._lock:
            return await self._hit(kind, ident, window, window_s)

    async def _hit(self, kind: str, ident: str, window: int, window_s: float) -> int:
        row = await self._one(
            "INSERT INTO hits VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT(kind, ident, window) DO UPDATE SET count = count + 1 RETURNING count",
            (kind, ident, window, (window + 1) * window_s),
        )
        await self.db.execute(
            "DELETE FROM hits WHERE kind = ? AND ident = ? AND window < ?", (kind, ident, window)
        )
        await self.db.commit()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    async def sweep(self) -> int:
        async with self._lock:
            return await self._sweep()

    async def _sweep(self) -> int:
        now = time.time()
        removed = 0
        for sql, args in (
            ("DELETE FROM claims WHERE expires_at < ?", (now,)),
            ("DELETE FROM leases WHERE expires_at < ?", (now,)),
            ("DELETE FROM hits WHERE expires_at < ?", (now,)),
            ("DELETE FROM approvals WHERE expires_at < ?", (now,)),
            ("DELETE FROM audit WHERE at < ?", (now - self.audit_retention_s,)),
        ):
            cursor = await self.db.execute(sql, args)
            removed += max(cursor.rowcount, 0)
            await cursor.close()
        await self.db.commit()
        return removed

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
