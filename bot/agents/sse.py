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
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["SSEDecoder", "SSEError", "ServerSentEvent", "iter_sse"]

_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream cannot be an event stream (e.g. a line past the size limit)."""


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``retry`` is set only when the event's block carried one.

    A NamedTuple rather than a frozen dataclass: events are made per delta on the hot
    path, and a tuple is several times cheaper to build.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


_NO_EVENTS: list[ServerSentEvent] = []  # returned (never mutated) when a chunk completes nothing


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
        "_special",
        "retry",
    )

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._pending: list[bytes] = []  # fragments of the current, unterminated line
        self._pending_size = 0
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes that CRLF
        self._at_start = True  # a BOM is only stripped at the very start of the stream
        self._special = True  # _at_start or _skip_lf: the only cases needing _prologue
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
        """Consume one chunk. The returned list must not be mutated by the caller."""
        if self._special:  # the rare start-of-stream BOM, or a CRLF cut in two
            chunk = self._prologue(chunk)
        # int membership is a memchr; a bytes needle (b"\r" in chunk) costs ten times more,
        # which is what one-byte chunks feel
        if 13 in chunk:  # CR
            self._skip_lf = self._special = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif 10 not in chunk:  # no line end: the common case for tiny chunks, kept short
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            if self._pending_size > self._max_line:
                self._overflow()
            return _NO_EVENTS

        head, _, tail = chunk.rpartition(b"\n")
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
        if tail:
            self._pending.append(tail)
            self._pending_size = len(tail)
            if self._pending_size > self._max_line:
                self._overflow()
        # Complete lines only: a line end is ASCII and never inside a UTF-8 sequence, so
        # decoding here cannot cut a character in two.
        return self._lines(head.decode("utf-8", "replace").split("\n"))

    def close(self) -> list[ServerSentEvent]:
        """End of stream. Per the spec an event without its closing blank line is dropped."""
        self._pending.clear()
        self._pending_size = 0
        self._data.clear()
        self._event = ""
        self._event_retry = None
        return []

    # -- internals -------------------------------------------------------------------

    def _prologue(self, chunk: bytes) -> bytes:
        """The rare cases: a BOM at the very start, an LF completing a CRLF cut in two."""
        if self._at_start:
            if self._pending:  # bytes held back because they could begin a BOM
                chunk = b"".join(self._pending) + chunk
                self._pending.clear()
                self._pending_size = 0
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._pending.append(chunk)
                self._pending_size = len(chunk)
                return b""
            self._at_start = False
            self._special = self._skip_lf
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._skip_lf and chunk:
            self._skip_lf = self._special = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        return chunk

    def _overflow(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        raise SSEError(f"event stream line longer than {self._max_line} bytes")

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            # The service's lines are almost all "data: ..." and "event: ..."; test those first.
            if line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line:
                if data:
                    events.append(
                        ServerSentEvent(
                            self._event or "message",
                            "\n".join(data),
                            self._last_id,
                            self._event_retry,
                        )
                    )
                    data.clear()
                self._event = ""
                self._event_retry = None
            elif line.startswith("event:"):
                self._event = line[7:] if line[6:7] == " " else line[6:]
            elif line[0] != ":":  # a leading colon is a comment (keep-alive)
                self._other_field(line)
        return events

    def _other_field(self, line: str) -> None:
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


def iter_sse(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> Iterator[ServerSentEvent]:
    """Events from an iterable of chunks (the SDK parser's shape, for comparison)."""
    decoder = decoder or SSEDecoder()
    feed = decoder.feed
    for chunk in chunks:
        yield from feed(chunk)
    yield from decoder.close()
