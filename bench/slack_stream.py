"""Many replies streaming into one workspace at once, under Slack's documented limits.

Three ways of writing the same 50 concurrent replies, each in one run, against the Slack
emulator with its tier limits on (chat.update: Tier 3, 50 per minute, workspace-wide;
chat.postMessage: about one per second per channel):
  ours        the real bot in its own process, end to end (signed events -> Bolt ->
              orchestrator -> paced writer); ours/new: the same on new Foundry agents;
              ours/native: the same streaming natively (chat.startStream, appendStream
              on its own Tier 4 budget, stopStream; BOT_STREAM_MODE=native)
  per-delta   a naive writer: one chat.update per agent delta
  fixed-1s    a naive writer: one chat.update per reply per second
The agent emulator streams each reply at a realistic token rate. Reported: time from the
event to the first Slack write (p50/p95), staleness (how long a delta waits before a
person can see it, p95), Slack calls per reply, 429s, and replies whose final text never
appeared (text lost). Ratios are against the baselines measured in this same run.

    make bench
    python bench/slack_stream.py --replies 20 --chars 800
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bench.floor import Budget, ideal_staleness, percentile
from bot.agents.classic.client import AgentsClient
from bot.agents.events import TextDelta
from bot.devstack.processes import start_bot
from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator
from bot.emulators.slack import SlackEmulator


@dataclass
class Result:
    name: str
    first_write: list[float] = field(default_factory=list)
    first_word: list[float] = field(default_factory=list)
    staleness: list[float] = field(default_factory=list)
    calls: int = 0
    rate_limited: int = 0
    lost: int = 0
    replies: int = 0
    wall: float = 0.0
    timelines: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # channel -> agent text

    def p(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def script_for(chars: int, token_rate: float) -> Script:
    sentence = "Slack's rate limits shape how fresh a streamed reply can be, so we pace edits. "
    text = (sentence * (chars // len(sentence) + 1))[:chars]
    deltas = max(1, chars // 4)  # about one token (four characters) per delta
    return Script.parse(
        {
            "delay": 1.0 / token_rate,
            "deltas": deltas,
            "turns": [{"repeat": True, "actions": [{"text": text}]}],
        }
    )


def measure(
    result: Result,
    slack: SlackEmulator,
    agent: AgentServiceEmulator,
    posts: list[tuple[str, str, float]],
    expected: str,
) -> None:
    """Read what a person saw from the emulators' timelines."""
    for channel, ts, event_at in posts:
        replies = slack.bot_replies(channel, ts)
        if not replies:
            result.lost += 1
            continue
        result.first_write.append(replies[0].history[0][0] - event_at)
        shown = [(t, len(_visible(blocks, text))) for t, text, blocks in replies[0].history]
        first_word = next((t for t, n in shown if n > 0), None)
        if first_word is not None:  # the first moment the person could read any of the answer
            result.first_word.append(first_word - event_at)
        if _visible(replies[0].blocks, replies[0].text) != expected:
            result.lost += 1
        timeline = _text_timelines(agent).get(channel)
        if timeline is None:
            continue
        result.timelines[channel] = timeline
        for emitted_at, length in timeline:
            seen = next((t for t, n in shown if n >= length and t >= emitted_at), None)
            if seen is not None:
                result.staleness.append(seen - emitted_at)
    result.calls = sum(1 for c in slack.calls if c.method.startswith("chat."))
    result.rate_limited = sum(1 for c in slack.calls if c.status == 429)
    result.replies = len(posts)


def _visible(blocks: list | None, text: str) -> str:
    if blocks:
        parts = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
        if parts:
            return "".join(parts).replace("_Thinking…_", "")
    return text.replace("Thinking…", "")


def _text_timelines(agent: AgentServiceEmulator) -> dict[str, list[tuple[float, int]]]:
    """Channel -> when each piece of the answer left the agent, for either protocol."""
    found: dict[str, list[tuple[float, int]]] = {}
    for run in agent.runs.values():
        slack = (agent.threads.get(run.doc["thread_id"]) or {}).get("metadata", {}).get("slack", "//")
        found[slack.split("/")[1]] = run.text_timeline
    api = agent.responses_api
    for response in api.responses.values():
        conversation = (response.doc.get("conversation") or {}).get("id") or ""
        slack = (api.conversations.get(conversation) or {}).get("metadata", {}).get("slack", "//")
        if response.text_timeline:
            found[slack.split("/")[1]] = response.text_timeline
    return found


async def run_ours(
    args: argparse.Namespace,
    script: Script,
    expected: str,
    backend: str,
    stream_mode: str = "edit",
    *,
    replies: int | None = None,
    name: str = "",
) -> Result:
    """The real bot in its own process (as deployed), the emulators in this one."""
    agent = AgentServiceEmulator(script)
    await agent.start()
    slack_emulator = SlackEmulator()
    await slack_emulator.start()
    with tempfile.TemporaryDirectory() as folder:
        bot = await start_bot(
            agent,
            slack_emulator,
            f"sqlite:///{folder}/bot.db",
            f"{folder}/bot.log",
            backend=backend,
            BOT_LOG_LEVEL="WARNING",
            BOT_STREAM_MODE=stream_mode,
        )
        slack_emulator.events_url = bot.events_url
        # warm-up: a freshly started process pays one-time costs on its first event
        warm = slack_emulator.user_posts("U0ALICE", "C0GENERAL", "<@U0BOT> warm up")
        while not any(  # noqa: ASYNC110 (polling what another process wrote)
            "You said" in m.text or "rate limits" in m.text
            for m in slack_emulator.bot_replies("C0GENERAL", warm)
        ):
            await asyncio.sleep(0.05)
        slack_emulator.calls.clear()
        result = Result(name or ("ours" if backend == "classic" else "ours/new"))
        if stream_mode != "edit" and not name:
            result.name = f"ours/{stream_mode}"
        count = replies or args.replies
        channels = [f"C{i:04d}" for i in range(count)]
        if name == "both":  # every other channel cannot stream: those replies are edits
            refused = set(channels[1::2])
            slack_emulator.refuse_native_streaming("T0EMU", "channel_type_not_supported", channels=refused)
        for channel in channels:
            slack_emulator.add_channel(channel, channel.lower())
        started = time.monotonic()
        posts = []
        for channel in channels:
            posts.append(
                (channel, slack_emulator.user_posts("U0ALICE", channel, "<@U0BOT> go"), time.monotonic())
            )
            await asyncio.sleep(args.arrival / count)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (polling another process)
            (r := slack_emulator.bot_replies(c, ts))
            and _visible(r[0].blocks, r[0].text) == expected
            and not any(b.get("type") == "actions" for b in r[0].blocks or [])
            for c, ts, _ in posts
        ):
            await asyncio.sleep(0.2)
        result.wall = time.monotonic() - started
        measure(result, slack_emulator, agent, posts, expected)
        bot.terminate()
        await bot.wait(60)
    await slack_emulator.stop()
    await agent.stop()
    return result


Writer = Callable[[AsyncWebClient, str, str, AgentsClient, str], Awaitable[None]]


async def naive_per_delta(
    slack: AsyncWebClient, channel: str, ts: str, agents: AgentsClient, thread_id: str
) -> None:
    text = ""
    stream = await agents.stream_run(thread_id, "asst_demo")
    async with stream:
        async for event in stream.events():
            if isinstance(event, TextDelta):
                text += event.text
                await _edit(slack, channel, ts, text)


async def naive_fixed_interval(
    slack: AsyncWebClient, channel: str, ts: str, agents: AgentsClient, thread_id: str
) -> None:
    state = {"text": "", "sent": "", "done": False}

    async def ticker() -> None:
        while not state["done"]:
            await asyncio.sleep(1.0)
            if state["text"] != state["sent"]:
                state["sent"] = state["text"]
                await _edit(slack, channel, ts, state["sent"])

    task = asyncio.create_task(ticker())
    stream = await agents.stream_run(thread_id, "asst_demo")
    async with stream:
        async for event in stream.events():
            if isinstance(event, TextDelta):
                state["text"] += event.text
    state["done"] = True
    await task
    if state["text"] != state["sent"]:
        await _edit(slack, channel, ts, state["text"])


async def _edit(slack: AsyncWebClient, channel: str, ts: str, text: str) -> None:
    """What a naive writer does: one chat.update, and a refused one is simply lost."""
    await _try(
        slack.chat_update(channel=channel, ts=ts, text=text, blocks=[{"type": "markdown", "text": text}])
    )


async def _try(call: Awaitable[object]) -> None:
    try:
        await call
    except SlackApiError:
        pass  # a naive writer loses the edit


async def run_baseline(
    name: str, writer: Writer, args: argparse.Namespace, script: Script, expected: str
) -> Result:
    agent = AgentServiceEmulator(script)
    await agent.start()
    slack_emulator = SlackEmulator()
    await slack_emulator.start()
    slack = AsyncWebClient(token=slack_emulator.bot_token, base_url=slack_emulator.api_url)
    agents = AgentsClient(agent.endpoint, "bench")
    result = Result(name)
    channels = [f"C{i:04d}" for i in range(args.replies)]
    for channel in channels:
        slack_emulator.add_channel(channel, channel.lower())
    posts: list[tuple[str, str, float]] = []

    async def one(channel: str) -> None:
        ts = slack_emulator.user_posts("U0ALICE", channel, "<@U0BOT> go")
        posts.append((channel, ts, time.monotonic()))
        reply = await slack.chat_postMessage(channel=channel, thread_ts=ts, text="Thinking…")
        thread = await agents.create_thread(metadata={"slack": f"T/{channel}/{ts}"})
        await agents.add_message(thread.id, "go")
        await writer(slack, channel, reply["ts"], agents, thread.id)

    started = time.monotonic()
    tasks = []
    for channel in channels:
        tasks.append(asyncio.create_task(one(channel)))
        await asyncio.sleep(args.arrival / args.replies)
    await asyncio.gather(*tasks)
    result.wall = time.monotonic() - started
    measure(result, slack_emulator, agent, posts, expected)
    await agents.aclose()
    await slack_emulator.stop()
    await agent.stop()
    return result


EDIT_BUDGET = Budget(50, 10)  # the emulator's chat.update: Tier 3, as Slack documents it
APPEND_BUDGET = Budget(100, 20)  # chat.appendStream: Tier 4


def floor_of(result: Result, mode: str) -> tuple[list[float], int]:
    """The ideal scheduler's staleness (and calls) for the same agent text and budgets."""
    channels = sorted(result.timelines)
    if mode == "edit":
        groups = [(EDIT_BUDGET, channels)]
    elif mode == "native":
        groups = [(APPEND_BUDGET, channels)]
    else:  # both: the channels that could not stream went through the edits' budget
        groups = [(APPEND_BUDGET, channels[0::2]), (EDIT_BUDGET, channels[1::2])]
    staleness: list[float] = []
    calls = 0
    for budget, chosen in groups:
        found, spent = ideal_staleness([result.timelines[c] for c in chosen], budget)
        staleness += found
        calls += spent + len(chosen)  # and one post (or stream start) per reply
    return staleness, calls


async def floor_runs(
    args: argparse.Namespace, script: Script, expected: str
) -> list[tuple[int, str, Result]]:
    runs = []
    for size in args.floor_sizes:
        for mode, stream_mode in (("edit", "edit"), ("native", "native"), ("both", "native")):
            result = await run_ours(args, script, expected, "classic", stream_mode, replies=size, name=mode)
            runs.append((size, mode, result))
    return runs


def print_floors(runs: list[tuple[int, str, Result]]) -> bool:
    """The table beside the ideal scheduler's floor; True when every p95 is within 1.5x."""
    print()
    print("staleness beside the floor an ideal scheduler reaches under the same budgets (same run):")
    print(
        f"{'replies':>8} {'writer':<7} {'stale p50/p95 s':>16} {'floor p50/p95 s':>16} "
        f"{'p95 / floor':>12} {'calls/reply':>12} {'floor calls/reply':>18} {'lost':>5}"
    )
    within = True
    for size, mode, r in runs:
        floor, floor_calls = floor_of(r, mode)
        ratio = r.p(r.staleness, 0.95) / max(percentile(floor, 0.95), 0.05)  # 50 ms: a call's own time
        within = within and ratio <= 1.5 and r.lost == 0
        print(
            f"{size:>8} {mode:<7} {r.p(r.staleness, 0.5):>7.2f} / {r.p(r.staleness, 0.95):<6.2f} "
            f"{percentile(floor, 0.5):>7.2f} / {percentile(floor, 0.95):<6.2f} {ratio:>12.2f} "
            f"{r.calls / r.replies:>12.1f} {floor_calls / max(1, r.replies):>18.1f} {r.lost:>5}"
        )
    print("  edit: chat.update (Tier 3); native: chat.appendStream (Tier 4); both: half the channels")
    print("  cannot stream (channel_type_not_supported), so both budgets are spent at once")
    verdict = "met" if within else "missed"
    print(f"goal (not yet a target): p95 within 1.5x of the floor (50 ms at least): {verdict}")
    return within


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replies", type=int, default=50)
    parser.add_argument("--chars", type=int, default=1200, help="characters per reply")
    parser.add_argument("--token-rate", type=float, default=40.0, help="agent deltas per second")
    parser.add_argument("--arrival", type=float, default=1.0, help="seconds over which events arrive")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 when only a speed target is missed (smoke runs)"
    )
    parser.add_argument(
        "--floor-sizes",
        type=lambda v: [int(n) for n in v.split(",") if n.strip()],
        default=[30, 200],
        help="concurrent replies for the comparison with the ideal scheduler (comma-separated)",
    )
    args = parser.parse_args()
    script = script_for(args.chars, args.token_rate)
    expected = script.turns[0].actions[0].text or ""

    async def all_runs() -> list[Result]:
        ours = await run_ours(args, script, expected, "classic")
        ours_new = await run_ours(args, script, expected, "foundry")
        native = await run_ours(args, script, expected, "classic", "native")
        per_delta = await run_baseline("per-delta", naive_per_delta, args, script, expected)
        fixed = await run_baseline("fixed-1s", naive_fixed_interval, args, script, expected)
        return [ours, ours_new, native, per_delta, fixed]

    results = asyncio.run(all_runs())
    print(
        f"{args.replies} concurrent replies of {args.chars} chars at {args.token_rate:g} deltas/s; "
        "Slack emulator at documented tier limits\n"
    )
    print(
        f"{'':<12} {'first write p50/p95 ms':>23} {'first word p50/p95 s':>21} {'stale p95 s':>12} "
        f"{'calls/reply':>12} "
        f"{'429s':>6} {'text lost':>10} {'wall s':>7}"
    )
    for r in results:
        print(
            f"{r.name:<12} {r.p(r.first_write, 0.5) * 1000:>10.0f} / "
            f"{r.p(r.first_write, 0.95) * 1000:<10.0f} "
            f"{r.p(r.first_word, 0.5):>10.2f} / {r.p(r.first_word, 0.95):<8.2f} "
            f"{r.p(r.staleness, 0.95):>12.2f} {r.calls / r.replies:>12.1f} {r.rate_limited:>6} "
            f"{r.lost:>10} {r.wall:>7.1f}"
        )
    ours, ours_new, native, per_delta, fixed = results
    print(
        "  ours: classic agents (threads/runs); ours/new: new Foundry agents (Responses API); "
        "ours/native: classic agents, streamed natively"
    )
    print()
    print(
        f"calls per reply, ours / per-delta: {ours.calls / per_delta.calls:.3f} (target <= 0.1); "
        f"new agents: {ours_new.calls / per_delta.calls:.3f}"
    )
    print(f"calls per reply, ours / fixed-1s:  {ours.calls / fixed.calls:.3f}")
    print(
        f"native vs edits: stale p95 {native.p(native.staleness, 0.95):.2f} s vs "
        f"{ours.p(ours.staleness, 0.95):.2f} s "
        f"({native.p(native.staleness, 0.95) / max(ours.p(ours.staleness, 0.95), 1e-9):.2f}x); "
        f"calls per reply {native.calls / native.replies:.1f} vs {ours.calls / ours.replies:.1f}"
    )
    print(
        f"first write p95: {ours.p(ours.first_write, 0.95) * 1000:.0f} ms, new agents "
        f"{ours_new.p(ours_new.first_write, 0.95) * 1000:.0f} ms (target <= 150 ms)"
    )
    print(
        f"first word p95 (the answer's first visible text): ours {ours.p(ours.first_word, 0.95):.2f} s, "
        f"new agents {ours_new.p(ours_new.first_word, 0.95):.2f} s; per-delta "
        f"{per_delta.p(per_delta.first_word, 0.95):.2f} s, fixed-1s {fixed.p(fixed.first_word, 0.95):.2f} s"
    )
    print(
        f"text lost: ours {ours.lost}, new agents {ours_new.lost}, native {native.lost}, "
        f"per-delta {per_delta.lost}, fixed-1s {fixed.lost} (target: ours 0)"
    )
    targets = (
        max(ours.calls, ours_new.calls) / per_delta.calls <= 0.1
        and max(ours.p(ours.first_write, 0.95), ours_new.p(ours_new.first_write, 0.95)) <= 0.150
    )
    if not targets:
        print("a target above was missed")
    lost = ours.lost + ours_new.lost + native.lost
    floors = asyncio.run(floor_runs(args, script, expected)) if args.floor_sizes else []
    if floors:  # a goal still being worked towards: reported, not (yet) a target that fails the run
        print_floors(floors)
    lost += sum(r.lost for _, _, r in floors)
    return 0 if lost == 0 and (targets or args.report_only) else 1


if __name__ == "__main__":
    raise SystemExit(main())
