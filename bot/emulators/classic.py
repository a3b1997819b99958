"""The classic agent service (threads and runs), DESIGN.md section 2: its routes, state
and the worker that plays a run's events as the service streams them.

Builds on ``agent_state`` (the shared script, faults and error shapes); ``agents.py``
composes it with the Responses API into the one emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .agent_script import Action, MadeFile, Reject, Script, Turn, output_substitutions
from .agent_state import (
    BODY,
    TERMINAL,
    AgentEmulatorState,
    api_error,
    copy_json,
    new_id,
    now,
    reject_response,
    split_text,
)

logger = logging.getLogger("bot.emulators.classic")

_DISCONNECT = object()  # marker in a run's event log: the worker asked to drop the socket
_PAUSE = object()  # marker: the response ends here (requires_action or a terminal state)

logger = logging.getLogger("bot.emulators.agents")


@dataclass
class Run:
    doc: dict[str, Any]
    turn: Turn | None
    user_text: str
    tools: list[dict[str, Any]]
    events: list[Any] = field(default_factory=list)  # (name, payload) | _PAUSE | _DISCONNECT
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    outputs: asyncio.Future[list[dict[str, Any]]] | None = None
    text_timeline: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, chars so far)
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def status(self) -> str:
        return self.doc["status"]


class _Cancelled(Exception):
    pass


class _Expired(Exception):
    """The run outlived its own ``expires_at``."""


class ClassicAPI(AgentEmulatorState):
    """Agents (``/assistants``), threads, messages and runs, in memory."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        crlf: bool = False,
        keepalive: float | None = None,
        run_expiry_s: int = 600,
        action_expiry_s: int = 36000,
    ) -> None:
        super().__init__(script)
        self.crlf = crlf
        self.keepalive = keepalive
        self.agents: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.runs: dict[str, Run] = {}
        self.active_run: dict[str, str] = {}  # thread id -> run id
        # a run's own deadline, as the service sets it: created_at + 600 s in the recorded
        # sessions (tests/fixtures/recordings; DESIGN.md 2 saw 1800 s elsewhere), created_at +
        # 36000 s while it waits for tool outputs; the bot honours whatever the run says
        self.run_expiry_s = run_expiry_s
        self.action_expiry_s = action_expiry_s

    def classic_routes(self, router: web.UrlDispatcher, base: str) -> None:
        r = router
        r.add_post(base + "/assistants", self._create_agent)
        r.add_get(base + "/assistants", self._list_agents)
        r.add_get(base + "/assistants/{agent_id}", self._get_agent)
        r.add_post(base + "/assistants/{agent_id}", self._update_agent)
        r.add_delete(base + "/assistants/{agent_id}", self._delete_agent)
        r.add_post(base + "/threads", self._create_thread)
        r.add_get(base + "/threads/{thread_id}", self._get_thread)
        r.add_delete(base + "/threads/{thread_id}", self._delete_thread)
        r.add_post(base + "/threads/{thread_id}/messages", self._add_message)
        r.add_get(base + "/threads/{thread_id}/messages", self._list_messages)
        r.add_post(base + "/threads/{thread_id}/runs", self._create_run)
        r.add_get(base + "/threads/{thread_id}/runs/{run_id}", self._get_run)
        r.add_post(base + "/threads/{thread_id}/runs/{run_id}/cancel", self._cancel_run)
        r.add_post(base + "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", self._submit)
        r.add_get(base + "/threads/{thread_id}/runs/{run_id}/steps", self._list_steps)

    async def stop_runs(self) -> None:
        for run in self.runs.values():
            if run.task and not run.task.done():
                run.task.cancel()
            async with run.changed:  # streams still open are dropped, as a dying server would
                run.events.append(_DISCONNECT)
                run.changed.notify_all()

    async def wait_run(self, run_id: str, limit: float = 10.0) -> dict[str, Any]:
        """Wait until a run reaches a terminal state (for tests of background runs)."""
        run = self.runs[run_id]
        async with asyncio.timeout(limit):
            async with run.changed:
                await run.changed.wait_for(lambda: run.status in TERMINAL)
        return run.doc

    # -- agents ------------------------------------------------------------------------

    def _create_agent_doc(self, body: dict[str, Any], agent_id: str | None = None) -> dict[str, Any]:
        doc = {
            "id": agent_id or new_id("asst"),
            "object": "assistant",
            "created_at": now(),
            "name": body.get("name"),
            "description": body.get("description"),
            "model": body.get("model"),
            "instructions": body.get("instructions"),
            "tools": [_with_strict(t) for t in body.get("tools") or []],
            "tool_resources": body.get("tool_resources") or {},
            "top_p": body.get("top_p", 1.0),
            "temperature": body.get("temperature", 1.0),
            "response_format": body.get("response_format", "auto"),
            "metadata": body.get("metadata") or {},
        }
        self.agents[doc["id"]] = doc
        return doc

    async def _create_agent(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not body.get("model"):
            return api_error(
                400,
                "Missing required parameter: 'model'.",
                "missing_required_parameter",
                param="model",
            )
        return web.json_response(self._create_agent_doc(body))

    async def _list_agents(self, request: web.Request) -> web.Response:
        return web.json_response(self._page(list(self.agents.values()), request))

    def _agent_or_404(self, agent_id: str) -> dict[str, Any] | web.Response:
        agent = self.agents.get(agent_id)
        return agent if agent else api_error(404, f"No assistant found with id '{agent_id}'.", "not_found")

    async def _get_agent(self, request: web.Request) -> web.Response:
        agent = self._agent_or_404(request.match_info["agent_id"])
        return agent if isinstance(agent, web.Response) else web.json_response(agent)

    async def _update_agent(self, request: web.Request) -> web.Response:
        agent = self._agent_or_404(request.match_info["agent_id"])
        if isinstance(agent, web.Response):
            return agent
        for key, value in request[BODY].items():
            if key in agent and key not in ("id", "object", "created_at"):
                agent[key] = value
        return web.json_response(agent)

    async def _delete_agent(self, request: web.Request) -> web.Response:
        agent_id = request.match_info["agent_id"]
        if self.agents.pop(agent_id, None) is None:
            return api_error(404, f"No assistant found with id '{agent_id}'.", "not_found")
        return web.json_response({"id": agent_id, "object": "assistant.deleted", "deleted": True})

    # -- threads and messages -------------------------------------------------------------

    def _thread_or_404(self, thread_id: str) -> dict[str, Any] | web.Response:
        thread = self.threads.get(thread_id)
        return thread if thread else api_error(404, f"No thread found with id '{thread_id}'.", "not_found")

    async def _create_thread(self, request: web.Request) -> web.Response:
        body = request[BODY]
        thread = {
            "id": new_id("thread"),
            "object": "thread",
            "created_at": now(),
            "metadata": body.get("metadata") or {},
            "tool_resources": body.get("tool_resources") or {},
        }
        self.threads[thread["id"]] = thread
        self.messages[thread["id"]] = []
        for message in body.get("messages") or []:
            problem = self._message_problem(message)
            if problem:
                return api_error(400, problem, "invalid_value")
            self._store_message(thread["id"], message)
        return web.json_response(thread)

    async def _get_thread(self, request: web.Request) -> web.Response:
        thread = self._thread_or_404(request.match_info["thread_id"])
        return thread if isinstance(thread, web.Response) else web.json_response(thread)

    async def _delete_thread(self, request: web.Request) -> web.Response:
        thread_id = request.match_info["thread_id"]
        if self.threads.pop(thread_id, None) is None:
            return api_error(404, f"No thread found with id '{thread_id}'.", "not_found")
        self.messages.pop(thread_id, None)
        return web.json_response({"id": thread_id, "object": "thread.deleted", "deleted": True})

    def _message_problem(self, body: dict[str, Any]) -> str | None:
        if body.get("role") not in ("user", "assistant"):
            return "Invalid value for 'role': expected one of 'user' or 'assistant'."
        content = body.get("content")
        if not isinstance(content, (str, list)) or not content:
            return "Missing required parameter: 'content'."
        for block in content if isinstance(content, list) else []:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image_file":
                problem = self.files.problem((block.get("image_file") or {}).get("file_id"))
                if problem:
                    return problem
            elif kind not in ("text", "image_url"):
                return f"Invalid value for 'content[].type': '{kind}'."
        for attachment in body.get("attachments") or []:
            problem = self.files.problem((attachment or {}).get("file_id"))
            if problem:
                return problem
            tools = [t.get("type") for t in attachment.get("tools") or [] if isinstance(t, dict)]
            if not tools or any(t not in ("code_interpreter", "file_search") for t in tools):
                return "Invalid value for 'attachments[].tools': expected code_interpreter or file_search."
        return None

    def _store_message(
        self,
        thread_id: str,
        body: dict[str, Any],
        *,
        run: Run | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        content = body.get("content", "")
        if isinstance(content, str):
            content = [{"type": "text", "text": {"value": content, "annotations": []}}]
        else:  # input blocks ({"type": "text", "text": "..."}) are stored as the service shows them
            content = [
                {"type": "text", "text": {"value": b["text"], "annotations": []}}
                if b.get("type") == "text" and isinstance(b.get("text"), str)
                else b
                for b in content
            ]
        message: dict[str, Any] = {
            "id": new_id("msg"),
            "object": "thread.message",
            "created_at": now(),
            "assistant_id": agent_id,
            "thread_id": thread_id,
            "run_id": run.id if run else None,
        }
        if run is not None:  # a run's message has a lifecycle; a posted one has none (recorded)
            message.update(
                status="in_progress", incomplete_details=None, incomplete_at=None, completed_at=None
            )
        message.update(
            role=body.get("role", "user"),
            content=content,
            attachments=body.get("attachments") or [],
            metadata=body.get("metadata") or {},
        )
        self.messages[thread_id].append(message)
        return message

    async def _add_message(self, request: web.Request) -> web.Response:
        thread_id = request.match_info["thread_id"]
        thread = self._thread_or_404(thread_id)
        if isinstance(thread, web.Response):
            return thread
        active = self.active_run.get(thread_id)
        if active:
            return api_error(
                400,
                f"Can't add messages to {thread_id} while a run {active} is active.",
                "invalid_request",
            )
        problem = self._message_problem(request[BODY])
        if problem:
            return api_error(400, problem, "invalid_value")
        return web.json_response(self._store_message(thread_id, request[BODY]))

    def _page(self, items: list[dict[str, Any]], request: web.Request) -> dict[str, Any] | web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return api_error(
                400,
                "Invalid 'limit': integer between 1 and 100 expected.",
                "invalid_value",
                param="limit",
            )
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            return api_error(
                400, "Invalid 'order': expected 'asc' or 'desc'.", "invalid_value", param="order"
            )
        ordered = items if order == "asc" else list(reversed(items))
        ids = [item["id"] for item in ordered]
        start, stop = 0, len(ordered)
        if query.get("after"):
            if query["after"] not in ids:
                return api_error(
                    400, f"Invalid 'after': no object with id '{query['after']}'.", "invalid_value"
                )
            start = ids.index(query["after"]) + 1
        if query.get("before"):
            if query["before"] not in ids:
                return api_error(
                    400,
                    f"Invalid 'before': no object with id '{query['before']}'.",
                    "invalid_value",
                )
            stop = ids.index(query["before"])
            start = max(start, stop - limit) if not query.get("after") else start
        window = ordered[start:stop]
        data = window[:limit]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(window) > len(data),
        }

    async def _list_messages(self, request: web.Request) -> web.Response:
        thread_id = request.match_info["thread_id"]
        thread = self._thread_or_404(thread_id)
        if isinstance(thread, web.Response):
            return thread
        items = self.messages[thread_id]
        if request.query.get("run_id"):
            items = [m for m in items if m.get("run_id") == request.query["run_id"]]
        page = self._page(items, request)
        return page if isinstance(page, web.Response) else web.json_response(page)

    # -- runs ---------------------------------------------------------------------------

    def _pending_reject(self, thread_id: str) -> Reject | None:
        """Scripted refusals of a run's creation, taken before the turn is consumed."""
        return self.pending_reject_text(self._last_user_text(thread_id))

    def received_files(self, thread_id: str) -> str:
        """What the last user message gave the agent besides text (``${files}`` in scripts):
        each file as the agent's tools would see it."""
        for message in reversed(self.messages.get(thread_id, [])):
            if message["role"] != "user":
                continue
            seen = [
                ("image", (part.get("image_file") or {}).get("file_id"))
                for part in message["content"]
                if part.get("type") == "image_file"
            ]
            seen += [
                ("+".join(t.get("type", "") for t in a.get("tools") or []), a.get("file_id"))
                for a in message.get("attachments") or []
            ]
            return "; ".join(self.files.describe(file_id, how) for how, file_id in seen) or "no files"
        return "no files"

    def _last_user_text(self, thread_id: str) -> str:
        for message in reversed(self.messages.get(thread_id, [])):
            if message["role"] == "user":
                return "".join(
                    part.get("text", {}).get("value", "")
                    for part in message["content"]
                    if part.get("type") == "text"
                )
        return ""

    async def _create_run(self, request: web.Request) -> web.StreamResponse:
        thread_id = request.match_info["thread_id"]
        body = request[BODY]
        thread = self._thread_or_404(thread_id)
        if isinstance(thread, web.Response):
            return thread
        agent_id = body.get("assistant_id")
        if not agent_id:
            return api_error(
                400,
                "Missing required parameter: 'assistant_id'.",
                "missing_required_parameter",
                param="assistant_id",
            )
        agent = self._agent_or_404(agent_id)
        if isinstance(agent, web.Response):
            return agent
        active = self.active_run.get(thread_id)
        if active:
            return api_error(
                400, f"Thread {thread_id} already has an active run {active}.", "invalid_request"
            )
        reject = self._pending_reject(thread_id)
        if reject is not None:
            return reject_response(reject)
        for message in body.get("additional_messages") or []:
            self._store_message(thread_id, message)
        created = now()
        tools = body["tools"] if body.get("tools") is not None else agent["tools"]
        doc = {
            "id": new_id("run"),
            "object": "thread.run",
            "created_at": created,
            "assistant_id": agent_id,
            "thread_id": thread_id,
            "status": "queued",
            "started_at": None,
            "expires_at": created + self.run_expiry_s,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "required_action": None,
            "last_error": None,
            "model": body.get("model") or agent["model"],
            "instructions": (body.get("instructions") or agent["instructions"] or "")
            + (("\n" + body["additional_instructions"]) if body.get("additional_instructions") else ""),
            "tools": tools,
            # recorded: streamed runs carried an empty code interpreter resource, a polled one {}
            "tool_resources": body.get("tool_resources")
            or agent["tool_resources"]
            or ({"code_interpreter": {"file_ids": []}} if body.get("stream") else {}),
            "metadata": body.get("metadata") or {},
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "truncation_strategy": body.get("truncation_strategy") or {"type": "auto", "last_messages": None},
            "incomplete_details": None,
            "usage": None,
            "response_format": body.get("response_format", "auto"),
            "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
        }
        user_text = self._last_user_text(thread_id)
        run = Run(doc=doc, turn=self.pick_turn(user_text), user_text=user_text, tools=tools)
        self.runs[run.id] = run
        self.active_run[thread_id] = run.id
        run.task = asyncio.create_task(RunWorker(self, run).work())
        if not body.get("stream"):
            return web.json_response(doc)
        return await self._stream(request, run, 0)

    def _run_or_404(self, request: web.Request) -> Run | web.Response:
        thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
        run = self.runs.get(run_id)
        if run is None or run.doc["thread_id"] != thread_id:
            return api_error(404, f"No run found with id '{run_id}'.", "not_found")
        return run

    async def _get_run(self, request: web.Request) -> web.Response:
        run = self._run_or_404(request)
        return run if isinstance(run, web.Response) else web.json_response(run.doc)

    async def _list_steps(self, request: web.Request) -> web.Response:
        run = self._run_or_404(request)
        if isinstance(run, web.Response):
            return run
        steps: dict[str, dict[str, Any]] = {}
        for item in run.events:
            if (
                isinstance(item, tuple)
                and item[0].startswith("thread.run.step.")
                and item[0] != "thread.run.step.delta"
            ):
                steps[item[1]["id"]] = item[1]
        page = self._page(list(steps.values()), request)
        return page if isinstance(page, web.Response) else web.json_response(page)

    async def _cancel_run(self, request: web.Request) -> web.Response:
        run = self._run_or_404(request)
        if isinstance(run, web.Response):
            return run
        if run.status in TERMINAL or run.status == "cancelling":
            return api_error(400, f"Cannot cancel run with status '{run.status}'.", "invalid_request")
        run.cancel_requested = True
        run.doc["status"] = "cancelling"
        if run.outputs is not None and not run.outputs.done():
            run.outputs.cancel()
        return web.json_response(run.doc)

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        run = self._run_or_404(request)
        if isinstance(run, web.Response):
            return run
        if run.status != "requires_action" or run.outputs is None or run.outputs.done():
            return api_error(
                400, f'Runs in status "{run.status}" do not accept tool outputs.', "invalid_request"
            )
        outputs = request[BODY].get("tool_outputs")
        expected = {c["id"] for c in run.doc["required_action"]["submit_tool_outputs"]["tool_calls"]}
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            return api_error(
                400,
                "Missing required parameter: 'tool_outputs'.",
                "missing_required_parameter",
                param="tool_outputs",
            )
        given = {o.get("tool_call_id") for o in outputs}
        if given != expected:
            missing = ", ".join(sorted(expected - given)) or "none"
            return api_error(
                400,
                f"Expected tool outputs for call_ids [{', '.join(sorted(expected))}], missing: {missing}.",
                "invalid_value",
                param="tool_outputs",
            )
        start = len(run.events)
        run.outputs.set_result(outputs)
        if not request[BODY].get("stream"):
            return web.json_response(run.doc)
        return await self._stream(request, run, start)

    # -- the event stream -----------------------------------------------------------------

    async def _stream(self, request: web.Request, run: Run, start: int) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-ms-client-request-id": request.headers.get("x-ms-client-request-id", ""),
            }
        )
        await response.prepare(request)
        newline = "\r\n" if self.crlf else "\n"
        position = start
        try:
            while True:
                async with run.changed:
                    try:
                        await asyncio.wait_for(
                            run.changed.wait_for(lambda seen=position: len(run.events) > seen),
                            timeout=self.keepalive,
                        )
                    except TimeoutError:
                        await response.write(f": keep-alive{newline}{newline}".encode())
                        continue
                    batch = run.events[position:]
                position += len(batch)
                for item in batch:
                    if item is _DISCONNECT:
                        if request.transport is not None:
                            request.transport.abort()
                        return response
                    if item is _PAUSE:
                        await response.write(f"event: done{newline}data: [DONE]{newline}{newline}".encode())
                        await response.write_eof()
                        return response
                    name, payload = item
                    if name == "_raw":
                        await response.write(payload.encode())
                    else:
                        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
                        await response.write(f"event: {name}{newline}data: {data}{newline}{newline}".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            return response  # the client went away; the run goes on


class RunWorker:
    """Plays one run: emits events into ``run.events`` as the real service would."""

    def __init__(self, emulator: ClassicAPI, run: Run) -> None:
        self.em = emulator
        self.run = run
        self.thread_id = run.doc["thread_id"]
        self.message: dict[str, Any] | None = None
        self.step: dict[str, Any] | None = None
        self.outputs: list[str] = []
        self.tokens = 0
        self.annotation_count = 0

    async def emit(self, *items: Any) -> None:
        async with self.run.changed:
            self.run.events.extend(items)
            self.run.changed.notify_all()
        if self.em.listeners:
            thread = self.em.threads.get(self.thread_id) or {}
            for item in items:
                if isinstance(item, tuple) and not item[0].startswith("_"):
                    change = {
                        "kind": "agent",
                        "t": time.monotonic(),
                        "run_id": self.run.id,
                        "thread_id": self.thread_id,
                        "slack": (thread.get("metadata") or {}).get("slack"),
                        "event": item[0],
                    }
                    for listener in list(self.em.listeners):
                        listener(change)

    async def set_status(self, status: str, **fields: Any) -> None:
        self.run.doc["status"] = status
        self.run.doc.update(fields)
        if status in ("completed", "failed", "cancelled", "incomplete"):
            self.run.doc["expires_at"] = None  # an ended run has no deadline (recorded)
        if status in TERMINAL:
            self.em.active_run.pop(self.thread_id, None)
        await self.emit((f"thread.run.{status}", dict(self.run.doc)))

    async def work(self) -> None:
        try:
            await self.emit(("thread.run.created", dict(self.run.doc)))
            await self.set_status("queued")
            await self.set_status("in_progress", started_at=now())
            actions = self.run.turn.actions if self.run.turn else None
            if actions is None:
                await self.default_model()
            else:
                for action in actions:
                    if await self.act(action):
                        return
            await self.finish_message()
            await self.set_status("completed", completed_at=now(), usage=self.usage())
            await self.emit(_PAUSE)
        except _Cancelled:
            await self.finish_message(status="incomplete")
            await self.set_status("cancelled", cancelled_at=now())
            await self.emit(_PAUSE)
        except _Expired:
            await self.set_status("expired")
            await self.emit(_PAUSE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a script must end the run, not hang it
            logger.exception("emulator run worker failed")
            await self.set_status(
                "failed",
                failed_at=now(),
                last_error={"code": "server_error", "message": f"emulator: {exc}"},
            )
            await self.emit(_PAUSE)

    def check_cancel(self) -> None:
        if self.run.cancel_requested:
            raise _Cancelled

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_cancel()
            await asyncio.sleep(min(left, 0.05))
        self.check_cancel()

    async def act(self, action: Action) -> bool:
        """Play one action; True when the run has ended."""
        self.check_cancel()
        kind = action.kind
        script = self.em.script
        if kind == "text":
            text = string.Template(action.text or "").safe_substitute(self.substitutions())
            await self.say(
                text,
                action.deltas or script.deltas,
                script.delay if action.delay is None else action.delay,
            )
        elif kind == "sleep":
            await self.sleep(action.sleep or 0)
        elif kind in ("citation", "file_citation"):
            await self.cite(action)
        elif kind == "file":
            assert action.file is not None
            await self.make_file(action.file)
        elif kind == "tool_calls":
            calls = [(c.name, c.arguments_json()) for c in action.tool_calls or []]
            await self.call_tools(calls, action.fragments)
        elif kind == "fail":
            assert action.fail is not None
            await self.finish_message(status="incomplete")
            await self.set_status(
                "failed",
                failed_at=now(),
                last_error={"code": action.fail.code, "message": action.fail.message},
            )
            await self.emit(_PAUSE)
            return True
        elif kind == "incomplete":
            await self.finish_message(status="incomplete")
            await self.set_status("incomplete", incomplete_details={"reason": action.incomplete})
            await self.emit(_PAUSE)
            return True
        elif kind == "expire":
            await self.finish_message(status="incomplete")
            await self.set_status("expired")
            await self.emit(_PAUSE)
            return True
        elif kind == "disconnect":
            await self.emit(_DISCONNECT)
        elif kind == "error_event":
            assert action.error_event is not None
            await self.emit(
                (
                    "error",
                    {
                        "error": {
                            "code": action.error_event.code,
                            "message": action.error_event.message,
                        }
                    },
                )
            )
        elif kind == "raw":
            await self.emit(("_raw", action.raw))
        return False

    def substitutions(self) -> dict[str, str]:
        subs = output_substitutions(self.outputs)
        subs["files"] = self.em.received_files(self.thread_id)
        return subs

    async def default_model(self) -> None:
        """No script: echo, or call a no-argument function tool that the message names."""
        for tool in self.run.tools:
            function = tool.get("function") or {}
            name = function.get("name")
            if tool.get("type") != "function" or not name:
                continue
            required = (function.get("parameters") or {}).get("required") or []
            if not required and re.search(rf"\b{re.escape(name)}\b", self.run.user_text):
                await self.call_tools([(name, "{}")], 2)
                await self.say(
                    f"`{name}` returned: {self.outputs[0]}",
                    self.em.script.deltas,
                    self.em.script.delay,
                )
                return
        await self.say(f"You said: {self.run.user_text}", self.em.script.deltas, self.em.script.delay)

    async def start_message(self) -> dict[str, Any]:
        if self.message is not None:
            return self.message
        message = self.em._store_message(
            self.thread_id,
            {"role": "assistant", "content": []},
            run=self.run,
            agent_id=self.run.doc["assistant_id"],
        )
        step = self.new_step(
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message["id"]}},
        )
        await self.emit(
            ("thread.run.step.created", dict(step)),
            ("thread.run.step.in_progress", dict(step)),
            ("thread.message.created", copy_json(message)),
            ("thread.message.in_progress", copy_json(message)),
        )
        self.message, self.step = message, step
        return message

    def new_step(self, kind: str, details: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": new_id("step"),
            "object": "thread.run.step",
            "created_at": now(),
            "run_id": self.run.id,
            "assistant_id": self.run.doc["assistant_id"],
            "thread_id": self.thread_id,
            "type": kind,
            "status": "in_progress",
            "cancelled_at": None,
            "completed_at": None,
            "expires_at": self.run.doc["expires_at"],
            "failed_at": None,
            "last_error": None,
            "step_details": details,
            "usage": None,
        }

    def text_part(self) -> dict[str, Any]:
        assert self.message is not None
        if not self.message["content"]:
            self.message["content"].append({"type": "text", "text": {"value": "", "annotations": []}})
        return self.message["content"][0]["text"]

    async def say(self, text: str, deltas: int, delay: float) -> None:
        if not text:
            return
        message = await self.start_message()
        first = not self.text_part()["value"]
        for piece in split_text(text, deltas):
            await self.sleep(delay)
            self.text_part()["value"] += piece
            self.tokens += max(1, len(piece) // 4)
            self.run.text_timeline.append((time.monotonic(), len(self.text_part()["value"])))
            chunk: dict[str, Any] = {"index": 0, "type": "text", "text": {"value": piece}}
            if first:
                chunk["text"]["annotations"] = []
                first = False
            await self.emit(
                (
                    "thread.message.delta",
                    {
                        "id": message["id"],
                        "object": "thread.message.delta",
                        "delta": {"content": [chunk]},
                    },
                )
            )

    async def make_file(self, made: MadeFile) -> None:
        """The code interpreter's output: an ``image_file`` content part, or a link to the file
        in the sandbox with a ``file_path`` annotation (the recorded shapes)."""
        message = await self.start_message()
        stored = self.em.files.add(made.name, made.content())
        if made.image:
            index = len(message["content"])
            message["content"].append({"type": "image_file", "image_file": {"file_id": stored.id}})
            delta = {"index": index, "type": "image_file", "image_file": {"file_id": stored.id}}
        else:
            part = self.text_part()
            link_text, target = f"[{made.name}](", f"sandbox:/mnt/data/{made.name}"
            start = len(part["value"]) + len(link_text)
            annotation = {
                "type": "file_path",
                "text": target,
                "start_index": start,
                "end_index": start + len(target),
                "file_path": {"file_id": stored.id},
            }
            value = f"{link_text}{target})"
            part["value"] += value
            part["annotations"].append(annotation)
            index_of = len(part["annotations"]) - 1
            delta = {
                "index": 0,
                "type": "text",
                "text": {"value": value, "annotations": [{"index": index_of, **annotation}]},
            }
        event = {"id": message["id"], "object": "thread.message.delta", "delta": {"content": [delta]}}
        await self.emit(("thread.message.delta", event))

    async def cite(self, action: Action) -> None:
        message = await self.start_message()
        part = self.text_part()
        self.annotation_count += 1
        marker = f"【{self.annotation_count + 2}:{self.annotation_count - 1}†source】"
        start = len(part["value"])
        annotation: dict[str, Any] = {
            "type": "url_citation" if action.citation else "file_citation",
            "text": marker,
            "start_index": start,
            "end_index": start + len(marker),
        }
        if action.citation:
            annotation["url_citation"] = {
                "url": action.citation.url,
                "title": action.citation.title,
            }
        else:
            assert action.file_citation is not None
            annotation["file_citation"] = {
                "file_id": action.file_citation.file_id,
                "quote": action.file_citation.quote,
            }
        part["value"] += marker
        part["annotations"].append(annotation)
        await self.emit(
            (
                "thread.message.delta",
                {
                    "id": message["id"],
                    "object": "thread.message.delta",
                    "delta": {
                        "content": [
                            {
                                "index": 0,
                                "type": "text",
                                "text": {
                                    "value": marker,
                                    "annotations": [{"index": len(part["annotations"]) - 1, **annotation}],
                                },
                            }
                        ]
                    },
                },
            )
        )

    def usage(self) -> dict[str, Any]:
        prompt = 12 + len(self.run.user_text) // 4
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.tokens,
            "total_tokens": prompt + self.tokens,
            "prompt_token_details": {"cached_tokens": 0},
        }

    async def finish_message(self, status: str = "completed") -> None:
        if self.message is None or self.step is None:
            return
        self.message["status"] = status
        if status == "completed":
            self.message["completed_at"] = now()
        else:
            self.message["incomplete_at"] = now()
        self.step["status"] = "completed" if status == "completed" else "cancelled"
        self.step["completed_at"] = now()
        self.step["usage"] = self.usage()
        await self.emit(
            (f"thread.message.{status}", copy_json(self.message)),
            (f"thread.run.step.{self.step['status']}", dict(self.step)),
        )
        self.message = self.step = None

    async def call_tools(self, calls: list[tuple[str, str]], fragments: int) -> None:
        await self.finish_message()
        tool_calls = [
            {
                "id": new_id("call"),
                "type": "function",
                "function": {"name": name, "arguments": "", "output": None},
            }
            for name, _ in calls
        ]
        # the calls arrive through step deltas: the step starts with none (recorded)
        step = self.new_step("tool_calls", {"type": "tool_calls", "tool_calls": []})
        await self.emit(
            ("thread.run.step.created", copy_json(step)), ("thread.run.step.in_progress", copy_json(step))
        )
        for index, (call, (_, arguments)) in enumerate(zip(tool_calls, calls, strict=True)):
            first = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": "", "output": None},
            }
            await self.emit(_step_delta(step["id"], first))
            for piece in split_text(arguments, fragments):
                await self.sleep(self.em.script.delay)
                await self.emit(
                    _step_delta(
                        step["id"],
                        {"index": index, "type": "function", "function": {"arguments": piece}},
                    )
                )
            call["function"]["arguments"] = arguments
        step["step_details"]["tool_calls"] = copy_json(tool_calls)
        required = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {
                            "name": c["function"]["name"],
                            "arguments": c["function"]["arguments"],
                        },
                    }
                    for c in tool_calls
                ]
            },
        }
        self.run.outputs = asyncio.get_running_loop().create_future()
        self.run.doc["expires_at"] = self.run.doc["created_at"] + self.em.action_expiry_s
        await self.set_status("requires_action", required_action=required)
        await self.emit(_PAUSE)
        try:
            left = self.run.doc["expires_at"] - time.time()
            outputs = await asyncio.wait_for(asyncio.shield(self.run.outputs), max(left, 0))
        except TimeoutError:
            self.run.outputs.cancel()  # outputs submitted from now on are refused
            self.run.doc["required_action"] = None
            raise _Expired from None
        except asyncio.CancelledError:
            if self.run.cancel_requested:
                raise _Cancelled from None
            raise
        by_id = {o.get("tool_call_id"): str(o.get("output", "")) for o in outputs}
        self.outputs = [by_id.get(c["id"], "") for c in tool_calls]
        for call in tool_calls:
            call["function"]["output"] = by_id.get(call["id"], "")
        self.run.doc["required_action"] = None
        # the tool step completes first, then the run is queued again (recorded order)
        step["status"] = "completed"
        step["completed_at"] = now()
        step["step_details"]["tool_calls"] = copy_json(tool_calls)
        step["usage"] = self.usage()
        await self.emit(("thread.run.step.completed", copy_json(step)))
        await self.set_status("queued")
        await self.set_status("in_progress", started_at=now())


def _with_strict(tool: dict[str, Any]) -> dict[str, Any]:
    """The service answers a function tool with ``strict: false`` when none was given (recorded)."""
    if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        return tool
    return {**tool, "function": {**tool["function"], "strict": tool["function"].get("strict", False)}}


def _step_delta(step_id: str, call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (
        "thread.run.step.delta",
        {
            "id": step_id,
            "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
        },
    )
