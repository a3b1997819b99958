"""Command line: ``python -m bot run | chat | check`` (also the ``slack-agent-bot`` script)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import __version__, logs
from .settings import Settings, SettingsError, load_settings


async def _check(settings: Settings) -> int:
    """Say what works and, for what does not, how to fix it."""
    from .agents.azure import AgentsClient
    from .agents.errors import AgentServiceError, AuthenticationError, NotFoundError

    ok = True
    if not settings.project_endpoint:
        print(
            "x PROJECT_ENDPOINT is not set: use your Foundry project's endpoint, "
            "https://<resource>.services.ai.azure.com/api/projects/<project>"
        )
        return 1
    if not settings.agent_id:
        print("x AGENT_ID is not set: the id of the agent to talk to (asst_...)")
        return 1
    try:
        client = AgentsClient.from_settings(settings)
    except ValueError as exc:
        print(f"x {exc}")
        return 1
    async with client:
        try:
            agent = await client.get_agent(settings.agent_id)
            print(
                f"ok agent {agent.id} ({agent.name or 'unnamed'}, model {agent.model}) "
                f"with {len(agent.tools)} tool(s)"
            )
        except AuthenticationError as exc:
            ok = False
            print(
                f"x authentication failed: {exc}\n"
                "  fix: run `az login` (DefaultAzureCredential) or "
                "set AGENTS_ACCESS_TOKEN; the identity needs the Azure AI User role on the project"
            )
        except NotFoundError as exc:
            ok = False
            print(
                f"x not found: {exc}\n  fix: check AGENT_ID and that PROJECT_ENDPOINT ends "
                "with /api/projects/<project>"
            )
        except AgentServiceError as exc:
            ok = False
            print(f"x the agent service failed: {exc}")
    if settings.has_slack:
        print("! Slack settings are present, but this build has no Slack surface yet")
    return 0 if ok else 1


def _run(settings: Settings) -> int:
    if settings.has_slack:
        print(
            "This build does not include the Slack surface yet, so SLACK_BOT_TOKEN cannot be "
            "used. Unset the Slack settings to try the agent in the terminal chat.",
            file=sys.stderr,
        )
        return 2
    from .chat import chat

    return asyncio.run(chat(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slack-agent-bot", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (no settings: a local demo on emulated services)")
    sub.add_parser("chat", help="talk to the agent in the terminal")
    sub.add_parser("check", help="validate settings and reach the agent service")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(
        "WARNING" if args.command in (None, "run", "chat") else settings.log_level,
        settings.log_format == "json",
    )
    try:
        if args.command == "check":
            return asyncio.run(_check(settings))
        if args.command == "chat":
            from .chat import chat

            return asyncio.run(chat(settings))
        return _run(settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
