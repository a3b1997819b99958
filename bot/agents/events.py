"""Backend-neutral agent events: the only agent vocabulary the Slack side ever sees.

A classic threads/runs backend and a Responses API backend both translate their wire
events into these, so the turn orchestrator and the Slack writer never learn which
service answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AgentEvent",
    "Annotation",
    "ApprovalRequest",
    "ApprovalsRequested",
    "Cancelled",
    "Completed",
    "Expired",
    "Failed",
    "Incomplete",
    "MessageCompleted",
    "RunStatusChanged",
    "RunStepChanged",
    "StreamError",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallsRequested",
    "UnknownEvent",
    "Usage",
    "is_terminal",
]

AnnotationKind = Literal["url_citation", "file_citation", "file_path", "other"]


@dataclass(frozen=True, slots=True)
class Annotation:
    """A citation or file reference; ``marker`` is the raw text it stands for (【3:0†source】)."""

    kind: AnnotationKind
    marker: str = ""
    start_index: int | None = None
    end_index: int | None = None
    url: str | None = None
    title: str | None = None
    file_id: str | None = None
    quote: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the agent asks us to run. ``arguments`` is the JSON text as sent."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    annotations: tuple[Annotation, ...] = ()
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class FileProduced:
    """A file the agent made (a code interpreter chart or output file), to fetch with the
    backend's ``file_content``; ``container_id`` for new agents' container files."""

    file_id: str
    name: str
    image: bool = False
    container_id: str | None = None


@dataclass(frozen=True, slots=True)
class MessageCompleted:
    """The agent's finished message: the authoritative full text for a final render."""

    message_id: str
    text: str
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call as it streams in; ``arguments`` is everything so far."""

    call_id: str
    name: str
    fragment: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallsRequested:
    """The run waits for these function calls' outputs."""

    run_id: str
    thread_id: str
    tool_calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An MCP tool call the agent wants to make once a person approves it."""

    id: str
    server_label: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class ApprovalsRequested:
    """The run waits for a person to approve or deny these MCP tool calls."""

    run_id: str
    thread_id: str
    approvals: tuple[ApprovalRequest, ...]


@dataclass(frozen=True, slots=True)
class RunStatusChanged:
    run_id: str
    thread_id: str
    status: str


@dataclass(frozen=True, slots=True)
class RunStepChanged:
    """A run step was created or moved on (``step_type``: message_creation or tool_calls)."""

    step_id: str
    run_id: str
    status: str
    step_type: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Completed:
    run_id: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    run_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    run_id: str


@dataclass(frozen=True, slots=True)
class Expired:
    run_id: str


@dataclass(frozen=True, slots=True)
class Incomplete:
    run_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StreamError:
    """The service reported an error inside the stream (not tied to a run state)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event this version does not know; kept so nothing is silently lost."""

    name: str
    data: Any = field(default=None)


AgentEvent = (
    TextDelta
    | FileProduced
    | MessageCompleted
    | ToolCallDelta
    | ToolCallsRequested
    | ApprovalsRequested
    | RunStatusChanged
    | RunStepChanged
    | Completed
    | Failed
    | Cancelled
    | Expired
    | Incomplete
    | StreamError
    | UnknownEvent
)

_TERMINAL = (Completed, Failed, Cancelled, Expired, Incomplete)


def is_terminal(event: AgentEvent) -> bool:
    """True for the events that end a run (ToolCallsRequested and ApprovalsRequested only pause it)."""
    return isinstance(event, _TERMINAL)
