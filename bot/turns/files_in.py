"""Files people share with a message, given to the agent: images to look at, data for the
code interpreter, documents for file search. Each is size-checked before it is downloaded,
streamed from Slack into a spool and from there to the agent service (memory stays flat),
and uploaded once per conversation (by Slack file id). What cannot go gets a note for the
reply; the message is answered with the rest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError

from ..agents import AgentBackend, AgentServiceError, InputFile
from ..agents.routing import DEFAULT, make_ref, split_ref
from ..agents.uploads import TooLargeError, Upload
from ..logs import log
from ..slack.files import FileUnavailable, download
from ..slack.workspaces import Workspaces
from ..store import AgentFile, ConversationKey, Store

logger = logging.getLogger("bot.turns")

IMAGES = frozenset({"png", "jpg", "jpeg", "gif", "webp"})
DATA = frozenset(
    {"csv", "tsv", "json", "xlsx", "xls", "xml", "txt", "text", "log", "py", "sql", "yaml", "yml", "zip"}
)
DOCUMENTS = frozenset({"pdf", "docx", "doc", "pptx", "md", "markdown", "html", "htm"})


@dataclass(frozen=True)
class Target:
    """Where a message's files go: its conversation, and the agent answering it."""

    key: ConversationKey
    agents: AgentBackend
    route: str


@dataclass
class Prepared:
    files: list[InputFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _kind(file: dict[str, Any]) -> str | None:
    """``image``, ``code_interpreter``, ``file_search``, or None (the agent cannot use it)."""
    name = str(file.get("name") or "")
    ext = str(file.get("filetype") or (name.rsplit(".", 1)[-1] if "." in name else "")).lower()
    mime = str(file.get("mimetype") or "")
    if ext in IMAGES or (mime.startswith("image/") and mime.split("/")[1] in IMAGES):
        return "image"
    if ext in DATA or mime in ("text/csv", "application/json", "text/plain"):
        return "code_interpreter"
    if ext in DOCUMENTS or mime == "application/pdf":
        return "file_search"
    return None


def _mb(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


class FilesIn:
    def __init__(
        self,
        store: Store,
        workspaces: Workspaces,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        max_files: int = 10,
    ) -> None:
        self.store = store
        self.workspaces = workspaces  # the bot token of the workspace the file was shared in
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._http: httpx.AsyncClient | None = None

    async def prepare(
        self,
        key: ConversationKey,
        files: Sequence[dict[str, Any]],
        fields: dict[str, Any],
        *,
        agents: AgentBackend,
        route: str = DEFAULT,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> Prepared:
        """The message's own files, then (on a first mention) the thread's earlier ones, newest
        first, all within one limit of files; a file shared twice is given once. ``agents``
        (the agent answering, ``route`` in the routing file) gets them."""
        done = Prepared()
        seen: set[str] = set()
        candidates = [(f, False) for f in files] + [(f, True) for f in reversed(earlier)]
        left_out = 0
        for file, is_earlier in candidates:
            slack_id = str(file.get("id") or "")
            if slack_id:
                if slack_id in seen:
                    continue  # shared again: given once
                seen.add(slack_id)
            name = str(file.get("name") or file.get("title") or slack_id or "a file")
            label = f"{name} (earlier in the thread)" if is_earlier else name
            if len(done.files) >= self.max_files:
                if is_earlier:
                    left_out += 1
                else:
                    done.notes.append(
                        f"{label}: not given to the agent (at most {self.max_files} files a message)"
                    )
                continue
            why_not = await self._give(Target(key, agents, route), file, name, fields, done)
            if why_not:
                done.notes.append(f"{label}: not given to the agent ({why_not})")
        if left_out:
            done.notes.append(
                f"{left_out} earlier file(s) in the thread not given to the agent "
                f"(at most {self.max_files} files a message)"
            )
        return done

    async def _give(
        self, target: Target, file: dict[str, Any], name: str, fields: dict[str, Any], done: Prepared
    ) -> str | None:
        """Upload one file for the agent and add it to ``done``, or say why it cannot go."""
        kind = _kind(file)
        if kind is None:
            return "it cannot read this type of file"
        size = int(file.get("size") or 0)
        if size > self.max_bytes:  # checked before a byte is downloaded
            return f"{_mb(size)}, over the {_mb(self.max_bytes)} limit"
        try:
            file_id = await self._uploaded(target, file, name)
        except (FileUnavailable, TooLargeError, AgentServiceError) as exc:
            log(logger, "turn.file_skipped", logging.WARNING, file=name, error=str(exc), **fields)
            return str(exc)
        done.files.append(InputFile(file_id, name, image=kind == "image", tool=kind))
        log(logger, "turn.file_given", file=name, kind=kind, agent_file=file_id, **fields)
        return None

    async def _uploaded(self, target: Target, file: dict[str, Any], name: str) -> str:
        """The agent's id for this Slack file in this conversation, uploading it the first time
        (and again if the conversation's agent changed since)."""
        slack_id = str(file.get("id") or "")
        known = await self.store.agent_file(target.key, slack_id) if slack_id else None
        if known:
            route, file_id = split_ref(known)
            if route == target.route:
                return file_id
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True)
        try:
            token = await self.workspaces.token(target.key.team)
        except SlackApiError as exc:
            raise FileUnavailable(f"the bot cannot read files here ({exc.response.get('error')})") from None
        chunks = download(self._http, token, file)
        upload = await Upload.spool(name, str(file.get("mimetype") or ""), chunks, limit=self.max_bytes)
        try:
            file_id = await target.agents.upload_file(upload)
        finally:
            upload.close()
        if slack_id:
            await self.store.remember_agent_file(
                AgentFile(target.key, slack_id, make_ref(target.route, file_id))
            )
        return file_id

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
