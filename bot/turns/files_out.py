"""Files the agent makes (code interpreter charts and output files) come back to the thread:
each is streamed from the agent service into a spool and from there to Slack's external
upload, shared in the reply's thread once the reply is final. One that cannot be fetched or
uploaded is said in a short line in the thread."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ..agents import AgentBackend, AgentServiceError
from ..agents.events import FileProduced
from ..agents.uploads import TooLargeError, Upload
from ..logs import log
from ..slack.files import FileUnavailable, upload_to_thread
from ..slack.workspaces import Workspaces

logger = logging.getLogger("bot.turns")


class FilesOut:
    def __init__(self, workspaces: Workspaces, *, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.workspaces = workspaces
        self.max_bytes = max_bytes
        self._http: httpx.AsyncClient | None = None

    async def deliver(
        self,
        team: str,
        channel: str,
        thread_ts: str,
        files: Sequence[FileProduced],
        fields: dict[str, Any],
        *,
        agents: AgentBackend,
    ) -> list[str]:
        """Share each file the agent (``agents``: the one that answered) made in the thread;
        the Slack file ids of those that arrived."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))
        shared: list[str] = []
        failed: list[str] = []
        slack = self.workspaces.client(team)
        for file in files:
            try:
                upload = await Upload.spool(file.name, "", agents.file_content(file), limit=self.max_bytes)
            except (AgentServiceError, TooLargeError) as exc:
                log(
                    logger, "turn.file_not_fetched", logging.WARNING, file=file.name, error=str(exc), **fields
                )
                failed.append(file.name)
                continue
            try:
                slack_id = await upload_to_thread(
                    slack, self._http, channel=channel, thread_ts=thread_ts,
                    name=file.name, size=upload.size, chunks=upload.chunks,
                )  # fmt: skip
            except (SlackApiError, FileUnavailable) as exc:
                log(logger, "turn.file_not_shared", logging.WARNING, file=file.name, error=str(exc), **fields)
                failed.append(file.name)
                continue
            finally:
                upload.close()
            shared.append(slack_id)
            log(logger, "turn.file_shared", file=file.name, slack_file=slack_id, **fields)
        if failed:
            await self._say_failed(slack, channel, thread_ts, failed, fields)
        return shared

    async def _say_failed(
        self, slack: AsyncWebClient, channel: str, thread_ts: str, names: list[str], fields: dict[str, Any]
    ) -> None:
        try:
            await slack.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=f"_The agent made {', '.join(names)}, but it could not be attached here._",
            )
        except SlackApiError as exc:
            log(logger, "turn.file_note_failed", logging.WARNING, error=str(exc), **fields)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
