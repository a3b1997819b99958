"""The workspace pacer: priorities, 429 pauses, probing, refunds."""

from __future__ import annotations

import asyncio
import time

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
