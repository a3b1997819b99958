"""New Foundry agents: named, versioned agents answering through the OpenAI-compatible
Responses API, with conversations instead of threads (DESIGN.md 2b).

``FoundryBackend`` offers the same interface as the classic ``AgentsClient`` (threads are
conversations, runs are responses), so the turn orchestrator and the Slack side cannot
tell which service answered. It uses the official ``openai`` package (``AsyncOpenAI``),
with the bearer token from our token provider (azure-identity).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import httpx
import openai
from openai import AsyncOpenAI

from ..logs import log
from .auth import StaticToken, TokenProvider
from .errors import (
    AgentConnectionError,
    AgentServiceError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    StreamInterruptedError,
    StreamTimeoutError,
)
from .events import (
    AgentEvent,
    Annotation,
    Completed,
    Failed,
    Incomplete,
    RunStatusChanged,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallsRequested,
    Usage,
)
from .models import Agent, AgentThread, ThreadMessage, ThreadRun

logger = logging.getLogger("bot.agents.foundry")


def to_response_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A classic function tool (``{"type", "function": {...}}``) in the Responses shape (flat)."""
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        function = tool["function"]
        return {
            "type": "function",
            "name": function.get("name"),
            "description": function.get("description", ""),
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        }
    return tool


def from_response_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function" and "name" in tool:
        return {
            "type": "function",
            "function": {k: tool[k] for k in ("name", "description", "parameters") if k in tool},
        }
    return tool


def _error(exc: Exception) -> AgentServiceError:
    """The openai package's errors as ours, keeping the service's message."""
    if isinstance(exc, openai.APIStatusError):
        message = str(getattr(exc, "message", "") or exc)
        body = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        if isinstance(inner, dict) and inner.get("message"):
            message = str(inner["message"])
        status = exc.status_code
        if status in (401, 403):
            return AuthenticationError(message, status=status)
        if status == 404:
            return NotFoundError(message, status=status)
        if status == 429:
            return RateLimitedError(message, status=status)
        if status >= 500:
            return ServiceError(message, status=status)
        return BadRequestError(message, status=status)
    if isinstance(exc, openai.APITimeoutError):
        return StreamTimeoutError("the agent service sent nothing in time")
    if isinstance(exc, openai.APIConnectionError):
        return AgentConnectionError(f"cannot reach the agent service: {exc}")
    return BadResponseError(str(exc))


class FoundryBackend:
    """One named agent (optionally pinned to a version) on one Foundry project endpoint."""

    def __init__(
        self,
        endpoint: str,
        token: TokenProvider | str,
        agent_name: str,
        *,
        agent_version: str | None = None,
        api_version: str = "v1",
        addressing: str = "agent_endpoint",
        stream_idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token: TokenProvider = StaticToken(token) if isinstance(token, str) else token
        self.agent_name = agent_name
        self.agent_version = agent_version
        self.api_version = api_version
        self.addressing = addressing
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(stream_idle_timeout, connect=connect_timeout))
        if addressing == "agent_endpoint":
            base_url = f"{self.endpoint}/agents/{agent_name}/endpoint/protocols/openai"
        else:
            base_url = f"{self.endpoint}/openai/v1"
        self.openai = AsyncOpenAI(
            base_url=base_url,
            api_key=self._token.get_token,
            default_query={"api-version": api_version},
            http_client=self._http,
            max_retries=max_retries,
        )
        self._pending_input: dict[str, list[dict[str, Any]]] = {}
        # The openai package imports its resources on first use; do it now, at start-up, not
        # in the middle of traffic where the import would stall the event loop.
        _ = (self.openai.responses, self.openai.conversations)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.openai.close()
        await self._token.close()

    # -- agents (named, versioned) --------------------------------------------------------

    async def _project(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._http.request(
            method,
            f"{self.endpoint}{path}",
            params={"api-version": self.api_version},
            json=body,
            headers={"Authorization": f"Bearer {await self._token.get_token()}"},
        )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise _error(
                openai.APIStatusError(message, response=response, body={"error": {"message": message}})
            )
        return response.json()

    async def agent_version_doc(self) -> dict[str, Any]:
        if self.agent_version:
            versions = await self._project("GET", f"/agents/{self.agent_name}/versions")
            for doc in versions.get("data") or []:
                if str(doc.get("version")) == str(self.agent_version):
                    return doc
            raise NotFoundError(f"Agent '{self.agent_name}' has no version {self.agent_version}.")
        agent = await self._project("GET", f"/agents/{self.agent_name}")
        return agent["versions"]["latest"]

    async def get_agent(self, agent_id: str | None = None) -> Agent:
        doc = await self.agent_version_doc()
        definition = doc.get("definition") or {}
        return Agent(
            id=self.agent_name,
            object="agent",
            name=self.agent_name,
            model=definition.get("model"),
            instructions=definition.get("instructions"),
            tools=[from_response_tool(t) for t in definition.get("tools") or []],
            metadata={"version": str(doc.get("version"))},
        )

    async def create_version(self, tools: list[dict[str, Any]]) -> dict[str, Any]:
        """A new agent version: the current definition with these tools (``tools sync``)."""
        current = await self.agent_version_doc()
        definition = {**(current.get("definition") or {}), "tools": [to_response_tool(t) for t in tools]}
        return await self._project("POST", f"/agents/{self.agent_name}/versions", {"definition": definition})

    # -- the classic interface: threads are conversations, runs are responses -----------

    async def create_thread(
        self, *, messages: Sequence[dict[str, Any]] | None = None, metadata: dict[str, str] | None = None
    ) -> AgentThread:
        items = [
            {"type": "message", "role": m.get("role", "user"), "content": m.get("content", "")}
            for m in messages or []
        ]
        try:
            conversation = await self.openai.conversations.create(
                items=items or openai.NOT_GIVEN, metadata=metadata or openai.NOT_GIVEN
            )
        except Exception as exc:
            raise _error(exc) from None
        return AgentThread(id=conversation.id, object="conversation")

    async def add_message(
        self, thread_id: str, content: str, *, role: str = "user", **_: Any
    ) -> ThreadMessage:
        """Held until the run: the Responses API takes the message as the response's input."""
        item = {"type": "message", "role": role, "content": content}
        self._pending_input.setdefault(thread_id, []).append(item)
        return ThreadMessage(
            id="pending",
            thread_id=thread_id,
            role=role,
            content=[{"type": "text", "text": {"value": content, "annotations": []}}],
        )

    async def stream_run(
        self, thread_id: str, agent_id: str | None = None, **overrides: Any
    ) -> ResponseStream:
        items = self._pending_input.pop(thread_id, [])
        return await self._stream(thread_id, items, overrides)

    async def submit_tool_outputs_stream(
        self, thread_id: str, run_id: str, tool_outputs: Sequence[dict[str, str]]
    ) -> ResponseStream:
        items = [
            {"type": "function_call_output", "call_id": o["tool_call_id"], "output": o["output"]}
            for o in tool_outputs
        ]
        return await self._stream(thread_id, items, {})

    async def _stream(
        self, conversation: str, items: list[dict[str, Any]], overrides: dict[str, Any]
    ) -> ResponseStream:
        kwargs: dict[str, Any] = {"conversation": conversation, "input": items, "stream": True}
        if overrides.get("tools") is not None:
            kwargs["tools"] = [to_response_tool(t) for t in overrides["tools"]]
        if overrides.get("metadata"):
            kwargs["metadata"] = overrides["metadata"]
        extra: dict[str, Any] = {}
        if self.addressing != "agent_endpoint":
            extra["agent_reference"] = {
                "name": self.agent_name,
                "type": "agent_reference",
                **({"version": self.agent_version} if self.agent_version else {}),
            }
        try:
            stream = await self.openai.responses.create(**kwargs, extra_body=extra or None)
        except Exception as exc:
            raise _error(exc) from None
        return ResponseStream(stream, conversation)

    async def get_run(self, thread_id: str, run_id: str) -> ThreadRun:
        try:
            response = await self.openai.responses.retrieve(run_id)
        except Exception as exc:
            raise _error(exc) from None
        return run_view(response.model_dump(mode="json"), thread_id)

    async def cancel_run(self, thread_id: str, run_id: str) -> ThreadRun:
        try:
            response = await self.openai.responses.cancel(run_id)
            return run_view(response.model_dump(mode="json"), thread_id)
        except Exception as exc:  # only background responses can be cancelled
            log(logger, "foundry.cancel_failed", logging.INFO, error=str(exc), run_id=run_id)
            return await self.get_run(thread_id, run_id)

    async def list_messages(
        self, thread_id: str, *, run_id: str | None = None, order: str = "asc", limit: int = 20
    ) -> AsyncIterator[ThreadMessage]:
        if run_id is None:
            return
        try:
            response = (await self.openai.responses.retrieve(run_id)).model_dump(mode="json")
        except Exception as exc:
            raise _error(exc) from None
        for item in response.get("output") or []:
            if item.get("type") != "message":
                continue
            text = "".join(
                p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text"
            )
            yield ThreadMessage(
                id=item.get("id") or "msg",
                thread_id=thread_id,
                run_id=run_id,
                role="assistant",
                content=[{"type": "text", "text": {"value": text, "annotations": []}}],
            )


def run_view(response: dict[str, Any], thread_id: str) -> ThreadRun:
    """A response as the classic run object the orchestrator knows."""
    status = response.get("status") or "in_progress"
    calls = [i for i in response.get("output") or [] if i.get("type") == "function_call"]
    required = None
    if status == "completed" and calls:
        status = "requires_action"
        required = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {
                        "id": c["call_id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in calls
                ]
            },
        }
    status = {"queued": "queued", "in_progress": "in_progress", "cancelled": "cancelled"}.get(status, status)
    error = response.get("error")
    return ThreadRun(
        id=response["id"],
        thread_id=thread_id,
        status=status,
        required_action=required,
        last_error=error if isinstance(error, dict) else None,
        incomplete_details=response.get("incomplete_details"),
    )


class ResponseStream:
    """One streamed response as backend-neutral events."""

    def __init__(self, stream: Any, conversation: str) -> None:
        self._stream = stream
        self.thread_id = conversation
        self.run_id: str | None = None
        self.status: str | None = None
        self._citations = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            await close()

    async def events(self) -> AsyncIterator[AgentEvent]:
        calls: dict[str, list[str]] = {}  # item id -> [call_id, name, arguments]
        ended = False
        try:
            async for event in self._stream:
                for mapped in self._map(event.model_dump(mode="json"), calls):
                    if isinstance(mapped, (Completed, Failed, Incomplete, ToolCallsRequested)):
                        ended = True
                    yield mapped
        except openai.APIError as exc:
            raise _error(exc) from None
        except httpx.TimeoutException:
            raise StreamTimeoutError(
                "the agent service sent nothing in time", run_id=self.run_id, thread_id=self.thread_id
            ) from None
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise StreamInterruptedError(
                f"the event stream broke: {exc or type(exc).__name__}",
                run_id=self.run_id,
                thread_id=self.thread_id,
            ) from None
        if not ended:
            raise StreamInterruptedError(
                "the agent service closed the stream before the response finished",
                run_id=self.run_id,
                thread_id=self.thread_id,
            )

    def _map(self, event: dict[str, Any], calls: dict[str, list[str]]) -> list[AgentEvent]:
        kind = event.get("type", "")
        if kind in ("response.created", "response.in_progress", "response.queued"):
            response = event.get("response") or {}
            self.run_id = response.get("id") or self.run_id
            self.status = kind.removeprefix("response.")
            return [RunStatusChanged(self.run_id or "", self.thread_id, self.status)]
        if kind == "response.output_text.delta":
            return (
                [TextDelta(event.get("delta") or "", (), event.get("item_id"))] if event.get("delta") else []
            )
        if kind == "response.output_text.annotation.added":
            annotation = event.get("annotation") or {}
            if annotation.get("type") != "url_citation":
                return []
            self._citations += 1
            marker = f"【cite:{self._citations}】"  # rendered by the Slack side like classic markers
            return [
                TextDelta(
                    marker,
                    (
                        Annotation(
                            "url_citation",
                            marker=marker,
                            url=annotation.get("url"),
                            title=annotation.get("title"),
                        ),
                    ),
                    event.get("item_id"),
                )
            ]
        if kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            calls[item["id"]] = [item.get("call_id", ""), item.get("name", ""), ""]
            return [ToolCallDelta(item.get("call_id", ""), item.get("name", ""), "", "")]
        if kind == "response.function_call_arguments.delta":
            state = calls.setdefault(event.get("item_id", ""), ["", "", ""])
            state[2] += event.get("delta") or ""
            return [ToolCallDelta(state[0], state[1], event.get("delta") or "", state[2])]
        if kind in ("response.completed", "response.failed", "response.incomplete"):
            response = event.get("response") or {}
            self.run_id = response.get("id") or self.run_id
            view = run_view(response, self.thread_id)
            self.status = view.status
            if view.status == "requires_action":
                return [
                    RunStatusChanged(view.id, self.thread_id, "requires_action"),
                    ToolCallsRequested(view.id, self.thread_id, view.tool_calls),
                ]
            if view.status == "failed":
                error = response.get("error") or {}
                return [
                    Failed(
                        view.id,
                        str(error.get("code") or "server_error"),
                        str(error.get("message") or "The response failed without a message."),
                    )
                ]
            if view.status == "incomplete":
                reason = (response.get("incomplete_details") or {}).get("reason") or "unknown"
                return [Incomplete(view.id, str(reason))]
            usage = response.get("usage") or {}
            return [
                Completed(
                    view.id,
                    Usage(
                        int(usage.get("input_tokens") or 0),
                        int(usage.get("output_tokens") or 0),
                        int(usage.get("total_tokens") or 0),
                    ),
                )
            ]
        if kind == "error":
            return [StreamError(str(event.get("code") or "error"), str(event.get("message") or event))]
        return []


__all__ = [
    "FoundryBackend",
    "ResponseStream",
    "ToolCall",
    "from_response_tool",
    "run_view",
    "to_response_tool",
]
