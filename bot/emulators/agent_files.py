"""Files in the agent service emulator: uploads for agents to read (``POST /files``,
multipart with ``file`` and ``purpose``), their content and deletion, on the classic route
and on the Responses API's ``/openai/v1/files``; files the agent makes (code interpreter
output) are stored here too, so both download routes serve them.

Sources (docs/service-contract.md): azure-ai-agents 1.1.0 ``FilesOperations``
(``upload``: multipart ``file`` + ``purpose``; ``get_content``, ``delete``); the OpenAI
files API the Responses protocol reuses (``purpose`` in ``assistants``, ``user_data``...);
the 512 MB per-file limit of the Agent Service's files (Foundry quotas and limits).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .agent_state import api_error, new_id
from .streamed import send_bytes

MAX_FILE_BYTES = 512 * 1024 * 1024
PURPOSES = frozenset({"assistants", "assistants_output", "vision", "user_data", "batch", "fine-tune"})
# ("container": how the emulator files what a code interpreter container makes; not uploadable)
CHUNK = 64 * 1024


@dataclass
class AgentFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def doc(self) -> dict[str, Any]:
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": len(self.content),
            "created_at": self.created_at,
            "status": "processed",
            "status_details": None,
        }


class AgentFiles:
    def __init__(self, keep_content: bool = True) -> None:
        # keep_content=False: only the size and a digest are kept (memory measurements)
        self.keep_content = keep_content
        self.received: list[tuple[str, int, str]] = []  # (filename, bytes, sha256) per upload
        self.files: dict[str, AgentFile] = {}
        self.deleted: list[str] = []
        self.largest_read = 0  # the largest piece an upload was read in (memory checks)

    def routes(self, router: web.UrlDispatcher, base: str) -> None:
        for prefix in (base, base + "/openai/v1"):
            router.add_post(prefix + "/files", self._upload)
            router.add_get(prefix + "/files/{file_id}", self._get)
            router.add_get(prefix + "/files/{file_id}/content", self._content)
            router.add_delete(prefix + "/files/{file_id}", self._delete)

    def add(self, filename: str, content: bytes, purpose: str = "assistants_output") -> AgentFile:
        """A file the agent made (code interpreter output), as the service stores it."""
        stored = AgentFile(new_id("assistant"), filename, purpose, content, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def problem(self, file_id: Any) -> str | None:
        """Why a message may not point at this file (None: it may)."""
        if not isinstance(file_id, str) or file_id not in self.files:
            return f"No file found with id '{file_id}'."
        return None

    def describe(self, file_id: str, how: str) -> str:
        """A file as the agent's tools read it: name, size, and a text file's first line."""
        stored = self.files.get(file_id)
        if stored is None:
            return f"{how}: missing {file_id}"
        head = stored.content[:200]
        if how != "image" and head and b"\0" not in head:
            first = head.decode("utf-8", "replace").splitlines()[0] if head.strip() else ""
            return f"{how}: {stored.filename} ({len(stored.content)} bytes, first line {first!r})"
        return f"{how}: {stored.filename} ({len(stored.content)} bytes)"

    async def _upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return api_error(400, "The request must be multipart/form-data with 'file' and 'purpose'.")
        purpose, filename, parts = "", "", []
        size = 0
        digest = hashlib.sha256()
        reader = await request.multipart()
        async for part in reader:
            if part.name == "purpose":
                purpose = (await part.text()).strip()  # type: ignore[union-attr]
            elif part.name == "file":
                filename = part.filename or ""  # type: ignore[union-attr]
                while chunk := await part.read_chunk(CHUNK):  # type: ignore[union-attr]
                    self.largest_read = max(self.largest_read, len(chunk))
                    size += len(chunk)
                    digest.update(chunk)
                    if size > MAX_FILE_BYTES:
                        return api_error(413, f"File is too large: the limit is {MAX_FILE_BYTES} bytes.")
                    if self.keep_content:
                        parts.append(chunk)
        if not filename:
            return api_error(400, "Missing required parameter: 'file'.", param="file")
        if purpose not in PURPOSES:
            return api_error(400, f"Invalid value for 'purpose': '{purpose}'.", param="purpose")
        if size == 0:
            return api_error(400, "The file is empty.", param="file")
        stored = AgentFile(new_id("assistant"), filename, purpose, b"".join(parts), int(time.time()))
        self.files[stored.id] = stored
        self.received.append((filename, size, digest.hexdigest()))
        return web.json_response(stored.doc())

    def _found(self, request: web.Request) -> AgentFile | web.Response:
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return api_error(404, f"No file found with id '{request.match_info['file_id']}'.", "not_found")
        return stored

    async def _get(self, request: web.Request) -> web.Response:
        stored = self._found(request)
        return stored if isinstance(stored, web.Response) else web.json_response(stored.doc())

    async def _content(self, request: web.Request) -> web.StreamResponse:
        stored = self._found(request)
        if isinstance(stored, web.Response):
            return stored
        return await send_bytes(request, stored.content, "application/octet-stream")

    async def _delete(self, request: web.Request) -> web.Response:
        stored = self._found(request)
        if isinstance(stored, web.Response):
            return stored
        del self.files[stored.id]
        self.deleted.append(stored.id)
        return web.json_response({"object": "file", "id": stored.id, "deleted": True})
