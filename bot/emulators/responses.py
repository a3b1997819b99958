"""The agent emulator's second protocol: new Foundry agents over the OpenAI-compatible
Responses API (DESIGN.md 2b), beside the classic threads/runs routes.

Routes (under ``/api/projects/<project>``): ``/openai/v1/conversations`` (+ items),
``/openai/v1/responses`` (agent named by ``agent_reference`` in the body), the agent's own
endpoint ``/agents/<name>/endpoint/protocols/openai/responses``, and named, versioned
agents at ``/agents/<name>`` and ``/agents/<name>/versions``. Streams are SSE with
``event: <type>`` and a ``sequence_number`` in every event, and no ``[DONE]``. The same
scripts drive it as drive the classic routes.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .agent_script import Action, output_substitutions
from .agent_state import BODY, AgentEmulatorState, reject_response, split_text
from .streamed import send_bytes

_END = object()
_DROP = object()

# DESIGN.md 2b: with an agent named, the model, its instructions and its tools come from
# the agent version; the service refuses these per request (400 invalid_payload).
AGENT_OWNED = ("tools", "tool_choice", "parallel_tool_calls", "model", "instructions", "response_format")
NOT_ALLOWED = "Not allowed when agent is specified."
VERSIONS_PAGE = 20  # the version list's default page size (azure-ai-projects list_versions)


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _err(
    status: int, message: str, code: str | None = "invalid_request", *, param: str | None = None
) -> web.Response:
    # the shape the service answers with (microsoft/agent-framework#5130 quotes one)
    error = {
        "code": code,
        "message": message,
        "param": param,
        "type": "invalid_request_error",
        "details": [],
        "additionalInfo": {"request_id": secrets.token_hex(16)},
    }
    return web.json_response({"error": error}, status=status)


@dataclass
class _Response:
    doc: dict[str, Any]
    background: bool = False
    events: list[Any] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    text_timeline: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, chars so far)


@dataclass
class _Paused:
    """A scripted turn waiting for function outputs."""

    actions: list[Action]
    call_ids: list[str]
    agent: dict[str, Any]
    tools: list[dict[str, Any]]


class ResponsesAPI:
    def __init__(self, emulator: AgentEmulatorState, *, context_limit_chars: int | None = None) -> None:
        self.em = emulator
        self.context_limit_chars = context_limit_chars  # None: no context window to outgrow
        self.agents: dict[str, list[dict[str, Any]]] = {}  # name -> versions
        self.conversations: dict[str, dict[str, Any]] = {}
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.responses: dict[str, _Response] = {}
        self.paused: dict[str, _Paused] = {}  # call_id -> the rest of its turn
        self.containers: dict[str, str] = {}  # response id -> its code interpreter container
        self.container_files: dict[tuple[str, str], str] = {}  # (container, file) -> stored file
        self.create_version(
            "demo-agent",
            {
                "kind": "prompt",
                "model": "gpt-4o-emulated",
                "instructions": "You are a helpful assistant.",
                "tools": [],
            },
        )

    async def _container_file(self, request: web.Request) -> web.StreamResponse:
        """A code interpreter container's file (``GET /containers/{c}/files/{f}/content``)."""
        key = (request.match_info["cid"], request.match_info["fid"])
        stored = self.em.files.files.get(self.container_files.get(key, ""))
        if stored is None:
            return _err(404, f"No file '{key[1]}' in container '{key[0]}'.", "not_found")
        return await send_bytes(request, stored.content, "application/octet-stream")

    def _file_problem(self, items: list[dict[str, Any]]) -> str | None:
        """An ``input_image`` / ``input_file`` must name an uploaded file; only those and text
        are accepted from a person."""
        for item in items:
            if item.get("type") != "message":
                continue
            for part in item.get("content") or []:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("input_image", "input_file") and not part.get("image_url"):
                    problem = self.em.files.problem(part.get("file_id"))
                    if problem:
                        return problem
                elif kind not in ("input_text", "output_text", "input_image", "input_file"):
                    return f"Invalid value for 'input[].content[].type': '{kind}'."
        return None

    def routes(self, app: web.Application, base: str) -> None:
        r = app.router
        # the project-wide form (agent named in the body) and the agent's own endpoint
        for prefix in (base + "/openai/v1", base + "/agents/{name}/endpoint/protocols/openai"):
            r.add_post(prefix + "/conversations", self._create_conversation)
            r.add_get(prefix + "/conversations/{cid}", self._get_conversation)
            r.add_delete(prefix + "/conversations/{cid}", self._delete_conversation)
            r.add_post(prefix + "/conversations/{cid}/items", self._add_items)
            r.add_get(prefix + "/conversations/{cid}/items", self._list_items)
            r.add_post(prefix + "/responses", self._create_response)
            r.add_get(prefix + "/responses/{rid}", self._get_response)
            r.add_post(prefix + "/responses/{rid}/cancel", self._cancel_response)
        r.add_get(base + "/openai/v1/containers/{cid}/files/{fid}/content", self._container_file)
        r.add_post(base + "/agents/{name}/versions", self._create_version)
        r.add_get(base + "/agents/{name}/versions", self._list_versions)
        r.add_get(base + "/agents/{name}/versions/{version}", self._get_version)
        r.add_get(base + "/agents/{name}", self._get_agent)

    # -- agents with versions -------------------------------------------------------------

    def create_version(self, name: str, definition: dict[str, Any]) -> dict[str, Any]:
        versions = self.agents.setdefault(name, [])
        doc = {  # the recorded shape (tests/fixtures/recordings/responses_prompt_agent_streaming.json)
            "metadata": {},
            "object": "agent.version",
            "id": f"{name}:{len(versions) + 1}",
            "name": name,
            "version": str(len(versions) + 1),
            "description": "",
            "created_at": int(time.time()),
            "definition": definition,
        }
        versions.append(doc)
        return doc

    def latest(self, name: str) -> dict[str, Any] | None:
        versions = self.agents.get(name)
        return versions[-1] if versions else None

    async def _create_version(self, request: web.Request) -> web.Response:
        body = await request.json()
        definition = body.get("definition")
        if not isinstance(definition, dict) or not definition.get("model"):
            return _err(400, "definition.model is required")
        return web.json_response(self.create_version(request.match_info["name"], definition))

    async def _list_versions(self, request: web.Request) -> web.Response:
        """Paged like every list of the service: ``limit`` (20 by default), ``order``, ``after``."""
        versions = self.agents.get(request.match_info["name"])
        if versions is None:
            return _err(404, f"Agent '{request.match_info['name']}' not found.", "not_found")
        try:
            limit = int(request.query.get("limit", VERSIONS_PAGE))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _err(400, "Invalid 'limit': integer between 1 and 100 expected.", "invalid_value")
        ordered = list(reversed(versions)) if request.query.get("order", "desc") == "desc" else list(versions)
        start = 0
        if request.query.get("after"):
            ids = [v["id"] for v in ordered]
            if request.query["after"] not in ids:
                return _err(
                    400, f"Invalid 'after': no object with id '{request.query['after']}'.", "invalid_value"
                )
            start = ids.index(request.query["after"]) + 1
        data = ordered[start : start + limit]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start + limit < len(ordered),
            }
        )

    async def _get_version(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info["version"]
        found = next((v for v in self.agents.get(name) or [] if v["version"] == version), None)
        if found is None:
            return _err(404, f"Agent '{name}' version '{version}' not found.", "not_found")
        return web.json_response(found)

    async def _get_agent(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        latest = self.latest(name)
        if latest is None:
            return _err(404, f"Agent '{name}' not found.", "not_found")
        return web.json_response(
            {"object": "agent", "id": name, "name": name, "versions": {"latest": latest}}
        )

    # -- conversations --------------------------------------------------------------------

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await _body(request)
        cid = _id("conv")
        doc = {
            "id": cid,
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": body.get("metadata") or {},
        }
        self.conversations[cid] = doc
        self.items[cid] = []
        for item in body.get("items") or []:
            self.items[cid].append(_as_item(item))
        return web.json_response(doc)

    async def _get_conversation(self, request: web.Request) -> web.Response:
        doc = self.conversations.get(request.match_info["cid"])
        return web.json_response(doc) if doc else _err(404, "Conversation not found.", "not_found")

    async def _delete_conversation(self, request: web.Request) -> web.Response:
        """``DELETE /conversations/{id}``: ``conversation.deleted`` (openai's
        ``ConversationDeletedResource``); an unknown id is 404."""
        cid = request.match_info["cid"]
        if self.conversations.pop(cid, None) is None:
            return _err(404, "Conversation not found.", "not_found")
        self.items.pop(cid, None)
        return web.json_response({"id": cid, "object": "conversation.deleted", "deleted": True})

    async def _add_items(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.items:
            return _err(404, "Conversation not found.", "not_found")
        added = [_as_item(item) for item in (await _body(request)).get("items") or []]
        problem = _orphan_output(self.items[cid], added)
        if problem:
            return _err(400, problem, None, param="items")
        self.items[cid].extend(added)
        return web.json_response({"object": "list", "data": added})

    async def _list_items(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.items:
            return _err(404, "Conversation not found.", "not_found")
        items = self.items[cid] if request.query.get("order") == "asc" else list(reversed(self.items[cid]))
        limit = int(request.query.get("limit", "20"))
        data = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(items) > limit,
            }
        )

    # -- responses ------------------------------------------------------------------------

    async def _get_response(self, request: web.Request) -> web.StreamResponse:
        response = self.responses.get(request.match_info["rid"])
        if response is None:
            return _err(404, "Response not found.", "not_found")
        if request.query.get("stream") != "true":
            return web.json_response(response.doc)
        if not response.background:  # only background responses can be streamed again
            return _err(
                400, "This response cannot be streamed because it was not created with background=true.", None
            )
        try:
            after = int(request.query.get("starting_after", "-1"))
        except ValueError:
            return _err(400, "Invalid 'starting_after': integer expected.", "invalid_value")
        return await self._stream(request, response, after)

    async def _cancel_response(self, request: web.Request) -> web.Response:
        response = self.responses.get(request.match_info["rid"])
        if response is None:
            return _err(404, "Response not found.", "not_found")
        if not response.background:
            return _err(400, "Cannot cancel a synchronous response.", None)
        if response.doc["status"] in ("queued", "in_progress"):
            if response.task is not None:
                response.task.cancel()
            response.doc["status"] = "cancelled"
            self._answer_cancelled(response)
            async with response.changed:
                response.events.append(_END)
                response.changed.notify_all()
        return web.json_response(response.doc)

    def _answer_cancelled(self, response: _Response) -> None:
        """Function calls of a cancelled response are not waiting for outputs any more."""
        for item in response.doc.get("output") or []:
            if item.get("type") == "function_call":
                self.paused.pop(item.get("call_id"), None)

    def _refusal(self, body: dict[str, Any], agent_named: bool) -> web.Response | None:
        if agent_named:
            text = body.get("text")
            if isinstance(text, dict) and "format" in text:
                return _err(400, NOT_ALLOWED, "invalid_payload", param="text.format")
            for key in AGENT_OWNED:
                if body.get(key) is not None:
                    return _err(400, NOT_ALLOWED, "invalid_payload", param=key)
        if body.get("background") and body.get("store") is False:
            return _err(400, "Background mode requires store=true.", None, param="background")
        if body.get("truncation") not in (None, "auto", "disabled"):
            return _err(400, "Invalid 'truncation': expected 'auto' or 'disabled'.", "invalid_value")
        return None

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        name = request.match_info.get("name") or (body.get("agent_reference") or body.get("agent") or {}).get(
            "name"
        )
        refusal = self._refusal(body, bool(name))
        if refusal is not None:
            return refusal
        agent = self._agent_version(name, (body.get("agent_reference") or {}).get("version"))
        if isinstance(agent, web.Response):
            return agent
        conversation = body.get("conversation")
        cid = conversation.get("id") if isinstance(conversation, dict) else conversation
        if cid is not None and cid not in self.items:
            return _err(404, f"Conversation '{cid}' not found.", "not_found")
        if cid is not None and self._operating_on(cid):
            return _err(
                400,
                "Another process is currently operating on this conversation. Please retry in a few seconds.",
                "conversation_locked",
                param="conversation",
            )
        inputs = body.get("input")
        items = (
            [{"type": "message", "role": "user", "content": inputs}]
            if isinstance(inputs, str)
            else inputs or []
        )
        items = [_as_item(item) for item in items]
        history = self.items[cid] if cid else []
        problem = (
            _orphan_output(history, items) or _unanswered_call(history, items) or self._file_problem(items)
        )
        if problem:
            return _err(400, problem, None, param="input")
        reject = self.em.pending_reject_text(_last_user_text(items))
        if reject is not None:
            return reject_response(reject)
        overflow = self._context_overflow(history, items, body.get("truncation") == "auto")
        if overflow is not None:
            return overflow
        history.extend(items)
        outputs = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
        approvals = {
            i["approval_request_id"]: bool(i.get("approve"))
            for i in items
            if i.get("type") == "mcp_approval_response"
        }
        response = self._new_response(body, agent, cid)
        user_text = _last_user_text(history)
        tools = agent["definition"].get("tools") or []
        response.task = asyncio.create_task(
            _Worker(
                self, response, history, user_text, {**outputs, **_approval_outputs(approvals)}, agent, tools
            ).work()
        )
        if not body.get("stream"):
            return web.json_response(response.doc)
        return await self._stream(request, response, -1)

    def _agent_version(self, name: str | None, version: str | None) -> dict[str, Any] | web.Response:
        if not name:
            return _err(400, "Name the agent: agent_reference {name, type: agent_reference}.")
        if version:
            found = next((v for v in self.agents.get(name) or [] if v["version"] == str(version)), None)
        else:
            found = self.latest(name)
        if found is None:
            return _err(
                404, f"Agent '{name}'{f' version {version}' if version else ''} not found.", "not_found"
            )
        return found

    def _context_overflow(
        self, history: list[dict[str, Any]], items: list[dict[str, Any]], truncate: bool
    ) -> web.Response | None:
        """``truncation: disabled`` (the default) refuses a conversation past the context window."""
        limit = self.context_limit_chars
        if limit is None:
            return None
        size = sum(len(json.dumps(i)) for i in history + items)
        if size <= limit:
            return None
        if truncate:
            while history and size > limit:
                size -= len(json.dumps(history.pop(0)))
            return None
        return _err(
            400,
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            "context_length_exceeded",
            param="input",
        )

    def _operating_on(self, cid: str) -> bool:
        """A response of this conversation is still queued or running (one at a time)."""
        return any(
            (r.doc.get("conversation") or {}).get("id") == cid
            and r.doc["status"] in ("queued", "in_progress")
            for r in self.responses.values()
        )

    def _new_response(self, body: dict[str, Any], agent: dict[str, Any], cid: str | None) -> _Response:
        background = bool(body.get("background"))
        definition = agent["definition"]
        # the fields and their order as the service sends them (tests/fixtures/recordings)
        doc = {
            "id": _id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "queued" if background else "in_progress",
            "background": background,
            "completed_at": None,
            "content_filters": None,
            "conversation": {"id": cid} if cid else None,
            "error": None,
            "incomplete_details": None,
            "instructions": definition.get("instructions"),
            "max_output_tokens": None,
            "max_tool_calls": None,
            "model": definition.get("model"),
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": None,
            "prompt_cache_retention": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "auto",
            "store": body.get("store", True),
            "temperature": definition.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": None,
            "tools": definition.get("tools") or [],
            "top_logprobs": 0,
            "top_p": definition.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": None,
            "user": None,
            "metadata": body.get("metadata") or {},
            "agent": {"type": "agent_id", "name": agent["name"], "version": agent["version"]},
        }
        response = _Response(doc, background=background)
        self.responses[doc["id"]] = response
        return response

    async def _stream(self, request: web.Request, response: _Response, after: int) -> web.StreamResponse:
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await out.prepare(request)
        position = 0
        try:
            while True:
                async with response.changed:
                    await response.changed.wait_for(lambda seen=position: len(response.events) > seen)
                    batch = response.events[position:]
                position += len(batch)
                for item in batch:
                    if item is _END:
                        await out.write_eof()
                        return out
                    if item is _DROP:
                        if after >= 0:  # a resumed stream: the drop was the old connection's
                            continue
                        if request.transport is not None:
                            request.transport.abort()
                        return out
                    if item["sequence_number"] <= after:
                        continue
                    data = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
                    await out.write(f"event: {item['type']}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            return out


def _obfuscation(piece: str) -> str:
    """Random padding the service adds to each delta so every event has about the same size."""
    return secrets.token_urlsafe(16)[: max(4, 16 - len(piece))]


def _content_filters(prompt_chars: int, completion_chars: int) -> list[dict[str, Any]]:
    safe = {"filtered": False, "severity": "safe"}
    return [
        {
            "blocked": False,
            "source_type": "prompt",
            "content_filter_raw": None,
            "content_filter_results": {
                "jailbreak": {"filtered": False, "detected": False},
                "sexual": safe,
                "violence": safe,
                "self_harm": safe,
                "hate": safe,
            },
            "content_filter_offsets": {"start_offset": 0, "end_offset": prompt_chars, "check_offset": 0},
        },
        {
            "blocked": False,
            "source_type": "completion",
            "content_filter_raw": None,
            "content_filter_results": {
                "self_harm": safe,
                "hate": safe,
                "sexual": safe,
                "violence": safe,
                "protected_material_text": {"filtered": False, "detected": False},
                "protected_material_code": {"filtered": False, "detected": False},
            },
            "content_filter_offsets": {"start_offset": 0, "end_offset": completion_chars, "check_offset": 0},
        },
    ]


def _orphan_output(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> str | None:
    calls = {i.get("call_id") for i in history + items if i.get("type") == "function_call"}
    for item in items:
        if item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            return f"No tool call found for function call output with call_id {item.get('call_id')}."
    return None


def _unanswered_call(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> str | None:
    """A new response in a conversation holding a function call without its output fails."""
    answered = {i.get("call_id") for i in history + items if i.get("type") == "function_call_output"}
    for item in history:
        if item.get("type") == "function_call" and item.get("call_id") not in answered:
            return f"No tool output found for function call {item.get('call_id')}."
    return None


def _approval_outputs(approvals: dict[str, bool]) -> dict[str, str]:
    return {key: "approved" if approve else "denied" for key, approve in approvals.items()}


class _Worker:
    """Plays one response: its events in order, as the service streams them."""

    def __init__(
        self,
        api: ResponsesAPI,
        response: _Response,
        history: list[dict[str, Any]],
        user_text: str,
        outputs: dict[str, str],
        agent: dict[str, Any],
        tools: list[dict[str, Any]],
    ) -> None:
        self.api = api
        self.r = response
        self.history = history
        self.user_text = user_text
        self.outputs = outputs
        self.agent = agent
        self.tools = tools
        self.seq = 0
        self.message: dict[str, Any] | None = None
        self.tokens = 0

    async def emit(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        async with self.r.changed:
            self.r.events.append(event)
            self.r.changed.notify_all()
        if self.api.em.listeners:  # the playground's timeline
            conversation = (self.r.doc.get("conversation") or {}).get("id")
            metadata = (self.api.conversations.get(conversation or "") or {}).get("metadata") or {}
            change = {
                "kind": "agent",
                "t": time.monotonic(),
                "run_id": self.r.doc["id"],
                "thread_id": conversation,
                "slack": metadata.get("slack"),
                "event": kind,
            }
            for listener in list(self.api.em.listeners):
                listener(change)

    async def mark(self, marker: object) -> None:
        async with self.r.changed:
            self.r.events.append(marker)
            self.r.changed.notify_all()

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.r.doc))

    async def work(self) -> None:
        await self.emit("response.created", response=self.snapshot())
        self.r.doc["status"] = "in_progress"
        await self.emit("response.in_progress", response=self.snapshot())
        actions = self._actions()
        try:
            ended = False
            for index, action in enumerate(actions):
                if await self.act(action, actions[index + 1 :]):
                    ended = True
                    break
            if not ended:
                await self.close_message()
                await self.finish("completed")
        except Exception as exc:  # a script bug ends the response, never hangs it
            self.r.doc["error"] = {"code": "server_error", "message": f"emulator: {exc}"}
            await self.finish("failed")

    def _actions(self) -> list[Action]:
        resumed = [
            self.api.paused.pop(call_id) for call_id in list(self.outputs) if call_id in self.api.paused
        ]
        if resumed:
            self.subs = self.outputs
            return resumed[0].actions
        self.subs = {}
        turn = self.api.em.pick_turn(self.user_text)
        if turn is not None:
            return list(turn.actions)
        for tool in self.tools:  # no script: echo, or call a no-argument function the message names
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            params = tool.get("parameters") or (tool.get("function") or {}).get("parameters") or {}
            if (
                tool.get("type") == "function"
                and name
                and not params.get("required")
                and re.search(rf"\b{re.escape(name)}\b", self.user_text)
            ):
                return [
                    Action(tool_calls=[{"name": name, "arguments": {}}], fragments=2),
                    Action(text=f"`{name}` returned: ${{output}}"),
                ]
        return [Action(text=f"You said: {self.user_text}")]

    async def make_file(self, made: Any) -> None:
        """The code interpreter wrote a file in its container: the reply links it and a
        ``container_file_citation`` annotation names the container and the file."""
        container = self.api.containers.setdefault(self.r.doc["id"], _id("cntr"))
        stored = self.api.em.files.add(made.name, made.content(), purpose="container")
        self.api.container_files[(container, stored.id)] = stored.id
        link = f"[{made.name}](sandbox:/mnt/data/{made.name})"
        await self.say(link, 1, 0)
        assert self.message is not None
        part = self.message["content"][0]
        annotation = {
            "type": "container_file_citation",
            "container_id": container,
            "file_id": stored.id,
            "filename": made.name,
            "start_index": len(part["text"]) - len(link),
            "end_index": len(part["text"]),
        }
        await self.annotate(annotation)

    async def annotate(self, annotation: dict[str, Any]) -> None:
        """Add an annotation to the open message's text, and say so on the stream."""
        assert self.message is not None
        part = self.message["content"][0]
        part["annotations"].append(annotation)
        await self.emit(
            "response.output_text.annotation.added",
            item_id=self.message["id"],
            output_index=self.index(self.message),
            content_index=0,
            annotation_index=len(part["annotations"]) - 1,
            annotation=annotation,
        )

    async def act(self, action: Action, rest: list[Action]) -> bool:
        script = self.api.em.script
        kind = action.kind
        if kind == "text":
            subs = output_substitutions(list(self.subs.values()))
            subs["files"] = _received_files(self.history, self.api.em.files)
            text = string.Template(action.text or "").safe_substitute(subs)
            await self.say(
                text, action.deltas or script.deltas, script.delay if action.delay is None else action.delay
            )
        elif kind == "sleep":
            await asyncio.sleep(action.sleep or 0)
        elif kind == "citation":
            assert action.citation is not None
            await self.open_message()
            assert self.message is not None
            part = self.message["content"][0]
            annotation = {
                "type": "url_citation",
                "url": action.citation.url,
                "title": action.citation.title,
                "start_index": len(part["text"]),
                "end_index": len(part["text"]),
            }
            await self.annotate(annotation)
        elif kind == "file":
            assert action.file is not None
            await self.make_file(action.file)
        elif kind == "tool_calls":
            await self.close_message()
            call_ids = []
            for call in action.tool_calls or []:
                arguments = call.arguments_json()
                item = {
                    "id": _id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": _id("call"),
                    "name": call.name,
                    "arguments": "",
                }
                self.r.doc["output"].append(item)
                index = self.index(item)
                await self.emit("response.output_item.added", output_index=index, item=dict(item))
                step = max(1, -(-len(arguments) // action.fragments))
                for start in range(0, len(arguments), step):
                    await asyncio.sleep(script.delay)
                    await self.emit(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=arguments[start : start + step],
                        obfuscation=_obfuscation(arguments[start : start + step]),
                    )
                item["arguments"], item["status"] = arguments, "completed"
                await self.emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=arguments,
                )
                await self.emit("response.output_item.done", output_index=index, item=dict(item))
                self.history.append(dict(item))
                call_ids.append(item["call_id"])
            paused = _Paused(list(rest), call_ids, self.agent, self.tools)
            for call_id in call_ids:
                self.api.paused[call_id] = paused
            await self.finish("completed")  # the caller answers with function_call_output items
            return True
        elif kind == "mcp_approval":
            assert action.mcp_approval is not None
            await self.close_message()
            request = action.mcp_approval
            arguments = (
                request.arguments if isinstance(request.arguments, str) else json.dumps(request.arguments)
            )
            item = {
                "id": _id("mcpr"),
                "type": "mcp_approval_request",
                "server_label": request.server_label,
                "name": request.name,
                "arguments": arguments,
            }
            self.r.doc["output"].append(item)
            index = self.index(item)
            await self.emit("response.output_item.added", output_index=index, item=dict(item))
            await self.emit("response.output_item.done", output_index=index, item=dict(item))
            self.history.append(dict(item))
            self.api.paused[item["id"]] = _Paused(list(rest), [item["id"]], self.agent, self.tools)
            await self.finish("completed")
            return True
        elif kind == "fail":
            assert action.fail is not None
            await self.close_message()
            self.r.doc["error"] = {"code": action.fail.code, "message": action.fail.message}
            await self.finish("failed")
            return True
        elif kind == "incomplete":
            await self.close_message()
            self.r.doc["incomplete_details"] = {"reason": action.incomplete}
            await self.finish("incomplete")
            return True
        elif kind == "disconnect":
            await self.mark(_DROP)
        elif kind == "error_event":
            assert action.error_event is not None
            await self.emit(
                "error", code=action.error_event.code, message=action.error_event.message, param=None
            )
        return False

    def index(self, item: dict[str, Any]) -> int:
        return next(i for i, it in enumerate(self.r.doc["output"]) if it is item)

    async def open_message(self) -> None:
        if self.message is not None:
            return
        self.message = {
            "type": "message",
            "id": _id("msg"),
            "created_by": {"agent": dict(self.r.doc["agent"])},
            "status": "in_progress",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}],
        }
        self.r.doc["output"].append(self.message)
        index = self.index(self.message)
        shell = {**self.message, "content": []}
        await self.emit("response.output_item.added", output_index=index, item=shell)
        await self.emit(
            "response.content_part.added",
            item_id=self.message["id"],
            output_index=index,
            content_index=0,
            part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        )

    async def say(self, text: str, deltas: int, delay: float) -> None:
        await self.open_message()
        assert self.message is not None
        part = self.message["content"][0]
        for piece in split_text(text, deltas):
            await asyncio.sleep(delay)
            part["text"] += piece
            self.tokens += max(1, len(piece) // 4)
            self.r.text_timeline.append((time.monotonic(), len(part["text"])))
            await self.emit(
                "response.output_text.delta",
                item_id=self.message["id"],
                output_index=self.index(self.message),
                content_index=0,
                delta=piece,
                logprobs=[],
                obfuscation=_obfuscation(piece),
            )

    async def close_message(self) -> None:
        if self.message is None:
            return
        message, self.message = self.message, None
        message["status"] = "completed"
        index = self.index(message)
        part = message["content"][0]
        await self.emit(
            "response.output_text.done",
            item_id=message["id"],
            output_index=index,
            content_index=0,
            text=part["text"],
            logprobs=[],
        )
        await self.emit(
            "response.content_part.done",
            item_id=message["id"],
            output_index=index,
            content_index=0,
            part=dict(part),
        )
        await self.emit("response.output_item.done", output_index=index, item=json.loads(json.dumps(message)))
        self.history.append(json.loads(json.dumps(message)))

    async def finish(self, status: str) -> None:
        self.r.doc["status"] = status
        self.r.doc["completed_at"] = int(time.time()) if status == "completed" else None
        self.r.doc["service_tier"] = "default"
        self.r.doc["content_filters"] = _content_filters(len(self.user_text), self.tokens)
        prompt = 12 + len(self.user_text) // 4
        self.r.doc["usage"] = {
            "input_tokens": prompt,
            "output_tokens": self.tokens,
            "total_tokens": prompt + self.tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        await self.emit(f"response.{status}", response=self.snapshot())
        await self.mark(_END)


def _as_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": str(item)}]}
    item = dict(item)
    item.setdefault("id", _id("fco" if item.get("type") == "function_call_output" else "msg"))
    if item.get("type") in (None, "message"):
        item["type"] = "message"
        content = item.get("content")
        if isinstance(content, str):
            item["content"] = [
                {"type": "input_text" if item.get("role") == "user" else "output_text", "text": content}
            ]
    return item


def _received_files(history: list[dict[str, Any]], files: Any) -> str:
    """What the last user message gave the agent besides text (``${files}`` in scripts)."""
    for item in reversed(history):
        if item.get("type") == "message" and item.get("role") == "user":
            seen = [
                ("image" if part.get("type") == "input_image" else "input_file", part.get("file_id"))
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") in ("input_image", "input_file")
            ]
            return "; ".join(files.describe(file_id, how) for how, file_id in seen) or "no files"
    return "no files"


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return "".join(
                part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict)
            )
    return ""


async def _body(request: web.Request) -> dict[str, Any]:
    return request.get(BODY) or {}
