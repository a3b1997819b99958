"""The floor an ideal scheduler reaches: how fresh replies could possibly be, given when the
agent produced each piece of text and the workspace's budget of Slack calls.

The ideal scheduler knows the whole future (when every piece of every reply will come) and
pays nothing: no network time, no 429s, no probing for the rate. It finds the smallest
staleness S such that every piece can be shown within S of the agent producing it, by
calling for each reply as late as that allows (a call then shows all the reply's text so
far: fewer calls) and spending tokens early only when the bucket is full (they would be lost);
its staleness figures are those of that schedule. Several budgets (edits at Tier 3, appends
at Tier 4) are separate buckets, each serving the replies that write through it. Staleness is
measured as the benches measure ours: for each piece of text, the time from the agent
producing it to the first call that shows it.

    from bench.floor import Budget, ideal_staleness
"""

from __future__ import annotations

from dataclasses import dataclass

Timeline = list[tuple[float, int]]  # (when the agent produced it, characters so far)


@dataclass(frozen=True)
class Budget:
    per_minute: float
    burst: float


def ideal_staleness(timelines: list[Timeline], budget: Budget) -> tuple[list[float], int]:
    """Each piece's staleness under the ideal scheduler, and the calls it spent, for replies
    that all write through ``budget``."""
    if not any(timelines):
        return [], 0
    low, high = 0.0, 1.0
    while _schedule(timelines, budget, high) is None:  # a bound that can be met
        low, high = high, high * 2
    while high - low > 0.01:  # to ten milliseconds
        middle = (low + high) / 2
        if _schedule(timelines, budget, middle) is None:
            low = middle
        else:
            high = middle
    found = _schedule(timelines, budget, high)
    assert found is not None
    return found


def _schedule(timelines: list[Timeline], budget: Budget, bound: float) -> tuple[list[float], int] | None:
    """Show every piece within ``bound`` seconds, calling as late as that allows; None when
    the budget cannot."""
    rate = budget.per_minute / 60.0
    shown = [0] * len(timelines)
    left = sum(len(t) for t in timelines)
    now = min(t[0][0] for t in timelines if t)
    tokens, stamp = budget.burst, now
    staleness: list[float] = []
    calls = 0
    while left:
        tokens = min(budget.burst, tokens + (now - stamp) * rate)
        stamp = now
        waiting = [(t[shown[i]][0], i) for i, t in enumerate(timelines) if shown[i] < len(t)]
        due = [(emitted, i) for emitted, i in waiting if emitted <= now]
        if not due:  # nothing to show until the next piece comes
            now = min(waiting)[0]
            continue
        oldest, chosen = min(due)
        deadline = oldest + bound
        full = tokens >= budget.burst - 1e-9  # a token spent now costs nothing
        if not full and now < deadline - 1e-9:
            now = min(deadline, now + (budget.burst - tokens) / rate)
            continue
        if tokens < 1 - 1e-9:
            return None  # due now, and no call left
        line = timelines[chosen]
        while shown[chosen] < len(line) and line[shown[chosen]][0] <= now:
            staleness.append(now - line[shown[chosen]][0])
            shown[chosen] += 1
            left -= 1
        tokens -= 1
        calls += 1
    return staleness, calls


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
