"""What a turn ends with, shared by the pipeline and recovery: the reply's text as it grows
(``Reply``), the caps on a turn's work, the line each kind of end shows, and polling a run."""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from dataclasses import dataclass
from enum import StrEnum

from ..agents import (
    AgentBackend,
    AgentConnectionError,
    AgentServiceError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextTooLongError,
    NotFoundError,
    RunSnapshot,
    StreamInterruptedError,
)
from ..agents.events import AgentEvent, Cancelled, Completed, Expired, Failed, Incomplete, TextDelta
from ..slack.render import Citations

INTERRUPTED = "_This reply was interrupted (the bot was stopping). Please ask again._"
STOPPED = "_Stopped._"
TOO_LONG = (
    "_This conversation has grown too long for the agent to read in full. "
    "Mention me in a new thread (or start a new DM thread) to start fresh._"
)
SANDBOX_LINK = re.compile(r"\[([^\]\n]{1,200})\]\(sandbox:/mnt/data/[^)\s]*\)")
MARKER_MAX = 42  # a citation marker (【...】) is at most this long


class Outcome(StrEnum):
    """How a turn ended (the metrics' and logs' ``outcome``)."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True)
class Caps:
    """Bounds on the work of one turn (settings); each hit ends the turn with a clear line."""

    tool_rounds: int = 10
    reply_chars: int = 100_000
    turn_seconds: float = 900.0


class Reply:
    """The agent's text so far, with citations resolved for display.

    Rendered as it arrives: a delta costs time in proportion to the delta (text after the
    last complete citation marker is rendered once and kept), and the writer reads only the
    open page's tail (``tail``), never the whole reply."""

    def __init__(self) -> None:
        self.message_id: str | None = None
        self.citations = Citations()
        self.notes: list[str] = []
        self._raw: list[str] = []
        self.raw_length = 0
        self._settled: list[str] = []  # rendered text, in chunks
        self._ends: list[int] = []  # where each rendered chunk ends
        self._pending = ""  # raw text after the last settled point (may hold half a marker)
        self._shown_pending = ""

    @property
    def raw(self) -> str:
        return "".join(self._raw)

    def add(self, delta: TextDelta) -> None:
        if delta.message_id and self.message_id and delta.message_id != self.message_id and self.raw_length:
            self._append("\n\n")
        self.message_id = delta.message_id or self.message_id
        self.citations.add(delta.annotations)
        self._append(delta.text)

    def _append(self, text: str) -> None:
        self._raw.append(text)
        self.raw_length += len(text)
        pending = self._pending + text
        cut = len(pending)
        start = pending.rfind("【")
        if start >= 0 and "】" not in pending[start:] and len(pending) - start <= MARKER_MAX:
            cut = start  # half a marker: keep it back until it closes
        if cut:
            chunk = self.citations.render(pending[:cut], final=True)
            self._settled.append(chunk)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(chunk))
        self._pending = pending[cut:]
        self._shown_pending = self.citations.render(self._pending, final=False)

    def __len__(self) -> int:
        return (self._ends[-1] if self._ends else 0) + len(self._shown_pending)

    def tail(self, start: int) -> str:
        """The rendered text from ``start`` on, joining only the chunks it spans."""
        index = bisect.bisect_right(self._ends, start)
        before = self._ends[index - 1] if index else 0
        return "".join(self._settled[index:])[start - before :] + self._shown_pending

    def render(self, *, final: bool) -> str:
        return "".join(self._settled) + self.citations.render(self._pending, final=final)

    def replace_with(self, other: Reply) -> None:
        """Take a polled run's text in place of what streamed (after a dropped stream)."""
        self.__dict__.update(other.__dict__)

    @classmethod
    def of(cls, snapshot: RunSnapshot) -> Reply:
        """The reply a polled run holds (after a dropped stream, or for recovery)."""
        reply = cls()
        if snapshot.text:
            reply.add(TextDelta(snapshot.text, snapshot.annotations, snapshot.run_id))
        return reply

    def body(self, ending: str) -> str:
        """The final text: the answer, its sources, and the ending line if any."""
        # a link into the code interpreter's sandbox means nothing in Slack: the file itself
        # is shared in the thread after the reply
        body = SANDBOX_LINK.sub(r"`\1` (attached below)", self.render(final=True)) + self.citations.footer()
        if self.notes:  # what could not go to the agent (files), said once, at the end
            notes = "\n".join(f"_{note}_" for note in self.notes)
            body = f"{body}\n\n{notes}" if body.strip() else notes
        if ending:
            body = f"{body}\n\n{ending}" if body.strip() else ending
        return body or "_The agent returned no text._"


def service_failure_line(exc: AgentServiceError, ref: str) -> str:
    """What Slack shows for an agent-service error: what kind, the status and the service's
    code, and a reference into the log; never the host, the path or a body."""
    kinds: tuple[tuple[type[AgentServiceError], str], ...] = (
        (AuthenticationError, "refused the bot's credentials"),
        (NotFoundError, "could not find the agent or this conversation"),
        (BadRequestError, "refused the request"),
        (AgentConnectionError, "could not be reached"),
        (StreamInterruptedError, "stopped answering"),
        (BadResponseError, "answered with something unexpected"),
    )
    what = next((text for kind, text in kinds if isinstance(exc, kind)), "failed")
    detail = ", ".join(part for part in (f"HTTP {exc.status}" if exc.status else "", exc.code or "") if part)
    detail = re.sub(r"[^A-Za-z0-9 _.,-]", "", detail)[:60]
    return f"_The agent service {what}{f' ({detail})' if detail else ''}. Please try again. (ref: {ref})_"


def ending_for(event: AgentEvent | None) -> str | None:
    """The line a run's end shows in Slack ("" for a plain completion; None: not an end)."""
    if isinstance(event, Completed):
        return ""
    if isinstance(event, Failed):
        if event.code == ContextTooLongError.CODE:
            return TOO_LONG
        return f"⚠️ _The agent could not finish: {event.message} (`{event.code}`)_"
    if isinstance(event, Cancelled):
        return STOPPED
    if isinstance(event, Expired):
        return "_The agent took too long and the run expired before it finished._"
    if isinstance(event, Incomplete):
        return f"_The answer is incomplete ({event.reason.replace('_', ' ')})._"
    return None


async def wait_for_run(
    agents: AgentBackend, conversation_id: str, run_id: str, within_s: float
) -> RunSnapshot | None:
    """Poll a run until it ends or waits for us; None when it does neither in time."""
    deadline = time.monotonic() + max(within_s, 0)
    delay = 0.25
    while True:
        snapshot = await agents.snapshot(conversation_id, run_id)
        if snapshot.terminal or snapshot.waiting:
            return snapshot
        if time.monotonic() + delay > deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
