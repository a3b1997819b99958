"""What the Slack surface hands the turn pipeline, and the little it asks of it.

The surface (``app.py``) turns Slack events into ``Turn`` values and gives them to a
``TurnSink``; it never reaches into the pipeline's internals, so the pipeline sits above
the Slack layer and the Slack layer can be tested with any sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..store import ConversationKey


@dataclass(frozen=True)
class Turn:
    """One Slack message the bot answers."""

    team: str
    channel: str
    thread_ts: str  # the thread the reply goes in (the message's own ts for a new thread)
    ts: str
    user: str
    text: str
    event_id: str = ""
    files: tuple[dict[str, Any], ...] = ()
    traceparent: str = ""  # the Slack event's trace, continued wherever the turn is answered
    surface: str = ""  # "assistant": asked in Slack's assistant pane (a status, not a placeholder)

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.team, self.channel, self.thread_ts)

    def to_json(self) -> dict[str, Any]:
        """The turn as a JSON object (how it is queued and kept in the store)."""
        return {name: getattr(self, name) for name in _FIELDS} | {"files": list(self.files)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Turn:
        """The turn back from ``to_json`` (other keys beside it are ignored); a value of the
        wrong type is a ValueError, never a half-built turn."""
        values = {name: doc.get(name, "") for name in _FIELDS}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValueError("a queued turn has a field that is not text")
        files = doc.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise ValueError("a queued turn's files are not a list of objects")
        return cls(**values, files=tuple(files))


_FIELDS = ("team", "channel", "thread_ts", "ts", "user", "text", "event_id", "traceparent", "surface")


class TurnSink(Protocol):
    async def receive(self, turn: Turn) -> Any:
        """Make the turn durable (before Slack is acked: cheap); returns a receipt for
        ``answer``."""
        ...

    async def answer(self, receipt: Any, turn: Turn) -> None:
        """Answer a received turn; never raises (every failure ends as a clear line in Slack)."""
        ...

    async def stop(self, turn_id: str, user: str) -> str:
        """The Stop button: a short answer for the person who clicked."""
        ...

    async def ask_again(self, turn_id: str, user: str) -> Turn | str:
        """The *Ask again* button under a reply cut short: the turn to receive and answer
        again, or a short note for the person who clicked."""
        ...

    def speaker(self, team: str, channel: str) -> str | None:
        """The agent answering in this conversation, by name, when several agents answer."""
        ...
