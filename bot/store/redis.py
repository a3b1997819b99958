"""Redis store: the same protocol, shared by several replicas (redis-py asyncio).

Keys live under one prefix (default ``sab:``). Claims and leases use ``SET NX PX`` and
compare-and-set scripts so two replicas never both win.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from .base import (
    DEFAULT_AUDIT_RETENTION_S,
    DEFAULT_RETENTION_S,
    AgentFile,
    AuditEntry,
    AuditQuery,
    ConversationKey,
    InFlight,
)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
# pop the next turn and record its reply as running by the new owner, in one step
_POP_RUNNING = """
local payload = redis.call('lpop', KEYS[1])
if not payload then
  redis.call('srem', KEYS[2], ARGV[2])
  return false
end
local turn_id = cjson.decode(payload)['turn_id']
local doc = redis.call('hget', KEYS[3], turn_id)
if doc then
  local reply = cjson.decode(doc)
  reply['state'] = 'running'
  reply['owner'] = ARGV[1]
  redis.call('hset', KEYS[3], turn_id, cjson.encode(reply))
end
return payload
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""

# forget a conversation's file only while the conversation is still due (not used meanwhile)
_FORGET_FILE = """
local due = redis.call('zscore', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[3]) then return 0 end
local removed = redis.call('hdel', KEYS[1], ARGV[2])
if redis.call('hlen', KEYS[1]) == 0 then redis.call('zrem', KEYS[2], ARGV[1]) end
return removed
"""

# map a Slack thread to an agent conversation; one it replaces is kept to delete
_SET_CONVERSATION = """
local old = redis.call('hget', KEYS[2], ARGV[1])
if old and old ~= ARGV[2] then redis.call('hset', KEYS[4], old, ARGV[1]) end
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
return 1
"""
# forget a conversation only while it is still due and still that agent conversation (or
# one that was replaced or put back)
_FORGET_CONVERSATION = """
if redis.call('hdel', KEYS[4], ARGV[2]) == 1 then return 1 end
local due = redis.call('zscore', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[3]) then return 0 end
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('del', KEYS[3])
return 1
"""


class RedisStore:
    def __init__(
        self,
        url: str,
        prefix: str = "sab:",
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        audit_retention_s: float = DEFAULT_AUDIT_RETENTION_S,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.retention_s = retention_s
        self.audit_retention_s = audit_retention_s
        self._redis: Redis | None = None

    async def open(self) -> None:
        self._redis = Redis.from_url(self.url, decode_responses=True)
        await self._redis.ping()

    @property
    def r(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the store is not open")
        return self._redis

    def key(self, *parts: str) -> str:
        """The Redis key of one record (for operators and tests)."""
        return self.prefix + ":".join(parts)

    _k = key

    async def get_agent_thread(self, key: ConversationKey) -> str | None:
        # each use keeps the mapping (GETEX), the conversation and its files another retention
        value = await self.r.getex(self._k("conv", key.as_str()), ex=max(1, int(self.retention_s)))
        if value is None:
            return None
        due = {key.as_str(): time.time() + self.retention_s}
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(self._k("conv-due"), due, xx=True, gt=True)
            pipe.zadd(self._k("files-due"), due, xx=True, gt=True)
            await pipe.execute()
        return str(value)

    async def set_agent_thread(self, key: ConversationKey, agent_thread_id: str) -> None:
        # the mapping expires with the retention; the conversation stays listed (conv-threads,
        # conv-due) until the agent service's copy is deleted, and one it replaces is kept to
        # delete (conv-replaced)
        await self.r.eval(  # type: ignore[misc]
            _SET_CONVERSATION,
            4,
            self._k("conv", key.as_str()),
            self._k("conv-threads"),
            self._k("conv-due"),
            self._k("conv-replaced"),
            key.as_str(),
            agent_thread_id,
            max(1, int(self.retention_s)),
            time.time() + self.retention_s,
        )

    async def conversations_due(self, limit: int = 100) -> list[tuple[ConversationKey, str]]:
        found: list[tuple[ConversationKey, str]] = []
        names = await self.r.zrangebyscore(self._k("conv-due"), "-inf", time.time(), start=0, num=limit)
        threads = await self.r.hmget(self._k("conv-threads"), names) if names else []
        for name, thread in zip(names, threads, strict=True):
            if thread is not None:
                found.append((ConversationKey(*str(name).split("/", 2)), str(thread)))
        for thread, name in (await self.r.hgetall(self._k("conv-replaced"))).items():
            found.append((ConversationKey(*str(name).split("/", 2)), str(thread)))
        return found[:limit]

    async def forget_conversation(self, key: ConversationKey, agent_thread_id: str) -> bool:
        removed = await self.r.eval(  # type: ignore[misc]
            _FORGET_CONVERSATION,
            4,
            self._k("conv-due"),
            self._k("conv-threads"),
            self._k("conv", key.as_str()),
            self._k("conv-replaced"),
            key.as_str(),
            agent_thread_id,
            time.time(),
        )
        return bool(removed)

    async def restore_conversation(self, key: ConversationKey, agent_thread_id: str) -> None:
        await self.r.hset(self._k("conv-replaced"), agent_thread_id, key.as_str())

    # a conversation's files: a hash (Slack file id -> agent file id), and one sorted set of
    # conversations by when their files fall due (last use + retention)
    async def agent_file(self, key: ConversationKey, slack_file_id: str) -> str | None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hget(self._k("files", key.as_str()), slack_file_id)
            pipe.zadd(self._k("files-due"), {key.as_str(): time.time() + self.retention_s}, xx=True, gt=True)
            value, _ = await pipe.execute()
        return str(value) if value is not None else None

    async def remember_agent_file(self, file: AgentFile, *, due: bool = False) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("files", file.key.as_str()), file.slack_file_id, file.agent_file_id)
            due_at = time.time() + (0 if due else self.retention_s)
            pipe.zadd(self._k("files-due"), {file.key.as_str(): due_at}, gt=not due)
            await pipe.execute()

    async def agent_files_due(self, limit: int = 100) -> list[AgentFile]:
        found: list[AgentFile] = []
        for name in await self.r.zrangebyscore(self._k("files-due"), "-inf", time.time(), start=0, num=limit):
            key = ConversationKey(*str(name).split("/", 2))
            for slack_id, agent_id in (await self.r.hgetall(self._k("files", str(name)))).items():
                found.append(AgentFile(key, str(slack_id), str(agent_id)))
        return found[:limit]

    async def forget_agent_file(self, file: AgentFile) -> bool:
        removed = await self.r.eval(  # type: ignore[misc]
            _FORGET_FILE,
            2,
            self._k("files", file.key.as_str()),
            self._k("files-due"),
            file.key.as_str(),
            file.slack_file_id,
            time.time(),
        )
        return bool(removed)

    async def sweep(self) -> int:
        """Nothing to do: every key carries a TTL (mappings the retention, marks and leases
        their own), so Redis forgets them by itself."""
        return 0

    # the audit trail: one stream, trimmed past the audit retention as entries are added. Its
    # ids are the server's clock in ms, so a time range reads a slice (widened by a margin for
    # replicas' clocks, then matched on each entry's own time)
    async def add_audit(self, entry: AuditEntry) -> None:
        oldest_ms = int((time.time() - self.audit_retention_s) * 1000)
        await self.r.xadd(
            self._k("audit"), {"doc": json.dumps(entry.as_dict())}, minid=oldest_ms, approximate=False
        )  # exact: "~" trims only whole nodes, never a small trail (writes are one per tool call)

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        margin_ms = 300_000
        low = "-" if query.since is None else str(max(0, int(query.since * 1000) - margin_ms))
        high = "+" if query.until is None else str(int(query.until * 1000) + margin_ms)
        found: list[AuditEntry] = []
        while len(found) < query.limit:
            page = await self.r.xrange(self._k("audit"), min=low, max=high, count=500)
            if not page:
                break
            for _, fields in page:
                entry = AuditEntry.from_dict(json.loads(fields["doc"]))
                if query.matches(entry):
                    found.append(entry)
            low = f"({page[-1][0]}"  # after the last one read
        return found[: query.limit]

    async def claim(self, kind: str, ident: str, ttl_s: float) -> bool:
        return bool(
            await self.r.set(self._k("claim", kind, ident), "1", nx=True, px=max(1, int(ttl_s * 1000)))
        )

    async def disabled_tools(self, team: str, channel: str) -> set[str]:
        return {str(v) for v in await self.r.smembers(self._k("tools-off", team, channel))}

    async def set_tool_enabled(self, team: str, channel: str, tool: str, enabled: bool, by: str) -> None:
        key = self._k("tools-off", team, channel)
        if enabled:
            await self.r.srem(key, tool)
        else:
            await self.r.sadd(key, tool)

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        key = self._k("lease", name)
        if await self.r.set(key, owner, nx=True, px=int(ttl_s * 1000)):
            return True
        return bool(await self.r.eval(_RENEW, 1, key, owner, int(ttl_s * 1000)))

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return bool(await self.r.eval(_RENEW, 1, self._k("lease", name), owner, int(ttl_s * 1000)))

    async def release_lease(self, name: str, owner: str) -> None:
        await self.r.eval(_RELEASE, 1, self._k("lease", name), owner)

    async def lease_owner(self, name: str) -> str | None:
        value = await self.r.get(self._k("lease", name))
        return str(value) if value is not None else None

    async def push_turn(self, key: ConversationKey, payload: str, *, first: bool = False) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            if first:
                pipe.lpush(self._k("queue", key.as_str()), payload)
            else:
                pipe.rpush(self._k("queue", key.as_str()), payload)
            pipe.sadd(self._k("queues"), key.as_str())
            await pipe.execute()

    async def pop_turn(self, key: ConversationKey, owner: str | None = None) -> str | None:
        """The conversation's next turn; with ``owner``, its reply is recorded as running by
        that owner in the same step (a Lua script: atomic on the server)."""
        if owner is None:
            value = await self.r.lpop(self._k("queue", key.as_str()))
            if value is None:
                await self.r.srem(self._k("queues"), key.as_str())
            return None if value is None else str(value)
        value = await self.r.eval(  # type: ignore[misc]
            _POP_RUNNING,
            3,
            self._k("queue", key.as_str()),
            self._k("queues"),
            self._k("replies"),
            owner,
            key.as_str(),
        )
        return None if value is None else str(value)

    async def queue_length(self, key: ConversationKey) -> int:
        return int(await self.r.llen(self._k("queue", key.as_str())))

    async def queued_conversations(self) -> list[ConversationKey]:
        found = []
        for name in await self.r.smembers(self._k("queues")):
            if await self.r.llen(self._k("queue", name)):
                found.append(ConversationKey(*str(name).split("/", 2)))
        return found

    async def record_reply(self, reply: InFlight) -> None:
        await self.r.hset(self._k("replies"), reply.turn_id, json.dumps(reply.as_dict()))

    async def finish_reply(self, turn_id: str) -> None:
        await self.r.hdel(self._k("replies"), turn_id)

    async def reply(self, turn_id: str) -> InFlight | None:
        doc = await self.r.hget(self._k("replies"), turn_id)
        return InFlight(**json.loads(doc)) if doc else None

    async def replies_in_flight(self) -> list[InFlight]:
        return [InFlight(**json.loads(doc)) for doc in (await self.r.hgetall(self._k("replies"))).values()]

    async def put_approval(self, key: str, doc: dict[str, Any], ttl_s: float) -> None:
        await self.r.set(self._k("approval", key), json.dumps(doc), px=max(1, int(ttl_s * 1000)))

    async def get_approval(self, key: str) -> tuple[dict[str, Any], bool | None, str] | None:
        doc, verdict = await self.r.mget(self._k("approval", key), self._k("verdict", key))
        if doc is None:
            return None
        if verdict is None:
            return json.loads(doc), None, ""
        decision, _, by = str(verdict).partition("|")
        return json.loads(doc), decision == "1", by

    async def decide_approval(self, key: str, approve: bool, by: str) -> bool:
        ttl = await self.r.pttl(self._k("approval", key))
        if ttl is None or ttl <= 0:
            return False  # asked too long ago, or never
        return bool(await self.r.set(self._k("verdict", key), f"{int(approve)}|{by}", nx=True, px=ttl))

    async def hit(self, kind: str, ident: str, window_s: float) -> int:
        key = self._k("hits", kind, ident, str(int(time.time() // window_s)))
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, int(window_s * 1000) + 1000)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
