"""Files in the Slack emulator: what people share (downloaded with the bot token from
``url_private_download``) and what the app uploads (``files.getUploadURLExternal``, a POST of
the bytes to the returned URL, ``files.completeUploadExternal``), with Slack's refusals.

Sources (docs/service-contract.md): api.slack.com/types/file (``url_private_download``
needs ``Authorization: Bearer`` with a token that has ``files:read``; without it Slack
answers 200 with its HTML sign-in page, not an error); api.slack.com/methods/
files.getUploadURLExternal and files.completeUploadExternal (errors, ``length``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .streamed import send_bytes

SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
MAX_UPLOAD_BYTES = 1024 * 1024 * 1024  # files.getUploadURLExternal refuses more (file size limit: 1 GB)
CHUNK = 64 * 1024


@dataclass
class StoredFile:
    id: str
    name: str
    mimetype: str
    content: bytes | None  # None: not uploaded yet (an upload URL was handed out)
    user: str
    title: str = ""
    length: int = 0
    created: float = field(default_factory=time.time)
    downloads: int = 0

    @property
    def filetype(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower() if "." in self.name else "binary"


class SlackFiles:
    def __init__(self, team_id: str, token_ok: Callable[[str], bool]) -> None:
        self.team_id = team_id
        self.token_ok = token_ok
        self.files: dict[str, StoredFile] = {}
        self.base_url = ""
        self.largest_read = 0  # the largest single chunk an upload arrived in (memory checks)
        # keep_content=False: an upload keeps its size and digest only (memory measurements)
        self.keep_content = True
        self.digests: dict[str, str] = {}  # file id -> sha256 of what was uploaded

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_post("/upload/v1/{file_id}", self._upload)

    # -- what people share ---------------------------------------------------------------

    def share(self, user: str, name: str, content: bytes, mimetype: str) -> dict[str, Any]:
        """A file a person attached: the object Slack puts in the message's ``files``."""
        stored = StoredFile("F" + secrets.token_hex(5).upper(), name, mimetype, content, user)
        stored.length = len(content)
        self.files[stored.id] = stored
        return self.as_object(stored)

    def as_object(self, stored: StoredFile) -> dict[str, Any]:
        private = f"{self.base_url}/files-pri/{self.team_id}-{stored.id}/download/{stored.name}"
        return {
            "id": stored.id,
            "created": int(stored.created),
            "timestamp": int(stored.created),
            "name": stored.name,
            "title": stored.title or stored.name,
            "mimetype": stored.mimetype,
            "filetype": stored.filetype,
            "user": stored.user,
            "size": stored.length,
            "mode": "hosted",
            "is_external": False,
            "url_private": private.replace("/download/", "/"),
            "url_private_download": private,
        }

    async def _download(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not self.token_ok(token):  # Slack's sign-in page, status 200: the classic trap
            return web.Response(body=SIGN_IN_PAGE, content_type="text/html")
        _, _, file_id = request.match_info["team_file"].partition("-")
        stored = self.files.get(file_id)
        if stored is None or stored.content is None:
            return web.Response(status=404, text="file not found")
        stored.downloads += 1
        return await send_bytes(request, stored.content, stored.mimetype)

    # -- what the app uploads ------------------------------------------------------------

    def get_upload_url(self, params: dict[str, Any], user: str) -> dict[str, Any]:
        name = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except (TypeError, ValueError):
            length = 0
        if not name or length <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        if length > MAX_UPLOAD_BYTES:
            return {"ok": False, "error": "file_too_large"}
        stored = StoredFile("F" + secrets.token_hex(5).upper(), name, "", None, user, length=length)
        self.files[stored.id] = stored
        return {"ok": True, "upload_url": f"{self.base_url}/upload/v1/{stored.id}", "file_id": stored.id}

    async def _upload(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["file_id"])
        if stored is None or stored.content is not None:
            return web.Response(status=404, text="upload URL not found or already used")
        parts: list[bytes] = []
        received = 0
        digest = hashlib.sha256()
        async for chunk in request.content.iter_chunked(CHUNK):
            self.largest_read = max(self.largest_read, len(chunk))
            received += len(chunk)
            if received > stored.length:
                return web.Response(status=413, text="more bytes than the declared length")
            digest.update(chunk)
            if self.keep_content:
                parts.append(chunk)
        if received != stored.length:
            return web.Response(status=400, text=f"expected {stored.length} bytes, got {received}")
        stored.content = b"".join(parts)
        self.digests[stored.id] = digest.hexdigest()
        stored.mimetype = request.content_type if request.content_type != "application/octet-stream" else ""
        return web.Response(text=f"OK - {received}")

    def complete(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The answer, and the file objects to share in the channel (empty on an error)."""
        entries = params.get("files")
        if isinstance(entries, str):
            import json

            try:
                entries = json.loads(entries)
            except ValueError:
                return {"ok": False, "error": "invalid_arguments"}, []
        if not isinstance(entries, list) or not entries:
            return {"ok": False, "error": "invalid_arguments"}, []
        shared: list[dict[str, Any]] = []
        for entry in entries:
            stored = self.files.get(str((entry or {}).get("id", "")))
            if stored is None or stored.content is None:
                return {"ok": False, "error": "file_not_found"}, []
            stored.title = str(entry.get("title") or stored.name)
            shared.append(self.as_object(stored))
        return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shared]}, shared
