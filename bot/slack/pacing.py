"""One budget per Slack method per workspace, shared fairly by every reply in flight.

Slack's documented rates are floors ("50+" per minute for Tier 3), so the pacer starts at
the documented rate, probes upward (additively) while Slack keeps accepting and callers
are waiting, and halves on a 429, pausing the whole workspace for ``Retry-After``. Among
waiting callers it serves final edits first, then whoever has waited longest for their
text to show (the stalest reply), so no budget is spent where it matters least.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..logs import log

logger = logging.getLogger("bot.slack.pacing")


@dataclass(eq=False)
class Ticket:
    """A caller's place in line. ``final`` and ``since`` may change while it waits."""

    since: float
    final: bool = False
    seq: int = 0
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def rank(self) -> tuple[bool, float, int]:
        return (not self.final, self.since, self.seq)


class Pacer:
    def __init__(
        self,
        per_minute: float = 50.0,
        *,
        burst: float = 4.0,
        ceiling: float = 600.0,
        floor: float = 6.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0  # calls per second
        self.base = self.rate  # the documented rate: a floor Slack promises, so recover to it fast
        self.burst = burst
        self.ceiling = ceiling / 60.0
        self.floor = floor / 60.0
        self.step = max(per_minute / 60.0 * 0.05, 0.01)  # additive increase per accepted call
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._last_decrease = -1e9
        self._slow_start = True  # grow multiplicatively until Slack first says 429
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.granted = 0
        self.rate_limited_count = 0

    @property
    def per_minute(self) -> float:
        return self.rate * 60.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def ticket(self, since: float | None = None, *, final: bool = False) -> Ticket:
        return Ticket(since if since is not None else self._clock(), final, next(self._seq))

    async def acquire(self, ticket: Ticket) -> None:
        """Wait for a call slot. Cancelling the wait gives the place up."""
        self._waiting.append(ticket)
        self._kick()
        try:
            await ticket.granted
        except asyncio.CancelledError:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            elif ticket.granted.done() and not ticket.granted.cancelled():
                self.refund()
            raise

    def promote(self, ticket: Ticket) -> None:
        ticket.final = True
        self._kick()

    def succeeded(self) -> None:
        """Slack accepted a call: climb back to the documented rate quickly after a 429,
        and above it only gently, and only while callers are queueing."""
        if self.rate < self.base:
            self.rate = min(self.base, self.rate * 1.5)
        elif self._waiting:
            grown = self.rate * 1.1 if self._slow_start else self.rate + self.step
            self.rate = min(self.ceiling, grown)

    def rate_limited(self, retry_after: float) -> None:
        """Slack said 429: nobody in the workspace calls before Retry-After, and the rate
        halves once per congestion episode (a burst of 429s is one episode, not many)."""
        self.rate_limited_count += 1
        self._slow_start = False
        now = self._clock()
        if now - self._last_decrease > max(5.0, 2 * retry_after):
            self.rate = max(self.floor, self.rate * 0.5)
            self._last_decrease = now
        self._paused_until = max(self._paused_until, now + max(retry_after, 0.0))
        # Slack named the moment calls may resume: one call is allowed right then.
        self._tokens = 1.0
        self._stamp = self._paused_until
        self._kick()

    def refund(self) -> None:
        """A granted slot went unused (nothing had changed): give it back."""
        self._tokens = min(self.burst, self._tokens + 1)
        self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while self._waiting:
            self._wake.clear()
            await self._serve_one()

    async def _serve_one(self) -> None:
        """Grant the best-ranked caller a slot, or wait (woken early by a newcomer) until one
        may be granted."""
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        wait = 0.0
        if now < self._paused_until:
            wait = self._paused_until - now
        elif self._tokens < 1:
            wait = (1 - self._tokens) / self.rate
        if wait > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            return
        self._tokens -= 1
        self._grant(min(self._waiting, key=Ticket.rank))
        await asyncio.sleep(0)  # let the caller run before the next grant

    def _grant(self, best: Ticket) -> None:
        self._waiting.remove(best)
        if best.granted.done():  # cancelled meanwhile: the slot is not spent
            self._tokens += 1
            return
        self.granted += 1
        best.granted.set_result(None)


class SharedBuckets(Protocol):
    """Call slots shared by every replica (the Redis store implements it)."""

    async def take(
        self, bucket: str, replica: str, rank: float, rate: float, burst: float
    ) -> tuple[float, float]: ...

    async def leave(self, bucket: str, replica: str) -> None: ...

    async def throttle(self, bucket: str, retry_after: float, *, floor: float, base: float) -> float: ...

    async def succeeded(
        self, bucket: str, *, base: float, ceiling: float, step: float, waiting: bool = False
    ) -> float: ...

    async def refund(self, bucket: str, burst: float) -> None: ...


FINAL_FIRST = 1e10  # a rank offset: every final edit ranks before any other call
# how soon to ask again when another replica's caller ranks first (a newcomer here wakes it
# sooner): asking Redis every few ms would cost every replica CPU for nothing
NOT_OUR_TURN_S = 0.1
LONGEST_WAIT_S = 0.25  # at most this long between asks (a promotion or a newcomer may rank first)


class SharedPacer(Pacer):
    """A pacer whose slots come from a bucket every replica shares: the same order (finals
    first, then the stalest) across replicas, one rate for all. If the shared store cannot
    be reached, it paces alone (as one replica would) until it can."""

    def __init__(
        self, buckets: SharedBuckets, bucket: str, replica: str, per_minute: float, **kwargs: Any
    ) -> None:
        super().__init__(per_minute, **kwargs)
        self.buckets = buckets
        self.bucket = bucket
        self.replica = replica
        self.shared_failures = 0
        self._side: set[asyncio.Task[Any]] = set()
        self._granting_shared = False  # the slot being granted came from the shared bucket

    def _rank(self, ticket: Ticket) -> float:
        since_wall = time.time() - (self._clock() - ticket.since)  # comparable across replicas
        return since_wall + (0.0 if ticket.final else FINAL_FIRST)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _quietly(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:  # the store went away: this replica paces alone meanwhile
            self.shared_failures += 1
            if self.shared_failures == 1 or self.shared_failures % 100 == 0:
                log(logger, "pacer.shared_unavailable", logging.WARNING, bucket=self.bucket, error=repr(exc))
            return None

    async def flush(self) -> None:
        """Wait until what this replica told the shared bucket (a 429, a success) is written."""
        while self._side:
            await asyncio.gather(*list(self._side))

    def succeeded(self) -> None:
        super().succeeded()
        shared = self.buckets.succeeded(
            self.bucket, base=self.base, ceiling=self.ceiling, step=self.step, waiting=bool(self._waiting)
        )
        self._later(self._quietly(shared))

    def rate_limited(self, retry_after: float) -> None:
        super().rate_limited(retry_after)  # this replica stops at once; the others at their next ask
        self._later(
            self._quietly(self.buckets.throttle(self.bucket, retry_after, floor=self.floor, base=self.base))
        )

    def refund(self) -> None:
        self._later(self._quietly(self.buckets.refund(self.bucket, self.burst)))
        self._kick()

    def _grant(self, best: Ticket) -> None:
        if best.granted.done() and self._granting_shared:  # cancelled meanwhile: the shared slot goes back
            self._waiting.remove(best)
            self.refund()
            return
        super()._grant(best)  # a local slot (the store was down) goes back to the local bucket

    async def _serve(self) -> None:
        while True:
            await self._serve_shared()
            # out of the line, then a last look: a caller who came meanwhile is served here
            await self._quietly(self.buckets.leave(self.bucket, self.replica))
            if not self._waiting:
                return

    async def _serve_shared(self) -> None:
        while self._waiting:
            self._wake.clear()
            now = self._clock()
            if now < self._paused_until:  # a 429 seen here: wait it out before asking
                await self._nap(self._paused_until - now)
                continue
            best = min(self._waiting, key=Ticket.rank)
            answer = await self._quietly(
                self.buckets.take(self.bucket, self.replica, self._rank(best), self.base, self.burst)
            )
            if answer is None:  # alone until the store is back
                self._granting_shared = False
                await super()._serve_one()
                continue
            wait, self.rate = answer
            if wait < 0:
                await self._nap(NOT_OUR_TURN_S)
                continue
            if wait > 0:
                await self._nap(min(wait, LONGEST_WAIT_S))
                continue
            self._granting_shared = True
            self._grant(best)
            await asyncio.sleep(0)

    async def _nap(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass


class SlackBudget:
    """The pacers of one workspace: ``chat.update`` workspace-wide (Tier 3), a native
    stream's ``chat.appendStream`` workspace-wide (Tier 4) and ``chat.postMessage`` per
    channel (about one per second). With ``shared`` buckets, every
    replica spends one budget."""

    def __init__(
        self,
        *,
        update_per_minute: float = 50.0,
        post_per_minute: float = 60.0,
        append_per_minute: float = 100.0,
        team: str = "",
        shared: SharedBuckets | None = None,
        replica: str = "",
    ) -> None:
        self.team, self.shared, self.replica = team, shared, replica
        self.update = self._pacer("chat.update", update_per_minute, burst=4)
        # a native stream's appends and stops: Tier 4, a budget apart from chat.update's
        self.append = self._pacer("chat.appendStream", append_per_minute, burst=8)
        self._post_rate = post_per_minute
        self._posts: dict[str, Pacer] = {}

    def _pacer(self, method: str, per_minute: float, **kwargs: float) -> Pacer:
        if self.shared is None:
            return Pacer(per_minute, **kwargs)
        return SharedPacer(self.shared, f"{self.team}:{method}", self.replica, per_minute, **kwargs)

    def post(self, channel: str) -> Pacer:
        pacer = self._posts.get(channel)
        if pacer is None:
            pacer = self._posts[channel] = self._pacer(
                f"chat.postMessage:{channel}", self._post_rate, burst=3, ceiling=120
            )
        return pacer


class Budgets:
    """One SlackBudget per workspace (team id); ``shared``: one budget for all replicas."""

    def __init__(self, *, shared: SharedBuckets | None = None, replica: str = "", **kwargs: float) -> None:
        self._kwargs = kwargs
        self.shared = shared
        self.replica = replica or uuid.uuid4().hex[:12]
        self._teams: dict[str, SlackBudget] = {}

    def for_team(self, team: str) -> SlackBudget:
        budget = self._teams.get(team)
        if budget is None:
            budget = self._teams[team] = SlackBudget(
                **self._kwargs, team=team, shared=self.shared, replica=self.replica
            )
        return budget
