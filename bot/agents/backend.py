"""The one seam between the turn pipeline and an agent service.

``AgentBackend`` speaks neutral types only: conversation ids, plain text, the events of
``events.py``, ``ToolOutput`` and ``RunSnapshot``. Each backend (``classic/``: threads and
runs; ``foundry/``: new agents over the Responses API) maps its own wire format into
these and keeps that format to itself, so the Slack side and the pipeline never learn
which service answered, and a backend never has to fake another's wire shapes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, Self, runtime_checkable

from .events import (
    AgentEvent,
    Annotation,
    ApprovalRequest,
    Cancelled,
    Completed,
    Expired,
    Failed,
    FileProduced,
    Incomplete,
    ToolCall,
)
from .uploads import Upload

__all__ = [
    "AgentBackend",
    "AgentInfo",
    "ApprovalDecision",
    "FunctionTool",
    "RunSnapshot",
    "RunStatus",
    "RunStream",
    "ToolOutput",
    "TurnContext",
]


class RunStatus(StrEnum):
    """Where a run (classic) or a response (new agents) stands, in one vocabulary."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.EXPIRED, RunStatus.INCOMPLETE}
)


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the bot can run for the agent (from the plugin registry)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file given to the agent with a message: an image it looks at, or a file its tools
    read (``tool``: ``code_interpreter`` for data, ``file_search`` for documents)."""

    file_id: str
    name: str
    image: bool = False
    tool: str = "code_interpreter"


@dataclass(frozen=True, slots=True)
class ToolOutput:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A person's answer to an ``ApprovalRequest`` (an MCP tool call the agent wants to make)."""

    request_id: str
    approve: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Who asks, from where: given to the agent with every turn (never as the user's words)."""

    user_id: str
    user_name: str = ""
    timezone: str | None = None
    channel_id: str = ""
    channel_name: str = ""
    is_direct_message: bool = False
    extra: tuple[str, ...] = ()

    def as_instructions(self) -> str:
        who = (
            f"{self.user_name} (Slack user {self.user_id})"
            if self.user_name
            else f"Slack user {self.user_id}"
        )
        lines = [f"You are answering {who} in Slack."]
        if self.timezone:
            lines.append(f"Their time zone is {self.timezone}.")
        if self.is_direct_message:
            lines.append("This is a direct message with the bot.")
        elif self.channel_id:
            place = f"#{self.channel_name} ({self.channel_id})" if self.channel_name else self.channel_id
            lines.append(f"The conversation is in channel {place}.")
        lines.append(f"Current time (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}.")
        lines.extend(self.extra)
        return " ".join(lines)


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the answering agent is: shown by ``check`` and compared with the tool registry."""

    backend: str
    name: str
    version: str | None = None
    model: str | None = None
    function_tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> parameters
    other_tools: tuple[str, ...] = ()  # the agent's own tools (web search, code interpreter, MCP...)
    tools_per_run: bool = True  # False: tools live only in the agent's version (new agents)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run as polled: enough to finish a reply after a dropped stream or a crash."""

    run_id: str
    conversation_id: str
    status: RunStatus
    text: str = ""
    annotations: tuple[Annotation, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # pending function calls (status REQUIRES_ACTION)
    approvals: tuple[ApprovalRequest, ...] = ()  # pending MCP approvals (status REQUIRES_ACTION)
    error_code: str | None = None
    error_message: str | None = None
    incomplete_reason: str | None = None
    expires_at: float | None = None  # epoch seconds; after it the service ends the run

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def waiting(self) -> bool:
        return self.status is RunStatus.REQUIRES_ACTION

    def final_event(self) -> AgentEvent | None:
        """The neutral event a terminal status stands for (what the stream would have said)."""
        match self.status:
            case RunStatus.COMPLETED:
                return Completed(self.run_id)
            case RunStatus.FAILED:
                return Failed(
                    self.run_id,
                    self.error_code or "server_error",
                    self.error_message or "The run failed without a message.",
                )
            case RunStatus.CANCELLED:
                return Cancelled(self.run_id)
            case RunStatus.EXPIRED:
                return Expired(self.run_id)
            case RunStatus.INCOMPLETE:
                return Incomplete(self.run_id, self.incomplete_reason or "unknown")
        return None


@runtime_checkable
class RunStream(Protocol):
    """One streamed run (or one leg of it): neutral events until the run ends or waits."""

    conversation_id: str
    run_id: str | None
    expires_at: float | None

    def events(self) -> AsyncIterator[AgentEvent]: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class AgentBackend(Protocol):
    """An agent service, as the turn pipeline needs it."""

    kind: str  # "classic" or "foundry": for logs and ``check``, never for branching

    async def describe(self) -> AgentInfo:
        """The answering agent (and version), with its tools."""
        ...

    async def create_conversation(
        self, *, context: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> str:
        """A new conversation (classic: a thread), seeded with earlier Slack messages."""
        ...

    async def add_message(self, conversation_id: str, text: str, files: Sequence[InputFile] = ()) -> None:
        """The person's message (with the files uploaded for it); it is answered by the next
        ``start_run``."""
        ...

    async def upload_file(self, upload: Upload) -> str:
        """Give the agent service a file for a message; its file id."""
        ...

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (an id already gone is not an error)."""
        ...

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation and what it holds, at the end of its retention (an id already
        gone is not an error)."""
        ...

    def file_content(self, file: FileProduced) -> AsyncIterator[bytes]:
        """The bytes of a file the agent made, as they arrive."""
        ...

    async def start_run(
        self,
        conversation_id: str,
        *,
        context: TurnContext | None = None,
        tools: Sequence[FunctionTool] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> RunStream:
        """Answer the conversation. ``tools`` are offered per run where the service allows it;
        where it does not (new agents), they must already be in the agent's version."""
        ...

    async def submit_tool_outputs(
        self, conversation_id: str, run_id: str, outputs: Sequence[ToolOutput]
    ) -> RunStream:
        """Answer the function calls a run waits for, and stream what follows."""
        ...

    async def answer_approvals(
        self, conversation_id: str, run_id: str, decisions: Sequence[ApprovalDecision]
    ) -> RunStream:
        """Answer the MCP approval requests a run waits for, and stream what follows."""
        ...

    async def cancel(self, conversation_id: str, run_id: str) -> None:
        """Stop a run on the service (best effort: an ended run is left as it is)."""
        ...

    async def snapshot(self, conversation_id: str, run_id: str) -> RunSnapshot:
        """The run as the service has it now."""
        ...

    async def abandon(
        self, conversation_id: str, run_id: str | None, reason: str, *, drop_held: bool = True
    ) -> None:
        """Leave the conversation able to take the next message: a run left waiting for tool
        outputs or approvals (Stop, a tool failure, a crash) is answered or ended, and any
        message held for a run that never started is dropped. ``drop_held=False``: the turn
        abandoned was another process's (recovery); what this process holds for the
        conversation belongs to a live turn here and stays."""
        ...

    async def sync_tools(self, tools: Sequence[FunctionTool]) -> AgentInfo:
        """Make the agent's function tools these (new agents: a new agent version)."""
        ...

    async def aclose(self) -> None: ...
