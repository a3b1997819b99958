"""New Foundry agents: named, versioned agents answering through the Responses API, with
conversations instead of threads (DESIGN.md 2b).

Built on the official ``openai`` package (``AsyncOpenAI``) with our azure-identity token
provider as the api key, configured as ``AIProjectClient.get_openai_client()`` configures
it: GA addressing by default (``{endpoint}/openai/v1``, the agent named by
``agent_reference`` in each body, no ``api-version``), or the agent's own endpoint
(preview, opt-in) with ``api-version`` and the ``Foundry-Features`` header the SDK sends.

What the service refuses with an agent named is never sent: ``tools``, ``tool_choice``,
``parallel_tool_calls``, ``model``, ``instructions``, a response format. Function tools
live in the agent's version (``tools sync``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, Literal, Self

import httpx
import openai
from openai import AsyncOpenAI

from ...logs import log
from ..auth import StaticToken, TokenProvider
from ..backend import (
    AgentInfo,
    ApprovalDecision,
    FunctionTool,
    InputFile,
    RunSnapshot,
    RunStatus,
    ToolOutput,
    TurnContext,
)
from ..errors import (
    AgentConnectionError,
    AgentServiceError,
    BadRequestError,
    BadResponseError,
    StreamInterruptedError,
    ThreadBusyError,
)
from ..events import Annotation, FileProduced
from ..retry import RetryingTransport, RetryPolicy, retry_after_seconds
from ..uploads import Multipart, Upload
from .errors import agent_error, error_from_status
from .project import PROJECT_API_VERSION, AgentVersions
from .stream import ResponseStream, annotation_of, approval_requests, function_calls

logger = logging.getLogger("bot.agents.foundry")

Addressing = Literal["project", "agent_endpoint"]

# azure-ai-projects 2.10.0, models/_patch.py: _AGENT_OPERATION_FEATURE_HEADERS, sent by
# get_openai_client(agent_name=...) (the agent endpoint is a preview feature).
PREVIEW_FEATURES = ",".join(
    f"{feature}=V1Preview"
    for feature in (
        "WorkflowAgents",
        "ExternalAgents",
        "DraftAgents",
        "VoiceAgents",
        "DigitalWorker",
        "GitHubCopilot",
        "Skills",
        "MicrosoftCopilot",
        "ModelRouterControls",
    )
)
UNANSWERED_SCAN = 50  # conversation items looked at when answering left-over function calls


def to_response_tool(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
    }


def agent_info(doc: Mapping[str, Any], name: str) -> AgentInfo:
    definition = doc.get("definition") or {}
    tools = definition.get("tools") or []
    return AgentInfo(
        backend="foundry",
        name=name,
        version=str(doc["version"]) if doc.get("version") is not None else None,
        model=definition.get("model"),
        function_tools={
            str(t.get("name")): t.get("parameters") or {} for t in tools if t.get("type") == "function"
        },
        other_tools=tuple(str(t.get("type")) for t in tools if t.get("type") != "function"),
        tools_per_run=False,
    )


class FoundryBackend:
    """One named agent (optionally pinned to a version) on one Foundry project endpoint."""

    kind = "foundry"

    def __init__(
        self,
        endpoint: str,
        token: TokenProvider | str,
        agent_name: str,
        *,
        agent_version: str | None = None,
        addressing: Addressing = "project",
        api_version: str = PROJECT_API_VERSION,
        background: bool = True,
        truncation: Literal["disabled", "auto"] = "disabled",
        stream_idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        resume_within_s: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token: TokenProvider = StaticToken(token) if isinstance(token, str) else token
        self.agent_name = agent_name
        self.agent_version = agent_version
        self.addressing = addressing
        self.background = background
        self.truncation = truncation
        self.resume_within_s = resume_within_s
        # ``http``: the transport seam (tests replay recorded sessions through it); otherwise
        # retries end at the policy's deadline (the openai client's own end after a count)
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(stream_idle_timeout, connect=connect_timeout),
            transport=RetryingTransport(httpx.AsyncHTTPTransport(), retry or RetryPolicy()),
        )
        self._http.event_hooks.setdefault("request", []).append(_request_started)
        self._http.event_hooks.setdefault("response", []).append(_log_response)
        self.versions = AgentVersions(self.endpoint, self._token, self._http, api_version)
        if addressing == "agent_endpoint":
            base_url = f"{self.endpoint}/agents/{agent_name}/endpoint/protocols/openai"
            query: dict[str, str] = {"api-version": api_version}
            headers = {"Foundry-Features": PREVIEW_FEATURES}
        else:
            base_url, query, headers = f"{self.endpoint}/openai/v1", {}, {}
        self.openai = AsyncOpenAI(
            base_url=base_url,
            api_key=self._token.get_token,
            default_query=query or None,
            default_headers=headers or None,
            http_client=self._http,
            max_retries=0,
        )
        self._held: dict[str, list[dict[str, Any]]] = {}  # conversation -> input for its next response
        # The openai package imports its resources on first use; do it now, at start-up, not
        # in the middle of traffic where the import would stall the event loop.
        _ = (self.openai.responses, self.openai.conversations, self.openai.conversations.items)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.openai.close()
        await self._token.close()

    # -- the agent --------------------------------------------------------------------------

    async def describe(self) -> AgentInfo:
        doc = await self.versions.version(self.agent_name, self.agent_version)
        return agent_info(doc, self.agent_name)

    async def sync_tools(self, tools: Sequence[FunctionTool]) -> AgentInfo:
        """A new agent version: the answering version's definition with these function tools."""
        current = await self.versions.version(self.agent_name, self.agent_version)
        definition = dict(current.get("definition") or {})
        own = [t for t in definition.get("tools") or [] if t.get("type") != "function"]
        definition["tools"] = own + [to_response_tool(t) for t in tools]
        created = await self.versions.create_version(self.agent_name, definition)
        return agent_info(created, self.agent_name)

    # -- conversations and responses --------------------------------------------------------

    def _agent_body(self) -> dict[str, Any]:
        if self.addressing == "agent_endpoint":
            return {}  # the endpoint names the agent; its version selector picks the version
        reference: dict[str, Any] = {"type": "agent_reference", "name": self.agent_name}
        if self.agent_version:
            reference["version"] = self.agent_version
        return {"agent_reference": reference}

    async def create_conversation(
        self, *, context: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> str:
        items = [{"type": "message", "role": "user", "content": text} for text in context if text]
        try:
            conversation = await self.openai.conversations.create(
                items=items or openai.omit, metadata=dict(metadata) if metadata else openai.omit
            )
        except Exception as exc:
            raise agent_error(exc) from None
        return conversation.id

    async def add_message(self, conversation_id: str, text: str, files: Sequence[InputFile] = ()) -> None:
        """Held until the run: the Responses API takes the message as the response's input;
        files go with it as ``input_image`` / ``input_file`` parts."""
        content: str | list[dict[str, Any]] = text
        if files:
            content = [{"type": "input_text", "text": text}] + [
                {"type": "input_image", "file_id": f.file_id, "detail": "auto"}
                if f.image
                else {"type": "input_file", "file_id": f.file_id}
                for f in files
            ]
        self._held.setdefault(conversation_id, []).append(
            {"type": "message", "role": "user", "content": content}
        )

    async def upload_file(self, upload: Upload) -> str:
        """``POST /openai/v1/files`` with ``purpose=assistants``, streamed from the spool (the
        official client reads a whole file into memory first)."""
        body = Multipart(upload, "assistants")
        headers = {"Authorization": f"Bearer {await self._token.get_token()}", **body.headers}
        try:
            response = await self._http.post(
                f"{self.endpoint}/openai/v1/files", content=body.body(), headers=headers
            )
        except httpx.HTTPError as exc:
            raise AgentConnectionError(f"cannot upload {upload.name}: {exc or type(exc).__name__}") from None
        doc = response.json() if "json" in response.headers.get("content-type", "") else {}
        if response.status_code >= 400:
            raise error_from_status(response.status_code, doc, retry_after_seconds(response.headers))
        if not isinstance(doc, dict) or not doc.get("id"):
            raise BadResponseError("POST /files answered without a file id")
        return str(doc["id"])

    async def file_content(self, file: FileProduced) -> AsyncIterator[bytes]:
        """A file the agent made: a code interpreter container's file, or a stored file."""
        path = (
            f"/containers/{file.container_id}/files/{file.file_id}/content"
            if file.container_id
            else f"/files/{file.file_id}/content"
        )
        headers = {"Authorization": f"Bearer {await self._token.get_token()}"}
        try:
            async with self._http.stream(
                "GET", f"{self.endpoint}/openai/v1{path}", headers=headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    doc = response.json() if "json" in response.headers.get("content-type", "") else {}
                    raise error_from_status(response.status_code, doc, retry_after_seconds(response.headers))
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.HTTPError as exc:
            raise StreamInterruptedError(f"the file download broke: {exc or type(exc).__name__}") from None

    async def delete_file(self, file_id: str) -> None:
        await _gone_either_way(self.openai.files.delete(file_id))

    async def delete_conversation(self, conversation_id: str) -> None:
        await _gone_either_way(self.openai.conversations.delete(conversation_id))

    async def start_run(
        self,
        conversation_id: str,
        *,
        context: TurnContext | None = None,
        tools: Sequence[FunctionTool] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> ResponseStream:
        # ``tools`` are not sent: the service refuses them with an agent named; they live in
        # the agent's version, and start-up says when the version lacks one.
        items: list[dict[str, Any]] = []
        if context is not None:
            items.append({"type": "message", "role": "developer", "content": context.as_instructions()})
        held = self._held.pop(conversation_id, [])
        items.extend(held)
        try:
            return await self._respond(conversation_id, items, metadata)
        except ThreadBusyError:
            # another response of the conversation is running: the message waits for the retry
            self._held[conversation_id] = held + self._held.get(conversation_id, [])
            raise
        except BadRequestError as exc:
            if "no tool output found" not in exc.message.lower():
                raise
            # a function call left unanswered by an earlier turn (a crash, a foreground
            # response that went on after Stop): answer it, then ask again
            await self._answer_unanswered(conversation_id, "not run: the earlier request was abandoned")
            return await self._respond(conversation_id, items, metadata)

    async def submit_tool_outputs(
        self, conversation_id: str, run_id: str, outputs: Sequence[ToolOutput]
    ) -> ResponseStream:
        items = [{"type": "function_call_output", "call_id": o.call_id, "output": o.output} for o in outputs]
        return await self._respond(conversation_id, items, None)

    async def answer_approvals(
        self, conversation_id: str, run_id: str, decisions: Sequence[ApprovalDecision]
    ) -> ResponseStream:
        items: list[dict[str, Any]] = []
        for decision in decisions:
            item: dict[str, Any] = {
                "type": "mcp_approval_response",
                "approval_request_id": decision.request_id,
                "approve": decision.approve,
            }
            if decision.reason:
                item["reason"] = decision.reason
            items.append(item)
        return await self._respond(conversation_id, items, None)

    async def _respond(
        self, conversation: str, items: list[dict[str, Any]], metadata: Mapping[str, str] | None
    ) -> ResponseStream:
        kwargs: dict[str, Any] = {"conversation": conversation, "input": items, "stream": True}
        if metadata:
            kwargs["metadata"] = dict(metadata)
        if self.background:
            kwargs["background"] = True
        if self.truncation == "auto":
            kwargs["truncation"] = "auto"
        try:
            stream = await self.openai.responses.create(**kwargs, extra_body=self._agent_body() or None)
        except Exception as exc:
            raise agent_error(exc) from None
        return ResponseStream(
            stream,
            conversation,
            resume=self._resume if self.background else None,
            resume_within_s=self.resume_within_s,
        )

    async def _resume(self, response_id: str, after: int) -> Any:
        """The rest of a background response's events (the service keeps them, also once the
        response has ended); a cancelled one is left to the caller's recovery."""
        try:
            status = (await self.openai.responses.retrieve(response_id)).status
            if status == "cancelled":  # nothing more will be streamed
                raise StreamInterruptedError("the response was cancelled while the stream was down")
            return await self.openai.responses.retrieve(response_id, stream=True, starting_after=after)
        except AgentServiceError:
            raise
        except Exception as exc:
            raise agent_error(exc) from None

    async def cancel(self, conversation_id: str, run_id: str) -> None:
        if not self.background:
            return  # only background responses can be cancelled; the caller closes the stream
        try:
            await self.openai.responses.cancel(run_id)
        except Exception as exc:  # already ended: nothing to stop
            log(logger, "agent.cancel_failed", logging.INFO, error=str(agent_error(exc)), run_id=run_id)

    async def snapshot(self, conversation_id: str, run_id: str) -> RunSnapshot:
        try:
            response = (await self.openai.responses.retrieve(run_id)).model_dump(mode="json")
        except Exception as exc:
            raise agent_error(exc) from None
        return snapshot_of(response, conversation_id)

    async def abandon(
        self, conversation_id: str, run_id: str | None, reason: str, *, drop_held: bool = True
    ) -> None:
        """Nothing held (unless ``drop_held`` is False: a live turn here holds it), nothing
        running, no function call left without its output."""
        if drop_held:
            self._held.pop(conversation_id, None)
        if run_id is not None and self.background:
            try:
                snapshot = await self.snapshot(conversation_id, run_id)
                if not snapshot.terminal and not snapshot.waiting:
                    await self.cancel(conversation_id, run_id)
            except AgentServiceError as exc:
                log(logger, "agent.abandon_unchecked", logging.INFO, error=str(exc), run_id=run_id)
        await self._answer_unanswered(conversation_id, reason)

    async def _answer_unanswered(self, conversation_id: str, reason: str) -> None:
        try:
            page = await self.openai.conversations.items.list(
                conversation_id, order="desc", limit=UNANSWERED_SCAN
            )
            items = [i.model_dump(mode="json") for i in page.data]
            answered = {i.get("call_id") for i in items if i.get("type") == "function_call_output"}
            missing = [
                i["call_id"]
                for i in reversed(items)
                if i.get("type") == "function_call" and i.get("call_id") not in answered
            ]
            if not missing:
                return
            outputs = [
                {"type": "function_call_output", "call_id": call_id, "output": f"error: {reason}"}
                for call_id in missing
            ]
            await self.openai.conversations.items.create(conversation_id, items=outputs)  # type: ignore[arg-type]
            log(
                logger,
                "agent.calls_answered",
                conversation=conversation_id,
                calls=len(missing),
                reason=reason,
            )
        except Exception as exc:
            log(logger, "agent.calls_unanswered", logging.WARNING, error=str(agent_error(exc)))


_STATUS = {
    "queued": RunStatus.QUEUED,
    "in_progress": RunStatus.IN_PROGRESS,
    "completed": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
    "incomplete": RunStatus.INCOMPLETE,
}


def snapshot_of(response: Mapping[str, Any], conversation_id: str) -> RunSnapshot:
    output = list(response.get("output") or [])
    status = _STATUS.get(str(response.get("status")), RunStatus.IN_PROGRESS)
    calls, approvals = function_calls(output), approval_requests(output)
    if status is RunStatus.COMPLETED and (calls or approvals):
        status = RunStatus.REQUIRES_ACTION
    texts: list[str] = []
    annotations: list[Annotation] = []
    for item in output:
        if item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                texts.append(str(part.get("text") or ""))
                for index, raw in enumerate(part.get("annotations") or []):
                    found = annotation_of(raw, f"【cite:{len(annotations) + index + 1}】")
                    if found is not None:
                        annotations.append(found)
            elif part.get("type") == "refusal":
                texts.append(str(part.get("refusal") or ""))
    error = response.get("error") or {}
    return RunSnapshot(
        run_id=str(response.get("id") or ""),
        conversation_id=conversation_id,
        status=status,
        text="\n\n".join(t for t in texts if t),
        annotations=tuple(annotations),
        tool_calls=calls if status is RunStatus.REQUIRES_ACTION else (),
        approvals=approvals if status is RunStatus.REQUIRES_ACTION else (),
        error_code=str(error.get("code")) if error.get("code") else None,
        error_message=str(error.get("message")) if error.get("message") else None,
        incomplete_reason=str((response.get("incomplete_details") or {}).get("reason") or "") or None,
    )


async def _request_started(request: httpx.Request) -> None:
    request.extensions["bot_started"] = time.monotonic()


async def _log_response(response: httpx.Response) -> None:
    """One ``agent.http`` line per exchange, like the classic client's: what an operator
    follows a conversation by (never a header that carries a secret)."""
    request = response.request
    started = request.extensions.get("bot_started")
    log(
        logger,
        "agent.http",
        logging.DEBUG if response.status_code < 400 else logging.INFO,
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        ms=round((time.monotonic() - started) * 1000) if isinstance(started, float) else None,
        service_request_id=response.headers.get("apim-request-id") or response.headers.get("x-request-id"),
    )


async def _gone_either_way(deletion: Awaitable[Any]) -> None:
    """A delete: what the service no longer has is deleted already."""
    try:
        await deletion
    except openai.NotFoundError:
        pass
    except openai.OpenAIError as exc:
        raise agent_error(exc) from None
