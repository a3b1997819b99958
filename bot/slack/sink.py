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

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.team, self.channel, self.thread_ts)


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
