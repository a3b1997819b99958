"""The store protocol, run against SQLite and against the real Redis (127.0.0.1:6379).

In CI a missing Redis is a failure, never a skip."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import AgentFile, ConversationKey, InFlight, SQLiteStore, open_store
from tests.stack import eventually

# its own database (keys under a per-test prefix, removed after each test)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
KEY = ConversationKey("T1", "C1", "1700000000.000100")


async def _redis_or_skip(**kwargs: Any) -> Any:
    from bot.store.redis import RedisStore

    store = RedisStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:8]}:", **kwargs)
    try:
        await store.open()
    except Exception as exc:
        message = f"Redis at {REDIS_URL} is not reachable ({exc}); the Redis store tests did NOT run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return store


async def _opened(kind: str, tmp_path: Path, **kwargs: Any) -> AsyncIterator[Any]:
    if kind == "sqlite":
        opened: Any = await open_store(f"sqlite:///{tmp_path}/bot.db", **kwargs)
        yield opened
        await opened.close()
        return
    opened = await _redis_or_skip(**kwargs)
    yield opened
    keys = [k async for k in opened.r.scan_iter(match=opened.prefix + "*")]
    if keys:
        await opened.r.delete(*keys)
    await opened.close()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for opened in _opened(request.param, tmp_path):
        yield opened


BRIEF_RETENTION_S = 3.0  # long beside one round trip on a loaded machine, short for a test


@pytest.fixture(params=["sqlite", "redis"])
async def brief_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A store whose retention is a few seconds, to watch things fall due."""
    async for opened in _opened(request.param, tmp_path, retention_s=BRIEF_RETENTION_S):
        yield opened


async def test_mapping(store: Any) -> None:
    assert await store.get_agent_thread(KEY) is None
    await store.set_agent_thread(KEY, "thread_abc")
    assert await store.get_agent_thread(KEY) == "thread_abc"
    assert await store.get_agent_thread(KEY._replace(channel="C2")) is None


async def test_claims_are_exclusive_and_expire(store: Any) -> None:
    results = await asyncio.gather(*(store.claim("event", "Ev1", 60) for _ in range(10)))
    assert results.count(True) == 1
    assert await store.claim("post", "Ev1", 60) is True  # kinds are separate
    assert await store.claim("event", "short", 0.05) is True
    await eventually(lambda: store.claim("event", "short", 60), "a 50 ms claim expiring")


async def test_tool_settings(store: Any) -> None:
    assert await store.disabled_tools("T1", "C1") == set()
    await store.set_tool_enabled("T1", "C1", "clock", False, "U1")
    await store.set_tool_enabled("T1", "C1", "search", False, "U1")
    await store.set_tool_enabled("T1", "C1", "search", True, "U1")
    assert await store.disabled_tools("T1", "C1") == {"clock"}
    assert await store.disabled_tools("T1", "C2") == set()


async def test_leases_have_one_owner_renew_and_expire(store: Any) -> None:
    # ownership on a lease that cannot expire during the checks, however slow the machine
    assert await store.acquire_lease("conv", "a", 60) is True
    assert await store.acquire_lease("conv", "b", 60) is False
    assert await store.acquire_lease("conv", "a", 60) is True  # the owner may re-take it
    assert await store.lease_owner("conv") == "a"
    assert await store.renew_lease("conv", "a", 60) is True
    assert await store.renew_lease("conv", "b", 60) is False
    await store.release_lease("conv", "b")  # not the owner: no effect
    assert await store.lease_owner("conv") == "a"
    await store.release_lease("conv", "a")
    assert await store.lease_owner("conv") is None
    assert await store.acquire_lease("conv", "b", 60) is True
    # expiry, observed rather than slept through
    assert await store.acquire_lease("short", "a", 0.05) is True

    async def expired() -> bool:
        return await store.lease_owner("short") is None

    await eventually(expired, "a 50 ms lease expiring")
    assert await store.renew_lease("short", "a", 60) is False  # too late: it expired
    assert await store.acquire_lease("short", "b", 60) is True


async def test_turn_queue_is_fifo_per_conversation(store: Any) -> None:
    other = KEY._replace(thread_ts="2.0")
    for i in range(3):
        await store.push_turn(KEY, f"t{i}")
    await store.push_turn(other, "o0")
    assert set(await store.queued_conversations()) == {KEY, other}
    assert [await store.pop_turn(KEY) for _ in range(4)] == ["t0", "t1", "t2", None]
    assert await store.queued_conversations() == [other]


async def test_a_turn_queued_first_is_popped_before_those_waiting(store: Any) -> None:
    """A turn asked afresh after its replica died came before the turns queued since."""
    other = KEY._replace(thread_ts="2.0")
    await store.push_turn(other, "o0")
    await store.push_turn(KEY, "later")
    await store.push_turn(KEY, "earlier", first=True)
    await store.push_turn(KEY, "latest")
    assert [await store.pop_turn(KEY) for _ in range(4)] == ["earlier", "later", "latest", None]
    await store.push_turn(KEY, "alone", first=True)  # into an empty queue
    assert await store.pop_turn(KEY) == "alone"
    assert await store.pop_turn(other) == "o0"


async def test_replies_in_flight(store: Any) -> None:
    reply = InFlight("turn1", "T1", "C1", "1.0", "1.1", "replica-a", time.time(), "thread_1", "run_1")
    await store.record_reply(reply)
    reply.run_id = "run_2"
    await store.record_reply(reply)
    assert await store.replies_in_flight() == [reply]
    await store.finish_reply("turn1")
    assert await store.replies_in_flight() == []


async def test_hits_count_within_a_window(store: Any) -> None:
    counts = [await store.hit("user", "U1", 60) for _ in range(3)]
    assert counts == [1, 2, 3]
    assert await store.hit("user", "U2", 60) == 1


async def test_agent_files_fall_due_when_unused_for_the_retention(brief_store: Any) -> None:
    """A conversation's uploaded file is reused by Slack file id; once neither the file nor its
    conversation has been used for the retention it is due, and forgetting it wins only while
    it is still due (a file used meanwhile stays)."""
    store = brief_store
    csv = AgentFile(KEY, "F0CSV", "assistant-file-1")
    await store.remember_agent_file(csv)
    assert await store.agent_file(KEY, "F0CSV") == "assistant-file-1"
    assert await store.agent_file(KEY, "F0OTHER") is None
    assert await store.agent_file(KEY._replace(thread_ts="1.2"), "F0CSV") is None  # per conversation
    assert await store.agent_files_due() == []  # just used

    async def due() -> list[AgentFile]:
        return list(await store.agent_files_due())

    await eventually(due, "the unused file falls due", within_s=30, step=0.1)
    assert await due() == [csv]
    assert await store.agent_file(KEY, "F0CSV") == "assistant-file-1"  # used again just in time
    assert await store.forget_agent_file(csv) is False
    assert await store.agent_files_due() == []
    await eventually(due, "the file falls due again", within_s=30, step=0.1)
    assert await store.forget_agent_file(csv) is True
    assert await store.agent_file(KEY, "F0CSV") is None
    assert await store.agent_files_due() == []
    assert await store.forget_agent_file(csv) is False  # forgotten once


async def test_a_conversation_in_use_keeps_its_files(brief_store: Any) -> None:
    store = brief_store
    image = AgentFile(KEY, "F0PNG", "assistant-file-2")
    await store.set_agent_thread(KEY, "thread_abc")
    await store.remember_agent_file(image)
    until = time.monotonic() + BRIEF_RETENTION_S * 1.5  # past the file's own retention
    while time.monotonic() < until:
        assert await store.get_agent_thread(KEY) == "thread_abc"  # the thread is in use
        assert await store.agent_files_due() == []
        await asyncio.sleep(0.3)

    async def due() -> list[AgentFile]:
        return list(await store.agent_files_due())

    await eventually(due, "the file falls due once the thread is left", within_s=30, step=0.1)
    assert await due() == [image]


async def test_sqlite_mapping_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/bot.db"
    first = await open_store(url)
    await first.set_agent_thread(KEY, "thread_abc")
    await first.close()
    again = await open_store(url)
    assert await again.get_agent_thread(KEY) == "thread_abc"
    await again.close()


def test_url_forms() -> None:
    assert SQLiteStore.from_url("sqlite:///./data/bot.db").path == "./data/bot.db"
    assert SQLiteStore.from_url("sqlite:////var/lib/bot.db").path == "/var/lib/bot.db"
    assert SQLiteStore.from_url("sqlite://:memory:").path == ":memory:"


async def test_unknown_store_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="must start with sqlite:/// or redis://"):
        await open_store("postgres://x")


async def test_concurrent_hits_each_see_their_own_count(store: Any) -> None:
    counts = await asyncio.gather(*(store.hit("user", "U9", 60) for _ in range(5)))
    assert sorted(counts) == [1, 2, 3, 4, 5]


async def test_popping_a_turn_records_it_running_by_the_new_owner_in_one_step(store: Any) -> None:
    import json

    record = InFlight("turn-pop", "T1", "C1", KEY.thread_ts, "", "replica-a", time.time(), state="queued")
    await store.record_reply(record)
    await store.push_turn(KEY, json.dumps({"turn_id": "turn-pop", "text": "hi"}))
    payload = await store.pop_turn(KEY, owner="replica-b")
    assert json.loads(payload)["turn_id"] == "turn-pop"
    now = await store.reply("turn-pop")
    assert now is not None and now.state == "running" and now.owner == "replica-b"
    assert await store.pop_turn(KEY, owner="replica-b") is None


async def test_the_audit_trail_is_queried_by_user_tool_and_time(store: Any) -> None:
    from bot.store import AuditEntry, AuditQuery

    now = time.time()
    written = [
        AuditEntry("tool_call", "T1", "C1", "U1", "restart", "ok", at=now - 7200, duration_ms=12),
        AuditEntry("tool_call", "T1", "C1", "U2", "restart", "declined", at=now - 60, approval="declined"),
        AuditEntry("tool_setting", "T1", "C2", "U9", "lookup", "disabled", at=now - 30),
        AuditEntry(
            "approval", "T1", "C1", "U1", "github: create_issue", "approved", at=now - 10, ids={"run": "r1"}
        ),
    ]
    for entry in written:
        await store.add_audit(entry)
    assert await store.audit_entries(AuditQuery()) == written  # oldest first, as written
    assert await store.audit_entries(AuditQuery(user="U1")) == [written[0], written[3]]
    assert await store.audit_entries(AuditQuery(tool="restart")) == written[:2]
    assert await store.audit_entries(AuditQuery(since=now - 3600)) == written[1:]
    assert await store.audit_entries(AuditQuery(since=now - 3600, until=now - 20)) == written[1:3]
    assert await store.audit_entries(AuditQuery(limit=2)) == written[:2]
    assert await store.audit_entries(AuditQuery(user="U1", tool="restart", since=now - 3600)) == []


async def test_audit_entries_past_their_retention_are_forgotten(tmp_path: Path) -> None:
    from bot.store import AuditEntry, AuditQuery

    sqlite = await open_store(f"sqlite:///{tmp_path}/a.db", audit_retention_s=3600)
    redis = await _redis_or_skip(audit_retention_s=1.0)
    try:
        await sqlite.add_audit(AuditEntry("tool_call", "T1", "C1", "U1", "old", "ok", at=time.time() - 7200))
        await sqlite.add_audit(AuditEntry("tool_call", "T1", "C1", "U1", "new", "ok"))
        await sqlite.sweep()  # SQLite forgets at its hourly sweep
        assert [e.tool for e in await sqlite.audit_entries(AuditQuery())] == ["new"]
        # Redis trims the stream by its own clock as entries arrive
        await redis.add_audit(AuditEntry("tool_call", "T1", "C1", "U1", "old", "ok"))
        await asyncio.sleep(1.2)  # the retention itself passing: what this test is about
        await redis.add_audit(AuditEntry("tool_call", "T1", "C1", "U1", "new", "ok"))
        assert [e.tool for e in await redis.audit_entries(AuditQuery())] == ["new"]
    finally:
        await sqlite.close()
        keys = [k async for k in redis.r.scan_iter(match=redis.prefix + "*")]
        if keys:
            await redis.r.delete(*keys)
        await redis.close()


async def test_conversations_fall_due_when_idle_and_replaced_ones_are_kept_to_delete(
    brief_store: Any,
) -> None:
    """A Slack thread's agent conversation is due once unused for the retention; forgetting it
    wins only while still due; a conversation replaced by a new one (the thread came back after
    its retention) is still listed to delete; one whose deletion failed is put back."""
    store = brief_store
    await store.set_agent_thread(KEY, "thread_1")
    assert await store.conversations_due() == []

    async def due() -> list[Any]:
        return list(await store.conversations_due())

    await eventually(due, "the idle conversation falls due", within_s=30, step=0.1)
    assert await due() == [(KEY, "thread_1")]
    assert await store.get_agent_thread(KEY) is None  # past its retention: a new message starts anew
    await store.set_agent_thread(KEY, "thread_2")  # ... and it did, before the clean-up ran
    assert await store.conversations_due() == [(KEY, "thread_1")]  # the old one is still to delete
    assert await store.forget_conversation(KEY, "thread_2") is False  # just made: not due
    assert await store.forget_conversation(KEY, "thread_1") is True
    assert await store.conversations_due() == [] and await store.get_agent_thread(KEY) == "thread_2"
    await store.restore_conversation(KEY, "thread_1")  # its deletion failed: due again at once
    assert await store.conversations_due() == [(KEY, "thread_1")]
    assert await store.get_agent_thread(KEY) == "thread_2"  # the thread's own conversation is untouched
    assert await store.forget_conversation(KEY, "thread_1") is True
    await eventually(due, "the second conversation falls due", within_s=30, step=0.1)
    assert await store.forget_conversation(KEY, "thread_2") is True
    assert await store.conversations_due() == [] and await store.get_agent_thread(KEY) is None
