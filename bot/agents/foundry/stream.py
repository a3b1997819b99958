"""One streamed response as neutral events, resumed after a drop when it runs in background.

Events as the service streams them (DESIGN.md 2b; the recorded sessions in
``tests/fixtures/recordings``): ``response.created`` ... ``response.output_text.delta`` ...
``response.completed``, each with a ``sequence_number``. A background response keeps
running when the connection drops; ``GET /responses/{id}?stream=true&starting_after=N``
continues after the last event we saw, so nothing is shown twice and nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

import httpx
import openai

from ...logs import log
from ..errors import AgentServiceError, StreamInterruptedError, StreamTimeoutError
from ..events import (
    AgentEvent,
    Annotation,
    ApprovalRequest,
    ApprovalsRequested,
    Cancelled,
    Completed,
    Failed,
    FileProduced,
    Incomplete,
    RunStatusChanged,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallsRequested,
    Usage,
)
from .errors import agent_error

logger = logging.getLogger("bot.agents.foundry")

Resume = Callable[[str, int], Awaitable[Any]]  # (response id, last sequence number) -> event stream


def annotation_of(raw: dict[str, Any], marker: str) -> Annotation | None:
    kind = raw.get("type")
    if kind == "url_citation":
        return Annotation("url_citation", marker=marker, url=raw.get("url"), title=raw.get("title"))
    if kind in ("file_citation", "container_file_citation"):
        return Annotation(
            "file_citation",
            marker=marker,
            file_id=raw.get("file_id"),
            title=raw.get("filename") or raw.get("file_id"),
        )
    return None


def function_calls(output: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(str(i.get("call_id") or ""), str(i.get("name") or ""), str(i.get("arguments") or "{}"))
        for i in output
        if i.get("type") == "function_call"
    )


def approval_requests(output: list[dict[str, Any]]) -> tuple[ApprovalRequest, ...]:
    return tuple(
        ApprovalRequest(
            str(i.get("id") or ""),
            str(i.get("server_label") or ""),
            str(i.get("name") or ""),
            str(i.get("arguments") or "{}"),
        )
        for i in output
        if i.get("type") == "mcp_approval_request"
    )


class ResponseStream:
    """Implements ``RunStream`` for one response (one leg of a turn on new agents)."""

    expires_at: float | None = None  # responses carry no run deadline

    def __init__(
        self,
        stream: Any,
        conversation: str,
        *,
        resume: Resume | None = None,
        resume_within_s: float = 60.0,
    ) -> None:
        self._stream = stream
        self.conversation_id = conversation
        self.run_id: str | None = None
        self.status: str | None = None
        self.last_sequence: int | None = None
        self._resume = resume
        self._resume_within_s = resume_within_s
        self._citations = 0
        self._calls: dict[str, list[str]] = {}  # item id -> [call_id, name, arguments]

    @property
    def thread_id(self) -> str:
        return self.conversation_id

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            await close()

    async def events(self) -> AsyncIterator[AgentEvent]:
        """The response's events; after a drop, the rest of them (resumed until a deadline)."""
        deadline: float | None = None
        pause = 0.2
        while True:
            try:
                async for mapped in self._leg():
                    deadline, pause = None, 0.2  # progress: a later drop gets a fresh deadline
                    yield mapped
                return
            except StreamInterruptedError as exc:
                if self._resume is None or self.run_id is None or self.last_sequence is None:
                    raise
                deadline = deadline or time.monotonic() + self._resume_within_s
                if time.monotonic() > deadline:
                    raise
                log(
                    logger,
                    "agent.stream_resume",
                    logging.WARNING,
                    run_id=self.run_id,
                    after=self.last_sequence,
                    error=str(exc),
                )
                await self.aclose()
                self._stream = await self._resumed(deadline)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _resumed(self, deadline: float) -> Any:
        assert self._resume is not None and self.run_id is not None and self.last_sequence is not None
        try:
            return await self._resume(self.run_id, self.last_sequence)
        except StreamInterruptedError:
            raise  # the response ended meanwhile: the caller reads its stored result
        except AgentServiceError as again:
            if time.monotonic() > deadline:
                raise
            log(logger, "agent.stream_resume_failed", logging.WARNING, error=str(again))
            return _Empty()

    async def _leg(self) -> AsyncIterator[AgentEvent]:
        ended = False
        try:
            async for event in self._stream:
                raw = event.model_dump(mode="json") if hasattr(event, "model_dump") else dict(event)
                sequence = raw.get("sequence_number")
                if isinstance(sequence, int):
                    if self.last_sequence is not None and sequence <= self.last_sequence:
                        continue  # replayed after a resume: already shown
                    self.last_sequence = sequence
                for mapped in self._map(raw):
                    if isinstance(
                        mapped, (Completed, Failed, Incomplete, ToolCallsRequested, ApprovalsRequested)
                    ):
                        ended = True
                    yield mapped
        except openai.APIStatusError as exc:
            raise agent_error(exc) from None
        except (openai.APITimeoutError, httpx.TimeoutException):
            raise StreamTimeoutError(
                "the agent service sent nothing in time", run_id=self.run_id, thread_id=self.conversation_id
            ) from None
        except (openai.APIError, httpx.HTTPError, ValueError) as exc:
            raise StreamInterruptedError(
                f"the event stream broke: {type(exc).__name__}",
                run_id=self.run_id,
                thread_id=self.conversation_id,
            ) from None
        if not ended:
            raise StreamInterruptedError(
                "the agent service closed the stream before the response finished",
                run_id=self.run_id,
                thread_id=self.conversation_id,
            )

    # -- mapping ------------------------------------------------------------------------------

    def _map(self, event: dict[str, Any]) -> list[AgentEvent]:
        kind = str(event.get("type", ""))
        if kind in ("response.created", "response.in_progress", "response.queued"):
            response = event.get("response") or {}
            self.run_id = response.get("id") or self.run_id
            self.status = kind.removeprefix("response.")
            return [RunStatusChanged(self.run_id or "", self.conversation_id, self.status)]
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            delta = event.get("delta") or ""
            return [TextDelta(delta, (), event.get("item_id"))] if delta else []
        if kind == "response.output_text.annotation.added":
            return self._annotation(event)
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                self._calls[str(item.get("id"))] = [
                    str(item.get("call_id", "")),
                    str(item.get("name", "")),
                    "",
                ]
                return [ToolCallDelta(str(item.get("call_id", "")), str(item.get("name", "")), "", "")]
            return []
        if kind == "response.function_call_arguments.delta":
            state = self._calls.setdefault(str(event.get("item_id", "")), ["", "", ""])
            state[2] += event.get("delta") or ""
            return [ToolCallDelta(state[0], state[1], event.get("delta") or "", state[2])]
        if kind in ("response.completed", "response.failed", "response.incomplete", "response.cancelled"):
            return self._ended(event.get("response") or {})
        if kind == "error":
            return [StreamError(str(event.get("code") or "error"), str(event.get("message") or "error"))]
        return []

    def _annotation(self, event: dict[str, Any]) -> list[AgentEvent]:
        raw = event.get("annotation") or {}
        if raw.get("type") == "container_file_citation" and raw.get("container_id") and raw.get("file_id"):
            # a file the code interpreter made: it comes back to Slack as a file, not a citation
            name = str(raw.get("filename") or raw["file_id"])
            image = name.lower().rsplit(".", 1)[-1] in ("png", "jpg", "jpeg", "gif", "webp")
            return [
                FileProduced(str(raw["file_id"]), name, image=image, container_id=str(raw["container_id"]))
            ]
        self._citations += 1
        marker = f"【cite:{self._citations}】"  # rendered by the Slack side like classic markers
        annotation = annotation_of(event.get("annotation") or {}, marker)
        if annotation is None:
            return []
        return [TextDelta(marker, (annotation,), event.get("item_id"))]

    def _ended(self, response: dict[str, Any]) -> list[AgentEvent]:
        self.run_id = response.get("id") or self.run_id
        run_id = self.run_id or ""
        status = str(response.get("status") or "completed")
        self.status = status
        output = response.get("output") or []
        if status == "completed":
            calls, approvals = function_calls(output), approval_requests(output)
            if calls:
                self.status = "requires_action"
                return [
                    RunStatusChanged(run_id, self.conversation_id, "requires_action"),
                    ToolCallsRequested(run_id, self.conversation_id, calls),
                ]
            if approvals:
                self.status = "requires_action"
                return [
                    RunStatusChanged(run_id, self.conversation_id, "requires_action"),
                    ApprovalsRequested(run_id, self.conversation_id, approvals),
                ]
            usage = response.get("usage") or {}
            return [
                Completed(
                    run_id,
                    Usage(
                        int(usage.get("input_tokens") or 0),
                        int(usage.get("output_tokens") or 0),
                        int(usage.get("total_tokens") or 0),
                    ),
                )
            ]
        if status == "failed":
            error = response.get("error") or {}
            return [
                Failed(
                    run_id,
                    str(error.get("code") or "server_error"),
                    str(error.get("message") or "The response failed without a message."),
                )
            ]
        if status == "cancelled":
            return [Cancelled(run_id)]
        reason = (response.get("incomplete_details") or {}).get("reason") or "unknown"
        return [Incomplete(run_id, str(reason))]


class _Empty:
    """A leg that ends at once (a resume that failed): the loop tries again."""

    def __aiter__(self) -> _Empty:
        return self

    async def __anext__(self) -> Any:
        raise httpx.ReadError("resume failed")

    async def close(self) -> None:
        return None
