"""Comparing the tools the bot can run with the tools the answering agent has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .backend import AgentInfo, FunctionTool


def function_tool(definition: Mapping[str, Any]) -> FunctionTool:
    """A registry definition (``{"type": "function", "function": {...}}``) as a FunctionTool."""
    function = definition.get("function") or definition
    return FunctionTool(
        name=str(function.get("name")),
        description=str(function.get("description") or ""),
        parameters=function.get("parameters") or {"type": "object", "properties": {}},
    )


def tool_drift(info: AgentInfo, tools: Sequence[FunctionTool]) -> list[str]:
    """The bot's tools the agent lacks or has in another shape, e.g. ``["clock (missing)"]``.

    Only matters where tools live in the agent's version (new agents): a classic run is
    given the bot's tools with every run."""
    if info.tools_per_run:
        return []
    problems = []
    for tool in tools:
        have = info.function_tools.get(tool.name)
        if have is None:
            problems.append(f"{tool.name} (missing)")
        elif dict(have) != dict(tool.parameters):
            problems.append(f"{tool.name} (parameters differ)")
    return problems
