"""Classic agents (threads and runs) behind the neutral ``AgentBackend`` seam."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ...logs import log
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
from ..errors import AgentServiceError, BadRequestError, NotFoundError
from ..events import FileProduced
from ..uploads import Upload
from .client import AgentsClient, RunStream
from .models import Agent, ThreadRun

logger = logging.getLogger("bot.agents.classic")

AGENT_TOOLS_TTL_S = 300.0


def _definition(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


def agent_info(agent: Agent) -> AgentInfo:
    functions = {
        str((t.get("function") or {}).get("name")): (t.get("function") or {}).get("parameters") or {}
        for t in agent.tools
        if t.get("type") == "function"
    }
    return AgentInfo(
        backend="classic",
        name=agent.id,
        model=agent.model,
        function_tools=functions,
        other_tools=tuple(str(t.get("type")) for t in agent.non_function_tools()),
        tools_per_run=True,
    )


class ClassicBackend:
    """One classic agent (``asst_...``) on one project endpoint."""

    kind = "classic"

    def __init__(self, client: AgentsClient, agent_id: str) -> None:
        self.client = client
        self.agent_id = agent_id
        self._own_tools: tuple[float, list[dict[str, Any]]] | None = None

    async def describe(self) -> AgentInfo:
        return agent_info(await self.client.get_agent(self.agent_id))

    async def create_conversation(
        self, *, context: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> str:
        messages = [{"role": "user", "content": text} for text in context if text]
        thread = await self.client.create_thread(messages=messages or None, metadata=dict(metadata or {}))
        return thread.id

    async def add_message(self, conversation_id: str, text: str, files: Sequence[InputFile] = ()) -> None:
        """Images go in the content (``image_file``); other files as attachments for the
        tool that reads them."""
        images = [{"type": "image_file", "image_file": {"file_id": f.file_id}} for f in files if f.image]
        content: str | list[dict[str, Any]] = [{"type": "text", "text": text}, *images] if images else text
        attachments = [{"file_id": f.file_id, "tools": [{"type": f.tool}]} for f in files if not f.image]
        await self.client.add_message(conversation_id, content, attachments=attachments or None)

    async def upload_file(self, upload: Upload) -> str:
        return str((await self.client.upload_file(upload))["id"])

    def file_content(self, file: FileProduced) -> AsyncIterator[bytes]:
        return self.client.file_content(file.file_id)

    async def delete_file(self, file_id: str) -> None:
        try:
            await self.client.delete_file(file_id)
        except NotFoundError:
            pass

    async def delete_conversation(self, conversation_id: str) -> None:
        try:
            await self.client.delete_thread(conversation_id)
        except NotFoundError:
            pass

    async def start_run(
        self,
        conversation_id: str,
        *,
        context: TurnContext | None = None,
        tools: Sequence[FunctionTool] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> RunStream:
        overrides: dict[str, Any] = {}
        if metadata:
            overrides["metadata"] = dict(metadata)
        if context is not None:
            # per run, not in the thread: the person's words stay the person's words
            overrides["additional_instructions"] = context.as_instructions()
        if tools:
            # a run's ``tools`` replaces the agent's set: keep the agent's own tools too
            overrides["tools"] = await self._agent_own_tools() + [_definition(t) for t in tools]
        return await self.client.stream_run(conversation_id, self.agent_id, **overrides)

    async def _agent_own_tools(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._own_tools is None or self._own_tools[0] < now:
            agent = await self.client.get_agent(self.agent_id)
            self._own_tools = (now + AGENT_TOOLS_TTL_S, agent.non_function_tools())
        return list(self._own_tools[1])

    async def submit_tool_outputs(
        self, conversation_id: str, run_id: str, outputs: Sequence[ToolOutput]
    ) -> RunStream:
        wire = [{"tool_call_id": o.call_id, "output": o.output} for o in outputs]
        return await self.client.submit_tool_outputs_stream(conversation_id, run_id, wire)

    async def answer_approvals(
        self, conversation_id: str, run_id: str, decisions: Sequence[ApprovalDecision]
    ) -> RunStream:
        raise BadRequestError("classic agents do not ask this bot for tool approvals")

    async def cancel(self, conversation_id: str, run_id: str) -> None:
        try:
            await self.client.cancel_run(conversation_id, run_id)
        except AgentServiceError as exc:  # already ended: nothing to stop
            log(logger, "agent.cancel_failed", logging.INFO, error=str(exc), run_id=run_id)

    async def snapshot(self, conversation_id: str, run_id: str) -> RunSnapshot:
        run = await self.client.get_run(conversation_id, run_id)
        text, annotations = "", ()
        if run.status != "requires_action":
            parts = []
            found: list[Any] = []
            async for message in self.client.list_messages(conversation_id, run_id=run_id, order="asc"):
                if message.role == "assistant" and message.text:
                    parts.append(message.text)
                    found.extend(message.annotations)
            text, annotations = "\n\n".join(parts), tuple(found)
        return snapshot_of(run, text, annotations)

    async def abandon(
        self, conversation_id: str, run_id: str | None, reason: str, *, drop_held: bool = True
    ) -> None:
        """A classic thread is free again once its run has ended: cancel a run left open
        (messages go to the thread at once: nothing is held here)."""
        if run_id is None:
            return
        try:
            run = await self.client.get_run(conversation_id, run_id)
        except AgentServiceError as exc:
            log(logger, "agent.abandon_unchecked", logging.INFO, error=str(exc), run_id=run_id)
            return
        if run.status not in ("completed", "failed", "cancelled", "expired", "incomplete", "cancelling"):
            log(logger, "agent.abandon", run_id=run_id, status=run.status, reason=reason)
            await self.cancel(conversation_id, run_id)

    async def sync_tools(self, tools: Sequence[FunctionTool]) -> AgentInfo:
        agent = await self.client.get_agent(self.agent_id)
        updated = await self.client.update_agent(
            self.agent_id, tools=agent.non_function_tools() + [_definition(t) for t in tools]
        )
        self._own_tools = None
        return agent_info(updated)

    async def aclose(self) -> None:
        await self.client.aclose()


def snapshot_of(run: ThreadRun, text: str = "", annotations: tuple[Any, ...] = ()) -> RunSnapshot:
    error = run.last_error or {}
    try:
        status = RunStatus(run.status)
    except ValueError:
        status = RunStatus.IN_PROGRESS
    return RunSnapshot(
        run_id=run.id,
        conversation_id=run.thread_id,
        status=status,
        text=text,
        annotations=annotations,
        tool_calls=run.tool_calls if status is RunStatus.REQUIRES_ACTION else (),
        error_code=str(error.get("code")) if error.get("code") else None,
        error_message=str(error.get("message")) if error.get("message") else None,
        incomplete_reason=str((run.incomplete_details or {}).get("reason") or "") or None,
        expires_at=float(run.expires_at) if run.expires_at else None,
    )
