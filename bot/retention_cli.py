"""``python -m bot retention [--dry-run]``: what the agent service keeps for the bot past
its retention (agent conversations, uploaded files), listed or deleted now. The running bot
does the same every hour."""

from __future__ import annotations

import argparse
import sys

from .cli_store import run_on_store
from .settings import Settings
from .store import open_store
from .turns.retention import RetentionReport, due, enforce

SHOWN = 20  # listed one by one; the rest are counted


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    retention = sub.add_parser(
        "retention", help="delete agent conversations and files past BOT_RETENTION_DAYS (or --dry-run)"
    )
    retention.add_argument("--dry-run", action="store_true", help="list what is due; delete nothing")
    retention.add_argument("--limit", type=int, default=500, help="at most this many of each (default 500)")


async def _run(settings: Settings, dry_run: bool, limit: int) -> RetentionReport:
    store = await open_store(settings.store_url, retention_s=settings.retention_days * 86400)
    try:
        if dry_run:
            return await due(store, limit=limit)
        from .agents import make_backend
        from .agents.routing import AgentRouter, load_routes

        router = AgentRouter(
            settings, load_routes(settings.routes) if settings.routes else None, make_backend
        )
        try:
            return await enforce(store, router, limit=limit)
        finally:
            await router.aclose()
    finally:
        await store.close()


def _print(report: RetentionReport, settings: Settings) -> None:
    print(
        f"past the retention (BOT_RETENTION_DAYS={settings.retention_days:g}): "
        f"{len(report.conversations)} agent conversation(s), {len(report.files)} uploaded file(s)"
    )
    for key, thread_id in report.conversations[:SHOWN]:
        print(f"  conversation {thread_id}  (Slack thread {key.as_str()})")
    for file in report.files[:SHOWN]:
        print(f"  file {file.agent_file_id}  (Slack file {file.slack_file_id} in {file.key.as_str()})")
    hidden = max(0, len(report.conversations) - SHOWN) + max(0, len(report.files) - SHOWN)
    if hidden:
        print(f"  ... and {hidden} more")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.dry_run and not settings.has_agent and not settings.routes:
        print(
            "error: deleting needs the agent settings (PROJECT_ENDPOINT and AGENT_ID or AGENT_NAME); "
            "--dry-run needs only the store",
            file=sys.stderr,
        )
        return 2
    report = run_on_store(settings, _run(settings, args.dry_run, max(1, args.limit)))
    if report is None:
        return 2
    _print(report, settings)
    if args.dry_run:
        print("dry run: nothing deleted (without --dry-run, these are deleted now)")
        return 0
    print(
        f"deleted {report.deleted_conversations} conversation(s) and {report.deleted_files} file(s)"
        + (f"; {report.failed} failed (tried again at the bot's next clean-up)" if report.failed else "")
    )
    return 1 if report.failed else 0
