"""``python -m bot feedback``: what people thought of the answers (thumbs up / down), per
agent, per day, and the worst-rated answers with links, from the audit trail."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime

from .audit_cli import parse_time
from .cli_store import read_audit
from .settings import Settings
from .store import AuditEntry, AuditQuery

WORST = 10


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    feedback = sub.add_parser("feedback", help="thumbs up / down on answers: per agent, per day, the worst")
    feedback.add_argument("--since", default="30d", help="from this time (default 30d; or 2026-11-01)")


def latest_ratings(entries: list[AuditEntry]) -> dict[tuple[str, str], AuditEntry]:
    """One rating per person per answer: their last click."""
    found: dict[tuple[str, str], AuditEntry] = {}
    for entry in sorted(entries, key=lambda e: e.at):
        found[(entry.ids.get("turn", ""), entry.user)] = entry
    return found


def link(entry: AuditEntry) -> str:
    ts = entry.ids.get("message_ts", "")
    if not ts:
        return f"(channel {entry.channel})"
    url = f"https://slack.com/archives/{entry.channel}/p{ts.replace('.', '')}"
    return url + (f"?thread_ts={entry.thread_ts}&cid={entry.channel}" if entry.thread_ts else "")


def summary(entries: list[AuditEntry], agent_label: str) -> list[str]:
    ratings = latest_ratings(entries)
    if not ratings:
        return ["no feedback yet"]
    lines = [f"{len(ratings)} rating(s) on {len({k[0] for k in ratings})} answer(s)", "", "per agent:"]
    per_agent: dict[str, Counter[str]] = defaultdict(Counter)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    per_answer: dict[str, Counter[str]] = defaultdict(Counter)
    answers: dict[str, AuditEntry] = {}
    for (turn, _), entry in ratings.items():
        agent = agent_label if entry.tool == "default" else entry.tool
        per_agent[agent][entry.outcome] += 1
        per_day[datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d")][entry.outcome] += 1
        per_answer[turn][entry.outcome] += 1
        answers[turn] = entry
    for agent, counts in sorted(per_agent.items()):
        total = counts["good"] + counts["bad"]
        share = counts["good"] / total
        lines.append(f"  {agent:<32} good {counts['good']:>4}  bad {counts['bad']:>4}  ({share:.0%} good)")
    lines += ["", "per day (UTC):"]
    for day, counts in sorted(per_day.items()):
        lines.append(f"  {day}  good {counts['good']:>4}  bad {counts['bad']:>4}")
    worst = sorted(
        (t for t in per_answer if per_answer[t]["bad"]),
        key=lambda t: (-per_answer[t]["bad"], per_answer[t]["good"]),
    )
    lines += ["", "worst-rated answers:" if worst else "no answer was rated bad"]
    for turn in worst[:WORST]:
        entry, counts = answers[turn], per_answer[turn]
        agent = agent_label if entry.tool == "default" else entry.tool
        run = entry.ids.get("run") or "?"
        lines.append(f"  bad {counts['bad']} good {counts['good']}  {agent}  run {run}  {link(entry)}")
    return lines


def run(args: argparse.Namespace, settings: Settings) -> int:
    asked = AuditQuery(kind="feedback", limit=100_000)
    entries = read_audit(settings, lambda: replace(asked, since=parse_time(args.since)))
    if entries is None:
        return 2
    since = parse_time(args.since)
    day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M")
    print(f"feedback since {day} UTC")
    for line in summary(entries, settings.agent_ref or "default agent"):
        print(line)
    return 0
