"""``python -m bot tools list | schema NAME | call NAME --json '{...}' | sync``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from .plugins import PluginError, PluginToolRunner, Registry, ToolContext, discover
from .settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tools = sub.add_parser("tools", help="list, inspect, call and sync tool plugins")
    verbs = tools.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="name, source, status and a one-line schema of every tool")
    schema = verbs.add_parser("schema", help="the JSON definition the agent sees")
    schema.add_argument("name")
    call = verbs.add_parser("call", help="run a tool as the agent would")
    call.add_argument("name")
    call.add_argument("--json", default="{}", dest="arguments", help="the arguments, as JSON")
    call.add_argument("--user", default="cli", help="Slack user id for the ToolContext")
    call.add_argument("--channel", default="", help="Slack channel id for the ToolContext")
    call.add_argument("--thread", default="", help="Slack thread ts for the ToolContext")
    verbs.add_parser("sync", help="write the function tools onto the agent (keeps its other tools)")


def _load(settings: Settings) -> Registry | None:
    try:
        return discover(settings.tools_dir)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    registry = _load(settings)
    if registry is None:
        return 2
    if args.verb == "list":
        if not registry.tools and not registry.broken:
            print(f"no tools found in {settings.tools_dir} or the {'slack_agent_bot.tools'} entry points")
        for name, spec in sorted(registry.tools.items()):
            flags = [f for f, on in (("confirm", spec.confirm), ("admin_only", spec.admin_only)) if on]
            status = "ok" + (f" [{', '.join(flags)}]" if flags else "")
            print(f"{name:<20} {status:<24} {spec.one_line():<50} {spec.source}")
        for broken in registry.broken:
            print(f"{'(broken)':<20} {'broken':<24} {broken.error:<50} {broken.source}")
        return 1 if registry.broken else 0
    if args.verb == "schema":
        spec = registry.get(args.name)
        if spec is None:
            print(f"error: no tool named {args.name!r}; try `python -m bot tools list`", file=sys.stderr)
            return 2
        print(json.dumps(spec.definition(), indent=2, ensure_ascii=False))
        return 0
    if args.verb == "call":
        return asyncio.run(_call(args, settings, registry))
    return asyncio.run(_sync(settings, registry))


async def _call(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    if registry.get(args.name) is None:
        print(f"error: no tool named {args.name!r}; try `python -m bot tools list`", file=sys.stderr)
        return 2
    slack = None
    token = settings.secret("slack_bot_token")
    if token:
        from slack_sdk.web.async_client import AsyncWebClient

        slack = AsyncWebClient(token=token, base_url=settings.slack_api_url)
    context = ToolContext(
        user_id=args.user,
        user_name=args.user,
        team="",
        channel=args.channel,
        thread_ts=args.thread,
        slack=slack,
        logger=logging.getLogger("bot.tools"),
        is_admin=True,
    )
    runner = PluginToolRunner(registry, output_limit=settings.tool_output_limit)
    output = await runner.call(args.name, args.arguments, context, confirmed=True)
    print(output)
    return 1 if output.startswith("error:") else 0


async def _sync(settings: Settings, registry: Registry) -> int:
    from .agents import AgentServiceError, function_tool, make_backend

    if not settings.has_agent:
        print(
            "error: PROJECT_ENDPOINT and AGENT_ID (or AGENT_NAME) must be set to sync tools", file=sys.stderr
        )
        return 2
    tools = [function_tool(spec.definition()) for spec in registry.tools.values()]
    backend = make_backend(settings)
    try:
        info = await backend.sync_tools(tools)
    except AgentServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await backend.aclose()
    done = f"agent {info.name}: new version {info.version} with" if info.version else f"agent {info.name}:"
    print(f"{done} {len(tools)} function tool(s) written, {len(info.other_tools)} other tool(s) kept")
    if info.version and settings.agent_version and settings.agent_version != info.version:
        print(f"note: AGENT_VERSION={settings.agent_version} still answers; pin {info.version} to use them")
    return 0
