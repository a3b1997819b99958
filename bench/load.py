"""Two hundred replies at once: does every one complete, and what does each cost the bot?

The real bot runs in its own process (as deployed, SQLite store), the Slack emulator with
Slack's documented limits on (chat.update Tier 3: 50 per minute workspace-wide, burst 10;
chat.postMessage about one per second per channel) and the agent emulator streaming each
reply at a realistic token rate. Measured from the bot process itself (/proc):

  CPU s/reply      the bot's user+system CPU seconds over the wave, per reply
  RSS per active   (peak RSS during the wave - RSS before it) / replies in flight
  RSS per idle     how much RSS grows per conversation over a further wave of ``--idle``
                   conversations answered after the big one (whose transient memory the
                   allocator already holds, so the growth is what idle conversations keep)

A small wave first is the baseline measured in the same run: the big wave's CPU per reply
is reported as a ratio against it (near 1: the cost of a reply does not grow with load).

    make bench
    python bench/load.py --replies 200 --baseline 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_stream import _visible, script_for

from bot.devstack.processes import BotProcess, start_bot
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
GOAL_IDLE_KB, GOAL_ACTIVE_KB = 50, 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


@dataclass
class Wave:
    replies: int
    completed: int = 0
    lost: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    rate_limited: int = 0

    @property
    def cpu_per_reply(self) -> float:
        return self.cpu_s / self.replies

    @property
    def active_kb(self) -> float:
        return (self.rss_peak - self.rss_before) / self.replies / 1024


async def wave(
    bot: BotProcess, slack: SlackEmulator, expected: str, replies: int, prefix: str, timeout_s: float
) -> Wave:
    """``replies`` mentions in as many new channels at once; sample the bot until all end."""
    pid = bot.process.pid
    channels = [f"C{prefix}{i:04d}" for i in range(replies)]
    for channel in channels:
        slack.add_channel(channel, channel.lower())
    calls_before = len(slack.calls)
    result = Wave(replies, rss_before=rss_bytes(pid))
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    posts = [(c, slack.user_posts("U0ALICE", c, "<@U0BOT> go")) for c in channels]
    result.rss_peak = result.rss_before
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        result.rss_peak = max(result.rss_peak, rss_bytes(pid))
        result.completed = sum(1 for c, ts in posts if _answered(slack, c, ts, expected))
        if result.completed == replies:
            break
        await asyncio.sleep(0.2)
    result.wall_s = time.monotonic() - started
    result.cpu_s = cpu_seconds(pid) - cpu_before
    await asyncio.sleep(2.0)  # let the last writes settle before calling the rest idle
    result.rss_after = rss_bytes(pid)
    result.lost = replies - result.completed
    result.rate_limited = sum(1 for c in slack.calls[calls_before:] if c.status == 429)
    return result


def _answered(slack: SlackEmulator, channel: str, ts: str, expected: str) -> bool:
    """The whole answer is up and the Stop button gone (the reply has ended)."""
    replies = slack.bot_replies(channel, ts)
    if not replies:
        return False
    reply = replies[0]
    if any(b.get("type") == "actions" for b in reply.blocks or []):
        return False
    return _visible(reply.blocks, reply.text) == expected


async def run(args: argparse.Namespace) -> tuple[Wave, Wave, Wave]:
    script = script_for(args.chars, args.token_rate)
    expected = script.turns[0].actions[0].text or ""
    agent = AgentServiceEmulator(script)
    await agent.start()
    slack = SlackEmulator()
    await slack.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            bot = await start_bot(
                agent, slack, f"sqlite:///{folder}/bot.db", f"{folder}/bot.log", BOT_LOG_LEVEL="WARNING"
            )
            slack.events_url = bot.events_url
            try:
                warm = await wave(bot, slack, expected, 1, "W", args.timeout)  # one-time costs
                if warm.lost:
                    raise RuntimeError("the warm-up reply never completed")
                base = await wave(bot, slack, expected, args.baseline, "B", args.timeout)
                big = await wave(bot, slack, expected, args.replies, "L", args.timeout)
                idle = await wave(bot, slack, expected, args.idle, "I", args.timeout)
            finally:
                bot.terminate()
                await bot.wait(60)
    finally:
        await slack.stop()
        await agent.stop()
    return base, big, idle


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=20, help="replies in the baseline wave")
    parser.add_argument("--idle", type=int, default=100, help="conversations in the idle wave")
    parser.add_argument("--chars", type=int, default=1200, help="characters per reply")
    parser.add_argument("--token-rate", type=float, default=40.0, help="agent deltas per second")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a wave may take")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 when only a memory goal is missed (smoke runs)"
    )
    args = parser.parse_args()
    base, big, idle = asyncio.run(run(args))
    idle_kb = max(0, idle.rss_after - big.rss_after) / idle.replies / 1024
    print(
        f"load: replies of {args.chars} chars at {args.token_rate:g} deltas/s, all mentioned at once; "
        f"Slack emulator at documented limits; {os.cpu_count()} CPUs\n"
    )
    print(
        f"{'wave':<8} {'done':>9} {'text lost':>9} {'wall s':>7} {'429s':>5} {'CPU s/reply':>12} "
        f"{'RSS KB/active':>14}"
    )
    for name, w in (("baseline", base), ("load", big), ("idle", idle)):
        print(
            f"{name:<8} {w.completed:>4}/{w.replies:<4} {w.lost:>9} {w.wall_s:>7.1f} {w.rate_limited:>5} "
            f"{w.cpu_per_reply:>12.4f} {w.active_kb:>14.1f}"
        )
    print()
    ratio = big.cpu_per_reply / base.cpu_per_reply if base.cpu_per_reply else float("nan")
    print(f"CPU per reply, {big.replies} at once / {base.replies} at once: {ratio:.2f} (near 1: flat)")
    print(f"RSS per active conversation: {big.active_kb:.0f} KB (goal <= {GOAL_ACTIVE_KB} KB)")
    print(f"RSS per idle conversation:   {idle_kb:.1f} KB (goal <= {GOAL_IDLE_KB} KB)")
    lost = base.lost + big.lost + idle.lost
    print(f"text lost: {lost} (target 0)")
    goals_met = big.active_kb <= GOAL_ACTIVE_KB and idle_kb <= GOAL_IDLE_KB
    return 0 if lost == 0 and (goals_met or args.report_only) else 1


if __name__ == "__main__":
    raise SystemExit(main())
