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
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .agent_script import Action

if TYPE_CHECKING:
    from .agents import AgentServiceEmulator

_END = object()
_DROP = object()


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _err(status: int, message: str, code: str = "invalid_request") -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}},
        status=status,
    )


@dataclass
class _Response:
    doc: dict[str, Any]
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
    def __init__(self, emulator: AgentServiceEmulator) -> None:
        self.em = emulator
        self.agents: dict[str, list[dict[str, Any]]] = {}  # name -> versions
        self.conversations: dict[str, dict[str, Any]] = {}
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.responses: dict[str, _Response] = {}
        self.paused: dict[str, _Paused] = {}  # call_id -> the rest of its turn
        self.create_version(
            "demo-agent",
            {
                "kind": "prompt",
                "model": "gpt-4o-emulated",
                "instructions": "You are a helpful assistant.",
                "tools": [],
            },
        )

    def routes(self, app: web.Application, base: str) -> None:
        r = app.router
        # the project-wide form (agent named in the body) and the agent's own endpoint
        for prefix in (base + "/openai/v1", base + "/agents/{name}/endpoint/protocols/openai"):
            r.add_post(prefix + "/conversations", self._create_conversation)
            r.add_get(prefix + "/conversations/{cid}", self._get_conversation)
            r.add_post(prefix + "/conversations/{cid}/items", self._add_items)
            r.add_get(prefix + "/conversations/{cid}/items", self._list_items)
            r.add_post(prefix + "/responses", self._create_response)
            r.add_get(prefix + "/responses/{rid}", self._get_response)
        r.add_post(base + "/agents/{name}/versions", self._create_version)
        r.add_get(base + "/agents/{name}/versions", self._list_versions)
        r.add_get(base + "/agents/{name}", self._get_agent)

    # -- agents with versions -------------------------------------------------------------

    def create_version(self, name: str, definition: dict[str, Any]) -> dict[str, Any]:
        versions = self.agents.setdefault(name, [])
        doc = {
            "object": "agent.version",
            "id": f"{name}:{len(versions) + 1}",
            "name": name,
            "version": str(len(versions) + 1),
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
        versions = self.agents.get(request.match_info["name"])
        if versions is None:
            return _err(404, f"Agent '{request.match_info['name']}' not found.", "not_found")
        return web.json_response({"object": "list", "data": versions})

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

    async def _add_items(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.items:
            return _err(404, "Conversation not found.", "not_found")
        added = [_as_item(item) for item in (await _body(request)).get("items") or []]
        self.items[cid].extend(added)
        return web.json_response({"object": "list", "data": added})

    async def _list_items(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.items:
            return _err(404, "Conversation not found.", "not_found")
        return web.json_response(
            {"object": "list", "data": list(reversed(self.items[cid])), "has_more": False}
        )

    # -- responses ------------------------------------------------------------------------

    async def _get_response(self, request: web.Request) -> web.Response:
        response = self.responses.get(request.match_info["rid"])
        return web.json_response(response.doc) if response else _err(404, "Response not found.", "not_found")

    async def _create_response(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        name = request.match_info.get("name") or (body.get("agent_reference") or body.get("agent") or {}).get(
            "name"
        )
        agent = self.latest(name) if name else None
        if agent is None:
            return _err(
                404 if name else 400,
                f"Agent '{name}' not found."
                if name
                else "Name the agent: agent_reference {name, type: agent_reference}.",
                "not_found" if name else "invalid_request",
            )
        conversation = body.get("conversation")
        cid = conversation.get("id") if isinstance(conversation, dict) else conversation
        if cid is not None and cid not in self.items:
            return _err(404, f"Conversation '{cid}' not found.", "not_found")
        inputs = body.get("input")
        items = (
            [{"type": "message", "role": "user", "content": inputs}]
            if isinstance(inputs, str)
            else inputs or []
        )
        items = [_as_item(item) for item in items]
        reject = self.em._pending_reject_text(_last_user_text(items))
        if reject is not None:
            from .agents import _reject_response

            return _reject_response(reject)
        history = self.items[cid] if cid else []
        history.extend(items)
        outputs = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
        tools = body.get("tools") or agent["definition"].get("tools") or []
        doc = {
            "id": _id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": agent["definition"].get("model"),
            "output": [],
            "usage": None,
            "error": None,
            "incomplete_details": None,
            "previous_response_id": body.get("previous_response_id"),
            "conversation": {"id": cid} if cid else None,
            "tools": tools,
            "agent": {"name": agent["name"], "version": agent["version"], "type": "agent_id"},
            "metadata": body.get("metadata") or {},
        }
        response = _Response(doc)
        self.responses[doc["id"]] = response
        user_text = _last_user_text(history)
        response.task = asyncio.create_task(
            _Worker(self, response, history, user_text, outputs, agent, tools).work()
        )
        if not body.get("stream"):
            return web.json_response(doc)
        return await self._stream(request, response)

    async def _stream(self, request: web.Request, response: _Response) -> web.StreamResponse:
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
                        if request.transport is not None:
                            request.transport.abort()
                        return out
                    data = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
                    await out.write(f"event: {item['type']}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            return out


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
        turn = self.api.em._pick_turn(self.user_text)
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

    async def act(self, action: Action, rest: list[Action]) -> bool:
        script = self.api.em.script
        kind = action.kind
        if kind == "text":
            subs = {"output": "\n".join(self.subs.values())} | {
                f"output{i}": v for i, v in enumerate(self.subs.values())
            }
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
            part["annotations"].append(annotation)
            await self.emit(
                "response.output_text.annotation.added",
                item_id=self.message["id"],
                output_index=self.index(self.message),
                content_index=0,
                annotation_index=len(part["annotations"]) - 1,
                annotation=annotation,
            )
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
            "id": _id("msg"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [{"type": "output_text", "text": "", "annotations": []}],
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
            part={"type": "output_text", "text": "", "annotations": []},
        )

    async def say(self, text: str, deltas: int, delay: float) -> None:
        from .agents import _split

        await self.open_message()
        assert self.message is not None
        part = self.message["content"][0]
        for piece in _split(text, deltas):
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


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return "".join(
                part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict)
            )
    return ""


async def _body(request: web.Request) -> dict[str, Any]:
    from .agents import BODY

    return request.get(BODY) or {}
