"""Incremental Server-Sent Events decoder that follows the WHATWG spec.

Why not the SDK's parser: azure-ai-agents 1.1.0 frames events on ``\\n\\n`` only (a CRLF
stream yields nothing), raises on ``:`` comment lines, keeps only the last ``data:`` line
and re-scans its whole buffer on every chunk. This decoder works on bytes, splits lines
on LF, CR and CRLF (also when a CRLF is split across chunks), decodes each complete line
as UTF-8 (so multibyte characters split across chunks are safe: line ends are ASCII and
never occur inside a multibyte sequence) and touches every input byte a constant number
of times.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SSEDecoder", "SSEError", "ServerSentEvent", "aiter_sse", "iter_sse"]

_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream cannot be an event stream (e.g. a line past the size limit)."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``retry`` is set only when the event's block carried one."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Feed bytes in any chunking; get back the events each chunk completes."""

    __slots__ = (
        "_at_start",
        "_data",
        "_event",
        "_event_retry",
        "_last_id",
        "_max_line",
        "_pending",
        "_pending_size",
        "_skip_lf",
        "retry",
    )

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._pending: list[bytes] = []  # fragments of the current, unterminated line
        self._pending_size = 0
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes that CRLF
        self._at_start = True  # a BOM is only stripped at the very start of the stream
        self._data: list[str] = []
        self._event = ""
        self._event_retry: int | None = None
        self._last_id = ""
        self._max_line = max_line_bytes
        self.retry: int | None = None  # the stream's reconnection time, last seen

    @property
    def last_event_id(self) -> str:
        return self._last_id

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an event have arrived but its closing blank line has not."""
        return bool(self._pending or self._data or self._event)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []
        if self._at_start:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:  # b"\n"
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif b"\n" not in chunk:
            self._add_pending(chunk)
            return []

        lines = chunk.split(b"\n")
        tail = lines.pop()
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
        events: list[ServerSentEvent] = []
        for raw in lines:
            self._process_line(raw, events)
        if tail:
            self._add_pending(tail)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream. Per the spec an event without its closing blank line is dropped."""
        self._pending.clear()
        self._pending_size = 0
        self._data.clear()
        self._event = ""
        self._event_retry = None
        return []

    # -- internals -------------------------------------------------------------------

    def _strip_bom(self, chunk: bytes) -> bytes:
        if self._pending:  # bytes held back because they could be the start of a BOM
            chunk = b"".join(self._pending) + chunk
            self._pending.clear()
            self._pending_size = 0
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            self._add_pending(chunk)
            return b""
        self._at_start = False
        return chunk[3:] if chunk.startswith(_BOM) else chunk

    def _add_pending(self, fragment: bytes) -> None:
        self._pending.append(fragment)
        self._pending_size += len(fragment)
        if self._pending_size > self._max_line:
            self._pending.clear()
            self._pending_size = 0
            raise SSEError(f"event stream line longer than {self._max_line} bytes")

    def _process_line(self, raw: bytes, events: list[ServerSentEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        line = raw.decode("utf-8", "replace")
        if line[0] == ":":
            return  # comment (keep-alive)
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self.retry = self._event_retry = int(value)
        # any other field is ignored, as the spec says

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            events.append(
                ServerSentEvent(
                    self._event or "message", "\n".join(self._data), self._last_id, self._event_retry
                )
            )
            self._data.clear()
        self._event = ""
        self._event_retry = None


def iter_sse(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> Iterator[ServerSentEvent]:
    decoder = decoder or SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


async def aiter_sse(
    chunks: AsyncIterable[bytes], decoder: SSEDecoder | None = None
) -> AsyncIterator[ServerSentEvent]:
    decoder = decoder or SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
