"""Classic threads/runs wire events -> backend-neutral events (``events.py``).

Stateful only where the wire is: tool-call arguments arrive as fragments in step deltas
and are stitched together here, keyed by step and call index.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadResponseError
from ..events import (
    AgentEvent,
    Annotation,
    Cancelled,
    Completed,
    Expired,
    Failed,
    FileProduced,
    Incomplete,
    MessageCompleted,
    RunStatusChanged,
    RunStepChanged,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallsRequested,
    UnknownEvent,
    Usage,
)
from .models import content_annotations, content_text, function_calls

RUN_EVENTS = frozenset(
    f"thread.run.{s}"
    for s in (
        "created",
        "queued",
        "in_progress",
        "requires_action",
        "completed",
        "incomplete",
        "failed",
        "cancelling",
        "cancelled",
        "expired",
    )
)
STEP_EVENTS = frozenset(
    f"thread.run.step.{s}" for s in ("created", "in_progress", "completed", "failed", "cancelled", "expired")
)
MESSAGE_EVENTS = frozenset(
    f"thread.message.{s}" for s in ("created", "in_progress", "completed", "incomplete")
)
KNOWN_EVENTS = (
    RUN_EVENTS
    | STEP_EVENTS
    | MESSAGE_EVENTS
    | {"thread.created", "thread.message.delta", "thread.run.step.delta", "error", "done"}
)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        total_tokens=int(raw.get("total_tokens") or 0),
    )


def error_fields(data: Any) -> tuple[str, str]:
    """(code, message) from an ``error`` event, whatever shape it arrived in."""
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        code = str(inner.get("code") or inner.get("type") or "error")
        message = str(inner.get("message") or inner)
        return code, message
    return "error", str(data)


class WireEventMapper:
    """Feed (event name, parsed data) pairs; get neutral events."""

    def __init__(self) -> None:
        # (step_id, index) -> [call_id, name, arguments so far]
        self._calls: dict[tuple[str, int], list[str]] = {}

    def map(self, name: str, data: Any) -> list[AgentEvent]:
        if name == "thread.message.delta":
            obj = _require_dict(name, data)
            content = (obj.get("delta") or {}).get("content")
            text = content_text(content)
            annotations = content_annotations(content)
            events: list[AgentEvent] = (
                [TextDelta(text, annotations, obj.get("id"))] if text or annotations else []
            )
            return events + produced_files(content, annotations)
        if name == "thread.run.step.delta":
            return self._step_delta(_require_dict(name, data))
        if name in RUN_EVENTS:
            return self._run_event(name, _require_dict(name, data))
        if name in STEP_EVENTS:
            return [self._step_event(_require_dict(name, data))]
        if name == "thread.message.completed":
            obj = _require_dict(name, data)
            content = obj.get("content")
            return [MessageCompleted(str(obj.get("id")), content_text(content), content_annotations(content))]
        if name in MESSAGE_EVENTS or name == "thread.created" or name == "done":
            return []
        if name == "error":
            return [StreamError(*error_fields(data))]
        return [UnknownEvent(name, data)]

    def _run_event(self, name: str, run: dict[str, Any]) -> list[AgentEvent]:
        run_id = str(run.get("id") or "")
        thread_id = str(run.get("thread_id") or "")
        status = name.removeprefix("thread.run.")
        if status == "completed":
            return [Completed(run_id, _usage(run.get("usage")))]
        if status == "failed":
            error = run.get("last_error") or {}
            return [
                Failed(
                    run_id,
                    str(error.get("code") or "server_error"),
                    str(error.get("message") or "The run failed without a message."),
                )
            ]
        if status == "cancelled":
            return [Cancelled(run_id)]
        if status == "expired":
            return [Expired(run_id)]
        if status == "incomplete":
            details = run.get("incomplete_details") or {}
            return [Incomplete(run_id, str(details.get("reason") or "unknown"))]
        changed = RunStatusChanged(run_id, thread_id, status)
        if status != "requires_action":
            return [changed]
        action = run.get("required_action") or {}
        calls = function_calls((action.get("submit_tool_outputs") or {}).get("tool_calls"))
        return [changed, ToolCallsRequested(run_id, thread_id, calls)]

    def _step_event(self, step: dict[str, Any]) -> RunStepChanged:
        step_id = str(step.get("id") or "")
        details = step.get("step_details") or {}
        calls: tuple[ToolCall, ...] = ()
        if details.get("type") == "tool_calls":
            raw_calls = details.get("tool_calls") or []
            calls = tuple(
                self._with_streamed_arguments(step_id, index, call)
                for index, call in enumerate(function_calls(raw_calls))
            )
        return RunStepChanged(
            step_id=step_id,
            run_id=str(step.get("run_id") or ""),
            status=str(step.get("status") or ""),
            step_type=str(step.get("type") or details.get("type") or ""),
            tool_calls=calls,
        )

    def _with_streamed_arguments(self, step_id: str, index: int, call: ToolCall) -> ToolCall:
        streamed = self._calls.get((step_id, index))
        if streamed and call.arguments in ("", "{}") and streamed[2]:
            return ToolCall(call.id or streamed[0], call.name or streamed[1], streamed[2])
        return call

    def _step_delta(self, chunk: dict[str, Any]) -> list[AgentEvent]:
        step_id = str(chunk.get("id") or "")
        details = (chunk.get("delta") or {}).get("step_details") or {}
        if details.get("type") != "tool_calls":
            return []
        out: list[AgentEvent] = []
        for position, call in enumerate(details.get("tool_calls") or ()):
            if call.get("type", "function") != "function":
                continue
            index = int(call.get("index", position))
            function = call.get("function") or {}
            state = self._calls.setdefault((step_id, index), ["", "", ""])
            if call.get("id"):
                state[0] = str(call["id"])
            if function.get("name"):
                state[1] = str(function["name"])
            fragment = function.get("arguments") or ""
            state[2] += fragment
            out.append(ToolCallDelta(state[0], state[1], fragment, state[2]))
        return out


def _require_dict(name: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadResponseError(f"event {name!r} carried {type(data).__name__}, not a JSON object")
    return data


def produced_files(
    content: list[dict[str, Any]] | None, annotations: tuple[Annotation, ...]
) -> list[AgentEvent]:
    """Images in the content (``image_file``) and files the text links (``file_path``
    annotations, ``sandbox:/mnt/data/<name>``): what the agent made."""
    found: list[AgentEvent] = []
    for part in content or ():
        if part.get("type") == "image_file":
            file_id = str((part.get("image_file") or {}).get("file_id") or "")
            if file_id:
                found.append(FileProduced(file_id, f"{file_id}.png", image=True))
    for annotation in annotations:
        if annotation.kind == "file_path" and annotation.file_id:
            name = annotation.marker.rsplit("/", 1)[-1] or annotation.file_id
            found.append(FileProduced(annotation.file_id, name))
    return found
