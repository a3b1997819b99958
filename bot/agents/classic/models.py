"""Typed views of the service's JSON objects.

Lenient by design (``extra="allow"``): the service adds fields over time and a new field
must never break a turn. Field names are the wire's own (``assistant_id``), with the
SDK's names (``agent_id``) as properties for people who know the SDK.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..events import Annotation, ToolCall


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


class Agent(WireModel):
    id: str
    object: str = "assistant"
    name: str | None = None
    model: str | None = None
    instructions: str | None = None
    description: str | None = None
    tools: list[dict[str, Any]] = []
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    created_at: int | None = None

    def non_function_tools(self) -> list[dict[str, Any]]:
        """The agent's own built-in tools, to keep when a run's ``tools`` replaces the set."""
        return [t for t in self.tools if t.get("type") != "function"]


class AgentThread(WireModel):
    id: str
    object: str = "thread"
    created_at: int | None = None
    metadata: dict[str, str] | None = None


def content_text(content: list[dict[str, Any]] | None) -> str:
    """Join the text parts of a message (or message delta) content list."""
    parts: list[str] = []
    for part in content or ():
        if part.get("type") == "text":
            text = part.get("text") or {}
            value = text.get("value")
            if isinstance(value, str):
                parts.append(value)
    return "".join(parts)


def content_annotations(content: list[dict[str, Any]] | None) -> tuple[Annotation, ...]:
    found: list[Annotation] = []
    for part in content or ():
        if part.get("type") != "text":
            continue
        for raw in (part.get("text") or {}).get("annotations") or ():
            found.append(parse_annotation(raw))
    return tuple(found)


def parse_annotation(raw: dict[str, Any]) -> Annotation:
    kind = raw.get("type")
    common = {
        "marker": raw.get("text") or "",
        "start_index": raw.get("start_index"),
        "end_index": raw.get("end_index"),
    }
    if kind == "url_citation":
        cite = raw.get("url_citation") or {}
        return Annotation("url_citation", url=cite.get("url"), title=cite.get("title"), **common)
    if kind == "file_citation":
        cite = raw.get("file_citation") or {}
        return Annotation("file_citation", file_id=cite.get("file_id"), quote=cite.get("quote"), **common)
    if kind == "file_path":
        return Annotation("file_path", file_id=(raw.get("file_path") or {}).get("file_id"), **common)
    return Annotation("other", **common)


class ThreadMessage(WireModel):
    id: str
    object: str = "thread.message"
    thread_id: str | None = None
    run_id: str | None = None
    assistant_id: str | None = None
    role: str = "assistant"
    status: str | None = None
    content: list[dict[str, Any]] = []
    created_at: int | None = None
    metadata: dict[str, str] | None = None

    @property
    def text(self) -> str:
        return content_text(self.content)

    @property
    def annotations(self) -> tuple[Annotation, ...]:
        return content_annotations(self.content)


def function_calls(tool_calls: list[dict[str, Any]] | None) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for call in tool_calls or ():
        if call.get("type", "function") != "function":
            continue
        function = call.get("function") or {}
        calls.append(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=function.get("arguments") or "{}",
            )
        )
    return tuple(calls)


class ThreadRun(WireModel):
    id: str
    object: str = "thread.run"
    thread_id: str
    assistant_id: str | None = None
    status: str
    required_action: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = []
    metadata: dict[str, str] | None = None
    created_at: int | None = None
    expires_at: int | None = None

    @property
    def agent_id(self) -> str | None:
        return self.assistant_id

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The function calls a ``requires_action`` run waits for."""
        action = self.required_action or {}
        submit = action.get("submit_tool_outputs") or {}
        return function_calls(submit.get("tool_calls"))


class RunStep(WireModel):
    id: str
    object: str = "thread.run.step"
    run_id: str | None = None
    thread_id: str | None = None
    type: str | None = None
    status: str | None = None
    step_details: dict[str, Any] = {}
    last_error: dict[str, Any] | None = None


class MessageDeltaChunk(WireModel):
    id: str
    object: str = "thread.message.delta"
    delta: dict[str, Any] = {}

    @property
    def text(self) -> str:
        return content_text(self.delta.get("content"))


class RunStepDeltaChunk(WireModel):
    id: str
    object: str = "thread.run.step.delta"
    delta: dict[str, Any] = {}


class MessagePage(WireModel):
    object: str = "list"
    data: list[ThreadMessage] = []
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
