"""The workspace pacer: priorities, 429 pauses, probing, refunds."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.slack.pacing import Pacer
from tests.stack import eventually


async def test_final_edits_first_then_the_stalest() -> None:
    pacer = Pacer(per_minute=600, burst=1)  # one slot now, then one per 0.1 s
    await pacer.acquire(pacer.ticket())  # use the burst
    order: list[str] = []

    async def want(name: str, since: float, final: bool = False) -> None:
        await pacer.acquire(pacer.ticket(since, final=final))
        order.append(name)

    now = time.monotonic()
    await asyncio.gather(want("fresh", now), want("stale", now - 5), want("final", now, final=True))
    assert order == ["final", "stale", "fresh"]


async def test_a_429_pauses_everyone_for_retry_after_and_halves_once() -> None:
    pacer = Pacer(per_minute=600, burst=5)
    pacer.rate_limited(0.3)
    pacer.rate_limited(0.3)  # the same episode: not halved again
    assert pacer.per_minute == 300
    started = time.monotonic()
    await pacer.acquire(pacer.ticket())
    assert time.monotonic() - started >= 0.29
    # then the documented rate comes back quickly
    for _ in range(3):
        pacer.succeeded()
    assert pacer.per_minute == 600


async def test_probes_upward_only_under_pressure() -> None:
    pacer = Pacer(per_minute=60, burst=10)
    pacer.succeeded()
    assert pacer.per_minute == 60  # nobody waiting: no reason to probe
    for _ in range(10):  # the burst spent: the next callers queue
        await pacer.acquire(pacer.ticket())
    waiters = [asyncio.ensure_future(pacer.acquire(pacer.ticket())) for _ in range(2)]
    await eventually(lambda: pacer.waiting == 2, "two callers queueing")
    pacer.succeeded()  # a call went through while others wait: room to probe
    assert pacer.per_minute > 60
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert pacer.waiting == 0


async def test_refund_gives_the_slot_back_and_cancel_leaves_the_line() -> None:
    pacer = Pacer(per_minute=6, burst=1)
    await pacer.acquire(pacer.ticket())
    pacer.refund()
    await asyncio.wait_for(pacer.acquire(pacer.ticket()), 0.1)  # the refunded slot
    waiter = asyncio.ensure_future(pacer.acquire(pacer.ticket()))
    await eventually(lambda: pacer.waiting == 1, "the caller in line")
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert pacer.waiting == 0


# -- one budget shared by replicas (real Redis) ------------------------------------------------


@pytest.fixture
async def buckets() -> AsyncIterator[Any]:
    """Shared buckets on the machine's Redis, under a prefix of their own (removed after)."""
    from redis.asyncio import Redis

    from bot.store.buckets import RedisBuckets

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    redis = Redis.from_url(url, decode_responses=True)
    try:
        await redis.ping()
    except Exception as exc:
        message = f"Redis at {url} is not reachable ({exc}); the shared budget tests did NOT run"
        await redis.aclose()
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield RedisBuckets(redis, prefix)
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def _replicas(buckets: Any, n: int, per_minute: float, burst: float) -> list[Any]:
    from bot.slack.pacing import SharedPacer

    return [SharedPacer(buckets, "T1:chat.update", f"replica-{i}", per_minute, burst=burst) for i in range(n)]


async def test_replicas_spend_one_shared_budget(buckets: Any) -> None:
    """Three replicas, twenty calls, 10 a second with a burst of 2: together they take at least
    the time one bucket allows (alone, each would have its own and finish three times sooner)."""
    pacers = _replicas(buckets, 3, per_minute=600, burst=2)
    started = time.monotonic()
    await asyncio.gather(*(pacers[i % 3].acquire(pacers[i % 3].ticket()) for i in range(20)))
    elapsed = time.monotonic() - started
    assert elapsed >= (20 - 2) / 10 * 0.9, elapsed
    assert sum(p.granted for p in pacers) == 20


async def test_a_final_edit_on_another_replica_goes_before_stale_calls(buckets: Any) -> None:
    first, second = _replicas(buckets, 2, per_minute=120, burst=1)  # a slot every 0.5 s
    await first.acquire(first.ticket())  # spend the burst
    order: list[str] = []

    async def want(pacer: Any, name: str, since: float, final: bool = False) -> None:
        await pacer.acquire(pacer.ticket(since, final=final))
        order.append(name)

    now = time.monotonic()
    stale = [asyncio.create_task(want(first, f"stale-{i}", now - 10 - i)) for i in range(3)]
    await eventually(lambda: first.waiting == 3, "the stale calls queued on the first replica")
    final = asyncio.create_task(want(second, "final", now, final=True))
    await asyncio.gather(*stale, final)
    # the first slot may already be promised to a stale call; the next is the final edit's
    assert order.index("final") <= 1, order
    assert [name for name in order if name != "final"] == ["stale-2", "stale-1", "stale-0"]  # stalest first


async def test_a_429_on_one_replica_pauses_them_all(buckets: Any) -> None:
    first, second = _replicas(buckets, 2, per_minute=6000, burst=5)
    await first.acquire(first.ticket())  # the bucket exists
    first.rate_limited(1.0)
    await first.flush()  # the 429 is in the shared bucket
    paused_at = time.monotonic()
    await second.acquire(second.ticket())
    assert time.monotonic() - paused_at >= 0.9  # the other replica waited out Retry-After too
    assert second.per_minute == 3000  # and spends the halved rate


async def test_without_the_shared_store_a_replica_paces_alone() -> None:
    from redis.asyncio import Redis

    from bot.store.buckets import RedisBuckets

    down = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    [alone] = _replicas(RedisBuckets(down), 1, per_minute=600, burst=2)
    await asyncio.wait_for(asyncio.gather(*(alone.acquire(alone.ticket()) for _ in range(4))), 30)
    assert alone.granted == 4 and alone.shared_failures >= 1
    await down.aclose()


async def test_a_slot_given_up_while_the_store_is_down_goes_back_to_the_local_bucket() -> None:
    """With the store down the replica paces from its own bucket: a caller that gives up its
    place returns that local slot, never a shared one it did not take."""
    from redis.asyncio import Redis

    from bot.store.buckets import RedisBuckets

    class Refunds(RedisBuckets):
        count = 0

        async def refund(self, bucket: str, burst: float) -> None:
            Refunds.count += 1
            await super().refund(bucket, burst)

    down = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    [alone] = _replicas(Refunds(down), 1, per_minute=60, burst=1)
    await asyncio.wait_for(alone.acquire(alone.ticket()), 30)  # the one slot of the burst
    gave_up = asyncio.create_task(alone.acquire(alone.ticket()))
    await eventually(lambda: alone.waiting == 1, "the second caller waiting")
    gave_up.cancel()
    await eventually(lambda: alone.waiting == 0, "the pacer reached the cancelled caller", within_s=30)
    assert Refunds.count == 0 and alone.granted == 1
    await asyncio.wait_for(alone.acquire(alone.ticket()), 30)  # the slot it left is there
    assert alone.granted == 2
    await down.aclose()


async def test_a_shared_budget_probes_upward_while_callers_wait(buckets: Any) -> None:
    """Like a replica's own pacer, the shared rate grows past the documented floor while calls
    queue (Slack's tiers are floors). Its state lives in Redis as text: a rate written back
    rounded would sit a hair under the floor forever and never grow."""
    [pacer] = _replicas(buckets, 1, per_minute=50, burst=2)

    async def call() -> None:
        await pacer.acquire(pacer.ticket())
        pacer.succeeded()

    await asyncio.gather(*(call() for _ in range(8)))
    await pacer.flush()
    await pacer.acquire(pacer.ticket())  # reads the shared rate back
    assert pacer.per_minute > 50
