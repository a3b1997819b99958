"""What the pipeline needs from the layers that serve it: the tools, and someone to ask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..agents.events import ToolCall
from ..plugins.context import ToolContext
from ..plugins.runner import Verdict


class ToolRunner(Protocol):
    """Answers the agent's function calls (the plugin registry implements this)."""

    async def definitions(self, context: ToolContext) -> list[dict[str, Any]]: ...

    async def run(
        self, calls: Sequence[ToolCall], context: ToolContext, ids: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]: ...


class Approver(Protocol):
    """Asks a person to approve a tool call the agent's own tools want to make (Slack buttons)."""

    async def ask(self, context: ToolContext, title: str, arguments: dict[str, Any]) -> bool | Verdict: ...
