"""Slack's native message streams in the emulator: ``chat.startStream``, ``chat.appendStream``
and ``chat.stopStream``, with the refusals a bot meets.

Sources (docs/service-contract.md): the method pages (docs.slack.dev/reference/methods/
chat.startStream, appendStream, stopStream; their argument and error lists as kept in
slack-ruby/slack-api-ref ``methods/chat/chat.*Stream.json``): ``thread_ts`` required (streams
are replies), ``recipient_user_id`` / ``recipient_team_id`` required in channels
(``missing_recipient_user_id``, ``missing_recipient_team_id``), ``markdown_text`` at most
12,000 characters a call, ``message_not_found``, ``message_not_in_streaming_state``;
slack_sdk 3.48 ``chat_*Stream`` (JSON bodies; ``chunks``; ``task_display_mode`` timeline |
plan); vercel/chat#637 (Slack ends a stream about five minutes after it starts: appends and
stops are then refused with ``message_not_in_streaming_state``) and python-slack-sdk#1859 /
#1880 (``chat.update`` on the stream's ts still works then).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .slack import Message

STREAM_MARKDOWN_LIMIT = 12_000
STREAM_LIFETIME_S = 300.0
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})


class StreamState:
    """A message being streamed: since when, and the task cards it shows."""

    def __init__(self, recipient: str) -> None:
        self.started = time.monotonic()
        self.recipient = recipient
        self.open = True
        self.tasks: dict[str, dict[str, Any]] = {}  # id -> the card as last updated
        self.plan = ""


class StreamMethods:
    """Mixed into ``SlackEmulator``: the stream methods and what they change on messages."""

    # provided by SlackEmulator
    messages: dict[str, list[Message]]
    channels: dict[str, dict[str, Any]]
    users: dict[str, dict[str, Any]]
    calling_team: str

    def _init_streams(self) -> None:
        self.streams: dict[tuple[str, str], StreamState] = {}
        self.stream_lifetime_s = STREAM_LIFETIME_S
        # team -> (the error its startStream gets, in these channels only / everywhere)
        self.native_refused: dict[str, tuple[str, frozenset[str] | None]] = {}

    def refuse_native_streaming(
        self, team: str, error: str = "not_allowed_token_type", *, channels: set[str] | None = None
    ) -> None:
        """This workspace's ``chat.startStream`` calls are refused with ``error`` (in
        ``channels`` only, e.g. ``channel_type_not_supported``; everywhere when None)."""
        self.native_refused[team] = (error, frozenset(channels) if channels is not None else None)

    def stream_of(self, channel: str, ts: str) -> StreamState | None:
        return self.streams.get((channel, ts))

    def _stream_fields(self, message: Message) -> dict[str, Any]:
        """What a person sees of a stream beside its text: the task cards, and whether it is
        still streaming."""
        state = self.streams.get((message.channel, message.ts))
        if state is None:
            return {}
        return {"streaming": state.open, "tasks": list(state.tasks.values()), "plan": state.plan}

    # -- the methods --------------------------------------------------------------------------

    def _m_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        error, where = self.native_refused.get(self.calling_team) or ("", None)
        if error and (where is None or params.get("channel") in where):
            return {"ok": False, "error": error}
        error = self._channel_error(params) or self._start_error(params)
        if error:
            return {"ok": False, "error": error}
        markdown = str(params.get("markdown_text") or "")
        message = self._new_bot_message(str(params["channel"]), str(params["thread_ts"]), markdown)
        self.streams[(message.channel, message.ts)] = StreamState(str(params.get("recipient_user_id") or ""))
        if params.get("chunks"):
            self._grow(message, "", params["chunks"])
        else:
            self._notify(self.message_change(message))  # now known as a stream
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message, error = self._streaming(params)
        if error or message is None:
            return {"ok": False, "error": error}
        markdown = params.get("markdown_text")
        chunks = params.get("chunks")
        if not markdown and not chunks:
            return {"ok": False, "error": "no_text"}
        error = self._chunk_error(markdown, chunks)
        if error:
            return {"ok": False, "error": error}
        self._grow(message, str(markdown or ""), chunks or [])
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message, error = self._streaming(params)
        if error or message is None:
            return {"ok": False, "error": error}
        markdown, chunks, blocks = params.get("markdown_text"), params.get("chunks"), params.get("blocks")
        error = self._chunk_error(markdown, chunks)
        if error:
            return {"ok": False, "error": error}
        if blocks is not None and self._content_error({"blocks": blocks, "text": "x"}):
            return {"ok": False, "error": "invalid_blocks"}
        metadata = params.get("metadata")
        if metadata is not None and not _valid_metadata(metadata):
            return {"ok": False, "error": "invalid_metadata_format"}
        self.streams[(message.channel, message.ts)].open = False
        message.metadata = metadata
        self._grow(message, str(markdown or ""), chunks or [], under=blocks or [])
        return {"ok": True, "channel": message.channel, "ts": message.ts, "message": message.as_dict()}

    def end_stream_by_update(self, message: Message) -> None:
        """``chat.update`` on a streamed message makes it an ordinary one."""
        state = self.streams.get((message.channel, message.ts))
        if state is not None:
            state.open = False

    # -- checks and changes -------------------------------------------------------------------

    def _start_error(self, params: dict[str, Any]) -> str | None:
        thread_ts = params.get("thread_ts")
        if not thread_ts:
            return "invalid_arguments"  # a stream is always a reply to a person's message
        if not self.find(str(params["channel"]), str(thread_ts)):
            return "thread_not_found"
        if not self.channels[str(params["channel"])].get("is_im"):
            if not params.get("recipient_user_id"):
                return "missing_recipient_user_id"
            if not params.get("recipient_team_id"):
                return "missing_recipient_team_id"
        user = params.get("recipient_user_id")
        if user and user not in self.users:
            return "user_not_found"
        if params.get("task_display_mode") not in (None, "timeline", "plan"):
            return "invalid_arguments"
        if len(str(params.get("markdown_text") or "")) > STREAM_MARKDOWN_LIMIT:
            return "msg_too_long"
        return self._chunk_error(None, params.get("chunks"))

    def _streaming(self, params: dict[str, Any]) -> tuple[Message | None, str | None]:
        """The stream's message, or why the call is refused."""
        error = self._channel_error(params)
        if error:
            return None, error
        message = self.find(str(params["channel"]), str(params.get("ts") or ""))
        if message is None or message.deleted:
            return None, "message_not_found"
        if message.bot_id != self._workspace().bot_id:
            return None, "message_not_owned_by_app"
        state = self.streams.get((message.channel, message.ts))
        if state is None or not state.open or time.monotonic() - state.started > self.stream_lifetime_s:
            return None, "message_not_in_streaming_state"
        return message, None

    def _chunk_error(self, markdown: Any, chunks: Any) -> str | None:
        if markdown is not None and len(str(markdown)) > STREAM_MARKDOWN_LIMIT:
            return "msg_too_long"
        if chunks is None:
            return None
        if not isinstance(chunks, list):
            return "invalid_arguments"
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
                return "invalid_arguments"
            if chunk["type"] == "markdown_text" and len(str(chunk.get("text") or "")) > STREAM_MARKDOWN_LIMIT:
                return "msg_too_long"
            if chunk["type"] == "task_update" and (
                not chunk.get("id") or not chunk.get("title") or chunk.get("status") not in TASK_STATUSES
            ):
                return "invalid_arguments"  # e.g. "completed": the status is "complete"
        return None

    def _grow(
        self,
        message: Message,
        markdown: str,
        chunks: list[dict[str, Any]],
        *,
        under: list[dict[str, Any]] | None = None,
    ) -> None:
        state = self.streams[(message.channel, message.ts)]
        text = message.text + markdown
        for chunk in chunks:
            if chunk["type"] == "markdown_text":
                text += str(chunk.get("text") or "")
            elif chunk["type"] == "task_update":
                card = state.tasks.setdefault(str(chunk["id"]), {})
                card.update({k: v for k, v in chunk.items() if k != "type"})
            elif chunk["type"] == "plan_update":
                state.plan = str(chunk.get("title") or "")
        message.text = text
        blocks: list[dict[str, Any]] = [{"type": "markdown", "text": text}] if text else []
        message.blocks = (blocks + list(under or [])) or None
        self._changed(message)

    # provided by SlackEmulator
    def _channel_error(self, params: dict[str, Any]) -> str | None: ...
    def _content_error(self, params: dict[str, Any]) -> str | None: ...
    def find(self, channel: str, ts: str) -> Message | None: ...
    def _workspace(self) -> Any: ...
    def _new_bot_message(self, channel: str, thread_ts: str, text: str) -> Message: ...
    def _changed(self, message: Message) -> None: ...
    def _notify(self, change: dict[str, Any]) -> None: ...
    def message_change(self, message: Message) -> dict[str, Any]: ...


def _valid_metadata(metadata: Any) -> bool:
    """Slack's message metadata: an ``event_type`` string and an ``event_payload`` object."""
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and bool(metadata["event_type"])
        and isinstance(metadata.get("event_payload"), dict)
    )
