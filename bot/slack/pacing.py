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
import time
from collections.abc import Callable
from dataclasses import dataclass, field


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
                continue
            best = min(self._waiting, key=Ticket.rank)
            self._waiting.remove(best)
            if best.granted.done():  # cancelled meanwhile
                continue
            self._tokens -= 1
            self.granted += 1
            best.granted.set_result(None)
            await asyncio.sleep(0)  # let the caller run before the next grant


class SlackBudget:
    """The pacers of one workspace: ``chat.update`` workspace-wide (Tier 3) and
    ``chat.postMessage`` per channel (about one per second)."""

    def __init__(self, *, update_per_minute: float = 50.0, post_per_minute: float = 60.0) -> None:
        self.update = Pacer(update_per_minute, burst=4)
        self._post_rate = post_per_minute
        self._posts: dict[str, Pacer] = {}

    def post(self, channel: str) -> Pacer:
        pacer = self._posts.get(channel)
        if pacer is None:
            pacer = self._posts[channel] = Pacer(self._post_rate, burst=3, ceiling=120)
        return pacer


class Budgets:
    """One SlackBudget per workspace (team id)."""

    def __init__(self, **kwargs: float) -> None:
        self._kwargs = kwargs
        self._teams: dict[str, SlackBudget] = {}

    def for_team(self, team: str) -> SlackBudget:
        budget = self._teams.get(team)
        if budget is None:
            budget = self._teams[team] = SlackBudget(**self._kwargs)
        return budget
