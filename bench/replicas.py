"""Three replicas on one Redis, one workspace: does the shared Slack budget keep them calm?

Slack counts calls per method per workspace, whichever process makes them. Three bot
processes (as deployed: `python -m bot run`, one Redis store) answer the same concurrent
mentions, which the Slack emulator (documented tier limits on: chat.update Tier 3, 50 per
minute workspace-wide; chat.postMessage about one per second per channel) spreads over them
like a load balancer. Three configurations, each from a fresh start, in one run:

  one replica      the baseline: one process paces the workspace alone
  3 x own pacer    three processes, each pacing as if alone (BOT_SHARED_SLACK_BUDGET=false)
  3 x shared       three processes sharing one budget through Redis (BOT_SHARED_SLACK_BUDGET=true)

Reported: Slack's 429s, staleness (how long a piece of the answer waits before a person can
see it, p50/p95), calls per reply, replies whose final text never appeared. Goal: the shared
budget meets no more 429s than one replica alone, and loses nothing. One run of each is a
sample (the pacers probe above Slack's documented floor, and a few 429s are the price of
finding its real rate), so "no more" allows one run's noise: 5% or 2 429s.

    make bench
    python bench/replicas.py --replies 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis
from slack_stream import Result, _visible, measure, script_for

from bot.devstack.processes import BotProcess, start_bot
from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")


def _done(slack: SlackEmulator, channel: str, ts: str, expected: str) -> bool:
    replies = slack.bot_replies(channel, ts)
    return bool(replies) and _visible(replies[0].blocks, replies[0].text) == expected


async def configuration(
    name: str, replicas: int, shared: bool, args: argparse.Namespace, script: Script, expected: str
) -> Result:
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()  # a fresh start: no budget or heads left by the previous configuration
    await redis.aclose()
    agent = AgentServiceEmulator(script)
    await agent.start()
    slack = SlackEmulator()
    await slack.start()
    bots: list[BotProcess] = []
    with tempfile.TemporaryDirectory() as folder:
        try:
            for i in range(replicas):
                bots.append(
                    await start_bot(
                        agent,
                        slack,
                        REDIS_URL,
                        f"{folder}/bot{i}.log",
                        BOT_LOG_LEVEL="WARNING",
                        BOT_SHARED_SLACK_BUDGET="true" if shared else "false",
                    )
                )
            slack.events_urls = [bot.events_url for bot in bots]  # round robin, like a load balancer
            for i in range(replicas):  # each process pays its one-time costs before the wave
                warm = slack.user_posts("U0ALICE", "C0GENERAL", f"<@U0BOT> warm up {i}")
                while not _done(slack, "C0GENERAL", warm, expected):  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            slack.calls.clear()
            channels = [f"C{i:04d}" for i in range(args.replies)]
            for channel in channels:
                slack.add_channel(channel, channel.lower())
            started = time.monotonic()
            posts = []
            for channel in channels:
                posts.append((channel, slack.user_posts("U0ALICE", channel, "<@U0BOT> go"), time.monotonic()))
                await asyncio.sleep(args.arrival / args.replies)
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (other processes write)
                _done(slack, c, ts, expected) for c, ts, _ in posts
            ):
                await asyncio.sleep(0.2)
            result = Result(name)
            result.wall = time.monotonic() - started
            measure(result, slack, agent, posts, expected)
        finally:
            for bot in bots:
                bot.terminate()
            for bot in bots:
                await bot.wait(60)
            await slack.stop()
            await agent.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replies", type=int, default=60)
    parser.add_argument("--chars", type=int, default=1200, help="characters per reply")
    parser.add_argument("--token-rate", type=float, default=40.0, help="agent deltas per second")
    parser.add_argument("--arrival", type=float, default=1.0, help="seconds over which mentions arrive")
    args = parser.parse_args()
    script = script_for(args.chars, args.token_rate)
    expected = script.turns[0].actions[0].text or ""

    async def all_runs() -> list[Result]:
        return [
            await configuration("one replica", 1, True, args, script, expected),
            await configuration("3 x own pacer", 3, False, args, script, expected),
            await configuration("3 x shared", 3, True, args, script, expected),
        ]

    results = asyncio.run(all_runs())
    print(
        f"{args.replies} concurrent replies of {args.chars} chars at {args.token_rate:g} deltas/s in one "
        "workspace; Slack emulator at documented tier limits; Redis store\n"
    )
    print(
        f"{'':<14} {'429s':>6} {'stale p50 s':>12} {'stale p95 s':>12} {'calls/reply':>12} "
        f"{'lost':>5} {'wall s':>7}"
    )
    for r in results:
        print(
            f"{r.name:<14} {r.rate_limited:>6} {r.p(r.staleness, 0.5):>12.2f} "
            f"{r.p(r.staleness, 0.95):>12.2f} "
            f"{r.calls / r.replies:>12.1f} {r.lost:>5} {r.wall:>7.1f}"
        )
    alone, own, shared = results
    print()
    print(
        f"429s: 3 x shared {shared.rate_limited} vs one replica {alone.rate_limited} "
        f"(goal: no more, within one run's noise) vs 3 x own pacer {own.rate_limited}; "
        f"ratios {shared.rate_limited / max(1, alone.rate_limited):.2f}x and "
        f"{own.rate_limited / max(1, alone.rate_limited):.2f}x"
    )
    base = alone.p(alone.staleness, 0.95)
    print(
        f"stale p95, 3 x shared / one replica: {shared.p(shared.staleness, 0.95) / base:.2f}; "
        f"3 x own pacer / one replica: {own.p(own.staleness, 0.95) / base:.2f}"
    )
    noise = max(2, round(alone.rate_limited * 0.05))
    met = shared.rate_limited <= alone.rate_limited + noise and shared.lost == 0 and alone.lost == 0
    if not met:
        print("a target above was missed")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
