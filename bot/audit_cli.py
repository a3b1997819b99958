"""``python -m bot audit``: who ran which tool, when, with what result (and the admins'
changes), read from the store; a table for people, ``--json`` lines for export."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime

from .cli_store import read_audit
from .settings import Settings
from .store import AuditEntry, AuditQuery

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="the audit trail: tool calls, approvals, admin actions")
    audit.add_argument("--user", help="only this Slack user id (who asked, or who acted)")
    audit.add_argument("--tool", help="only this tool")
    audit.add_argument(
        "--kind",
        choices=["tool_call", "approval", "tool_setting", "feedback", "install"],
        help="only this kind of entry (install: a workspace uninstalled the app or revoked its tokens)",
    )
    audit.add_argument(
        "--since", help="from this time: 2026-11-01, 2026-11-01T09:30 (UTC) or 7d, 12h, 30m ago"
    )
    audit.add_argument("--until", help="before this time (same forms)")
    audit.add_argument("--limit", type=int, default=1000, help="at most this many entries (default 1000)")
    audit.add_argument("--json", action="store_true", help="JSON lines, one entry each (for export)")


def parse_time(text: str, *, now: float | None = None) -> float:
    """An ISO date or time (UTC unless it says otherwise), or a span ago (``7d``, ``12h``)."""
    text = text.strip()
    relative = RELATIVE.match(text)
    if relative:
        return (now if now is not None else time.time()) - float(relative.group(1)) * UNIT_S[
            relative.group(2)
        ]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 2026-11-01, 2026-11-01T09:30 or a span ago like 7d, 12h, 30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _row(entry: AuditEntry) -> str:
    when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    approval = entry.approval + (f" by {entry.approver}" if entry.approver and entry.approval else "")
    took = f"{entry.duration_ms} ms" if entry.duration_ms is not None else ""
    return (
        f"{when}  {entry.kind:<12} {entry.user:<12} {entry.channel:<12} {entry.tool:<24} "
        f"{entry.outcome:<10} {approval:<26} {took}"
    ).rstrip()


def run(args: argparse.Namespace, settings: Settings) -> int:
    entries = read_audit(
        settings,
        lambda: AuditQuery(
            user=args.user,
            tool=args.tool,
            kind=args.kind,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            limit=max(1, args.limit),
        ),
    )
    if entries is None:
        return 2
    if args.json:
        for entry in entries:
            print(json.dumps(entry.as_dict(), ensure_ascii=False))
        return 0
    if not entries:
        print("no audit entries match", file=sys.stderr)
        return 0
    print(
        f"{'time (UTC)':<19}  {'kind':<12} {'user':<12} {'channel':<12} {'tool':<24} "
        f"{'outcome':<10} {'approval':<26} duration"
    )
    for entry in entries:
        print(_row(entry))
    if len(entries) == max(1, args.limit):
        print(
            f"(the first {max(1, args.limit)}: narrow with --since/--user/--tool or raise --limit)",
            file=sys.stderr,
        )
    return 0
