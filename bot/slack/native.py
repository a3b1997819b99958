"""Slack's native streaming for a reply's pages: ``chat.startStream``, the text appended as it
grows (``chat.appendStream``, tool work as ``task_update`` chunks), the final blocks and the
reply's metadata at ``chat.stopStream``.

Whatever the stream cannot carry goes on as an ordinary message edited with ``chat.update``,
so nothing is lost or shown twice: a workspace that refuses streaming (remembered per
workspace in ``auto`` mode), a stream Slack closed on its own (``message_not_in_streaming_state``,
which Slack answers roughly five minutes into a stream: vercel/chat#637; ``chat.update`` on
the same ts is the way back: python-slack-sdk#1859), or text that changed behind what was
already streamed (a stream only ever appends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ..logs import log

logger = logging.getLogger("bot.slack.native")

STOP_OFFER = "I'm answering in this thread. Changed your mind? Stop the answer here."
StreamMode = Literal["auto", "native", "edit"]
TaskDisplay = Literal["timeline", "plan"]
# refusals that say nothing about the workspace: the edit writer meets them too
NOT_ABOUT_STREAMING = frozenset(
    {"ratelimited", "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "token_revoked"}
)


class NativeSupport:
    """Where replies stream natively. ``auto``: every workspace until it refuses a stream,
    then edits there from then on; ``native``: every reply tries (and falls back alone);
    ``edit``: never."""

    def __init__(self, mode: StreamMode = "edit", task_display: TaskDisplay = "timeline") -> None:
        self.mode = mode
        self.task_display = task_display
        self.refused: dict[str, str] = {}  # team -> the error it refused a stream with

    def wanted(self, team: str) -> bool:
        return self.mode == "native" or (self.mode == "auto" and team not in self.refused)

    def refuse(self, team: str, error: str, fields: dict[str, Any]) -> None:
        if self.mode == "auto" and team not in self.refused:
            self.refused[team] = error
            log(logger, "slack.native_refused", logging.WARNING, team=team, error=error, **fields)


@dataclass
class Stream:
    """What one page's stream holds: the markdown Slack has, and the task card in progress."""

    shown: str = ""
    open: bool = True
    task: tuple[str, str] | None = None  # (id, title) of the card in progress
    tasks: int = 0  # cards shown so far


@dataclass
class StreamTarget:
    """Where a reply streams, and to whom (Slack wants the recipient in channels)."""

    client: AsyncWebClient
    channel: str
    thread_ts: str
    team: str
    user: str
    support: NativeSupport

    async def start(self, markdown: str, chunks: list[dict[str, Any]] | None = None) -> str:
        kwargs: dict[str, Any] = {"task_display_mode": self.support.task_display}
        if chunks:
            kwargs["chunks"] = chunks
        if not self.channel.startswith("D"):  # a DM streams to its one person
            kwargs.update(recipient_team_id=self.team, recipient_user_id=self.user)
        response = await self.client.chat_startStream(
            channel=self.channel, thread_ts=self.thread_ts, markdown_text=markdown or None, **kwargs
        )
        return str(response["ts"])

    async def append(self, ts: str, markdown: str, chunks: list[dict[str, Any]]) -> None:
        if chunks:
            parts = ([{"type": "markdown_text", "text": markdown}] if markdown else []) + chunks
            await self.client.chat_appendStream(channel=self.channel, ts=ts, chunks=parts)
        else:
            await self.client.chat_appendStream(channel=self.channel, ts=ts, markdown_text=markdown)

    async def tell_requester(self, text: str, blocks: list[dict[str, Any]]) -> None:
        """A message in the thread that only the person who asked sees."""
        await self.client.chat_postEphemeral(
            channel=self.channel, user=self.user, thread_ts=self.thread_ts, text=text, blocks=blocks
        )

    async def stop(
        self,
        ts: str,
        markdown: str = "",
        *,
        chunks: list[dict[str, Any]] | None = None,
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        await self.client.chat_stopStream(
            channel=self.channel,
            ts=ts,
            markdown_text=markdown or None,
            chunks=chunks or None,
            blocks=blocks or None,
            metadata=metadata,
        )


class NativePages:
    """One reply's pages as native streams: started, appended to and stopped, with the task
    cards of the status lines the writer showed. Each method says whether the stream carried
    the change; when it did not, the writer posts or edits the page as an ordinary message."""

    def __init__(self, target: StreamTarget, log_fields: dict[str, Any]) -> None:
        self.target = target
        self.log_fields = log_fields
        self._shown: list[str] = []  # status lines since the stream was last told

    def noted(self, line: str) -> None:
        """A status line the writer shows: a task card, however soon it is gone."""
        self._shown.append(line)

    def wanted(self) -> bool:
        return self.target.support.wanted(self.target.team)

    def cards(self, stream: Stream, current: str | None, *, open_page: bool) -> list[dict[str, Any]]:
        """The cards a stream still has to show; a page no longer open completes its own."""
        if not open_page:
            return task_chunks(stream, [], None)
        shown, self._shown = self._shown, []
        return task_chunks(stream, shown, current)

    async def start(
        self, markdown: str, current: str | None, *, open_page: bool
    ) -> tuple[str, Stream] | None:
        """A new stream holding ``markdown``; None (the refusal noted) when the workspace
        will not stream. A rate limit, or a refusal about the channel or token, is raised:
        an ordinary post would meet it too."""
        stream = Stream(shown=markdown)
        try:
            ts = await self.target.start(markdown, self.cards(stream, current, open_page=open_page))
        except SlackApiError as exc:
            error = error_of(exc)
            if (exc.response is not None and exc.response.status_code == 429) or error in NOT_ABOUT_STREAMING:
                raise
            self.target.support.refuse(self.target.team, error, self.log_fields)
            log(logger, "slack.stream_not_started", logging.INFO, error=error, **self.log_fields)
            return None
        return ts, stream

    async def offer_stop(self, button: dict[str, Any]) -> None:
        """An open stream carries no buttons: the person who asked gets Stop privately, in
        the thread (a failure costs the reply nothing but the button)."""
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": STOP_OFFER}}, button]
        try:
            await self.target.tell_requester(STOP_OFFER, blocks)
        except Exception as exc:  # refused, or the connection broke: the reply goes on
            error = error_of(exc) if isinstance(exc, SlackApiError) else repr(exc)
            log(logger, "slack.stop_not_offered", logging.INFO, error=error, **self.log_fields)

    async def more(
        self,
        ts: str,
        stream: Stream,
        markdown: str,
        current: str | None,
        *,
        open_page: bool,
        final: bool,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None,
    ) -> bool:
        """Append what the page gained (and the cards), or stop the stream with the final
        ``blocks`` and ``metadata``; False when the text changed behind what was streamed
        (a stream only appends): the stream is stopped, to be edited whole instead."""
        if not markdown.startswith(stream.shown):
            stream.open = False
            log(logger, "slack.stream_diverged", logging.INFO, **self.log_fields)
            try:
                await self.target.stop(ts, chunks=self.cards(stream, current, open_page=open_page))
            except SlackApiError as exc:  # closed already: the edit shows the text either way
                log(logger, "slack.stream_not_stopped", logging.INFO, error=error_of(exc), **self.log_fields)
            return False
        delta = markdown[len(stream.shown) :]
        chunks = self.cards(stream, current, open_page=open_page)
        if final:
            await self.target.stop(ts, delta, chunks=chunks, blocks=blocks, metadata=metadata)
            stream.open = False
        elif delta or chunks:
            await self.target.append(ts, delta, chunks)
        stream.shown = markdown
        return True


def task_chunks(stream: Stream, shown: list[str], current: str | None) -> list[dict[str, Any]]:
    """The ``task_update`` chunks that bring the stream's cards up to date: each line the
    writer showed since the last call (a tool running, an approval awaited), even one gone
    before Slack could be told, is a card; the card of a line no longer shown is complete."""
    chunks: list[dict[str, Any]] = []

    def complete() -> None:
        if stream.task is not None:
            task_id, title = stream.task
            chunks.append({"type": "task_update", "id": task_id, "title": title, "status": "complete"})
            stream.task = None

    for line in shown:
        title = _title(line)
        if not title or (stream.task is not None and stream.task[1] == title):
            continue
        complete()
        stream.tasks += 1
        stream.task = (f"task-{stream.tasks}", title)
        chunks.append({"type": "task_update", "id": stream.task[0], "title": title, "status": "in_progress"})
    if stream.task is not None and (current is None or _title(current) != stream.task[1]):
        complete()
    return chunks


def _title(line: str) -> str:
    return line.strip().rstrip("…").strip()[:200]


def error_of(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or "") if exc.response is not None else ""
