"""Command line: ``python -m bot run | chat | check | playground | tools | audit`` (also the
``slack-agent-bot`` script)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import __version__, audit_cli, feedback_cli, logs, retention_cli, tools_cli
from .check import SLACK_HELP, check
from .settings import Settings, SettingsError, load_settings


def _missing_slack(settings: Settings) -> list[str]:
    missing = [] if settings.secret("slack_bot_token") or settings.multi_workspace else ["SLACK_BOT_TOKEN"]
    if not settings.slack_app_token and not settings.slack_signing_secret:
        missing.append("SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)")
    return missing


def _run(settings: Settings, mode: str | None, host: str | None, port: int) -> int:
    missing = _missing_slack(settings)
    if missing and mode is None:
        print(
            f"Missing for Slack: {', '.join(missing)}.\nTo get them: {SLACK_HELP}.\n"
            "Until then, the playground shows the bot on an emulated Slack workspace.\n",
            file=sys.stderr,
        )
        return _playground(settings, host or "127.0.0.1", port, None)
    if missing:
        print(f"error: {', '.join(missing)} not set. To get them: {SLACK_HELP}.", file=sys.stderr)
        return 2
    if not settings.has_agent and not settings.routes:
        print(
            "error: PROJECT_ENDPOINT and AGENT_ID (or AGENT_NAME) must be set to run the bot in Slack "
            "(python -m bot check explains what is missing)",
            file=sys.stderr,
        )
        return 2
    from slack_sdk.errors import SlackApiError

    from .runtime import serve_http, serve_socket

    mode = mode or ("socket" if settings.slack_app_token else "http")
    try:
        if mode == "socket":
            asyncio.run(serve_socket(settings, host or "0.0.0.0", port))
        else:
            asyncio.run(serve_http(settings, host or "0.0.0.0", port))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SlackApiError as exc:
        print(
            f"error: Slack refused the bot token ({exc.response.get('error')}); "
            "python -m bot check explains how to fix it",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _playground(
    settings: Settings, host: str, port: int, script: str | None, backend: str = "classic"
) -> int:
    from .emulators.agent_script import ScriptError
    from .playground import serve
    from .runtime import _until_signal

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(settings, host=host, port=port, script_path=script, stop=stop, backend=backend)
        )
        waiter = asyncio.create_task(_until_signal())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await task
        waiter.cancel()

    try:
        asyncio.run(run())
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc} (try --port)", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slack-agent-bot", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the bot (no Slack settings: the agent in the terminal)")
    run.add_argument("--mode", choices=["socket", "http"], help="default: socket with SLACK_APP_TOKEN")
    run.add_argument("--host", help="the address to listen on (HTTP mode 0.0.0.0, playground 127.0.0.1)")
    run.add_argument("--port", type=int, default=3000, help="HTTP mode: the port (POST /slack/events)")
    sub.add_parser("chat", help="talk to the agent in the terminal")
    play = sub.add_parser("playground", help="the bot on an emulated Slack workspace, in your browser")
    play.add_argument("--host", default="127.0.0.1")
    play.add_argument("--port", type=int, default=3000)
    play.add_argument("--script", help="an agent script (JSON or YAML) for the emulated agent")
    play.add_argument(
        "--backend",
        choices=["classic", "foundry"],
        default="classic",
        help="the emulated agent's protocol: classic threads/runs or new agents (Responses API)",
    )
    sub.add_parser("check", help="validate settings, reach Slack and the agent service")
    tools_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    retention_cli.add_parser(sub)
    feedback_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet = args.command in ("chat", "playground") or (
        args.command in (None, "run") and bool(_missing_slack(settings)) and not args.__dict__.get("mode")
    )
    level = (
        "CRITICAL"
        if args.command in ("tools", "audit", "retention", "feedback")
        else "WARNING"
        if quiet
        else settings.log_level
    )
    logs.configure(level, settings.log_format == "json")
    if settings.audit_log and args.command in (None, "run"):
        try:
            logs.configure_audit(settings.audit_log)
        except OSError as exc:
            print(f"error: BOT_AUDIT_LOG {settings.audit_log}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "tools":
            return tools_cli.run(args, settings)
        if args.command == "audit":
            return audit_cli.run(args, settings)
        if args.command == "retention":
            return retention_cli.run(args, settings)
        if args.command == "feedback":
            return feedback_cli.run(args, settings)
        if args.command == "check":
            return asyncio.run(check(settings))
        if args.command == "playground":
            return _playground(settings, args.host, args.port, args.script, args.backend)
        if args.command == "chat":
            from .chat import chat

            return asyncio.run(chat(settings))
        return _run(
            settings,
            args.__dict__.get("mode"),
            args.__dict__.get("host"),
            args.__dict__.get("port", 3000),
        )
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
