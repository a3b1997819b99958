"""What the agent service emulator's two protocols share: the scripted "model", the
request log and injected faults, listeners (the playground's timeline), and the error
shapes. The classic routes (``agents.py``) and the Responses routes (``responses.py``) both
build on this module; it imports neither.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .agent_script import Reject, Script, Turn

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
BODY = web.RequestKey("body", dict)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def api_error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def reject_response(reject: Reject) -> web.Response:
    headers: dict[str, str] = {}
    if reject.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(reject.retry_after)))
        headers["retry-after-ms"] = str(int(reject.retry_after * 1000))
    defaults = {429: ("rate_limit_exceeded", "Rate limit is exceeded. Try again later.")}
    code, message = defaults.get(reject.status, ("server_error", "The server had an error."))
    return api_error(reject.status, reject.message or message, reject.code or code, headers=headers)


@dataclass
class Fault:
    """An injected failure for requests that match ``method`` and ``path`` (fnmatch)."""

    method: str
    path: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    body: str | None = None
    content_type: str | None = None
    message: str | None = None

    def response(self) -> web.Response:
        if self.body is not None:
            headers = {}
            if self.retry_after is not None:
                headers["retry-after-ms"] = str(int(self.retry_after * 1000))
            return web.Response(
                status=self.status,
                text=self.body,
                headers=headers,
                content_type=self.content_type or "text/plain",
            )
        return reject_response(Reject(status=self.status, message=self.message, retry_after=self.retry_after))


def copy_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def split_text(text: str, parts: int) -> list[str]:
    """Cut text into about ``parts`` pieces at word boundaries where possible."""
    if parts <= 1 or len(text) <= 1:
        return [text] if text else []
    words = re.findall(r"\S+\s*|\s+", text)
    if len(words) < parts:
        size = math.ceil(len(text) / parts)
        return [text[i : i + size] for i in range(0, len(text), size)]
    per = math.ceil(len(words) / parts)
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


class AgentEmulatorState:
    """The part of the emulator both protocols read and write."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body) seen
        self.request_log: list[dict[str, Any]] = []  # the same, with query and headers
        self.connections: set[Any] = set()  # client (host, port) pairs requests came on
        self.faults: list[Fault] = []
        from .agent_files import AgentFiles  # (it uses this module's error helpers)

        self.files = AgentFiles()  # uploads, and what the agent makes
        self.listeners: list[Any] = []  # callables taking one dict per agent event, as emitted
        self._used_turns: set[int] = set()
        self._rejects_left: dict[int, list[Reject]] = {}

    def pick_turn(self, user_text: str) -> Turn | None:
        for index, turn in enumerate(self.script.turns):
            if index in self._used_turns and not turn.repeat:
                continue
            if turn.matches(user_text):
                if not turn.repeat:
                    self._used_turns.add(index)
                return turn
        return None

    def pending_reject_text(self, user_text: str) -> Reject | None:
        for index, turn in enumerate(self.script.turns):
            if (index in self._used_turns and not turn.repeat) or not turn.matches(user_text):
                continue
            rejects = self._rejects_left.setdefault(index, list(turn.reject))
            return rejects.pop(0) if rejects else None
        return None
