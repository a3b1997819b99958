"""The *Ask again* button: a reply cut short by a restart or a shutdown keeps its question, so the person
gets it answered with one click instead of typing it again.

The question is kept in the store as a one-shot decision (the approvals table: a document, a
verdict set at most once), so two clicks, or two replicas, ask it once.
"""

from __future__ import annotations

import json
import logging

from ..logs import log
from ..slack.sink import Turn
from ..store import InFlight, Store

logger = logging.getLogger("bot.turns")

ASK_AGAIN_TTL_S = 7 * 86400.0  # how long the button works
GONE = "This question can no longer be asked again with the button: please send it as a new message."


def _key(turn_id: str) -> str:
    return f"ask-again:{turn_id}"


class AskAgain:
    def __init__(self, store: Store, admins: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.admins = admins

    async def keep(self, record: InFlight) -> bool:
        """Keep the turn's question for the button; False (no button) when there is nothing
        to keep or the store cannot take it now (the text still says to ask again)."""
        try:
            Turn.from_json(json.loads(record.payload or "{}"))
        except (ValueError, TypeError):
            return False
        try:
            await self.store.put_approval(
                _key(record.turn_id), {"turn": record.payload, "user": record.user}, ASK_AGAIN_TTL_S
            )
        except Exception as exc:  # a store outage while stopping: the line alone still tells
            log(logger, "turn.ask_again_not_kept", logging.WARNING, turn=record.turn_id, error=repr(exc))
            return False
        return True

    async def take(self, turn_id: str, user: str) -> Turn | str:
        """The question to ask again (once, whoever clicks first), or a note for the clicker."""
        kept = await self.store.get_approval(_key(turn_id))
        if kept is None:
            return GONE
        doc, verdict, by = kept
        if verdict is not None:
            return f"<@{by}> already asked this again." if by != user else "You already asked this again."
        asker = str(doc.get("user") or "")
        if user != asker and user not in self.admins:
            return f"Only <@{asker}> (or an admin) can ask this again."
        if not await self.store.decide_approval(_key(turn_id), True, user):
            return "This was just asked again."
        try:
            turn = Turn.from_json(json.loads(str(doc.get("turn") or "{}")))
        except (ValueError, TypeError):
            return GONE
        log(logger, "turn.asked_again", turn=turn_id, user=user, channel=turn.channel)
        event_id = f"{turn.event_id}:again"  # a new turn id for the same post (turn_id_of)
        return Turn(
            turn.team, turn.channel, turn.thread_ts, turn.ts, turn.user, turn.text, event_id, turn.files
        )
