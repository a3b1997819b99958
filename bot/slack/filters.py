"""What decides whether a Slack request reaches a listener, as Bolt middleware.

Each filter is one small callable, registered once (``app.use`` for the allow-list, a
listener's ``middleware=[...]`` for the rest), so a listener body only does its job. A
request a filter turns away is acked (Slack must not retry it) and logged; a message that
becomes a turn is parsed once and handed on in ``context["turn"]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncBoltContext
from slack_bolt.response import BoltResponse

from ..logs import log
from ..metrics import Metrics
from ..store import Store
from .sink import Turn

logger = logging.getLogger("bot.slack.filters")

DEDUPE_TTL_S = 3600.0
INTAKE_PENDING_S = 2.0  # a delivery's marks before its turn is durable (the intake takes ms)
INTAKE_WAIT_S = 2.2  # a second delivery waits this long for the first (inside Slack's 3 s)
ALLOWED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
NOT_HERE = "This bot is not available in this channel."

Next = Callable[[], Awaitable[None]]
Middleware = Callable[..., Awaitable[BoltResponse | None]]


class AllowList:
    """The workspaces and channels the bot serves (empty: all); DMs pass the channel list."""

    def __init__(self, teams: frozenset[str] = frozenset(), channels: frozenset[str] = frozenset()) -> None:
        self.teams = teams
        self.channels = channels

    def allows(self, team: str, channel: str) -> bool:
        if self.teams and team not in self.teams:
            return False
        return not self.channels or channel in self.channels or channel.startswith("D")

    async def middleware(self, body: dict[str, Any], ack: AsyncAck, next: Next) -> BoltResponse | None:
        """Global: events, buttons and slash commands from elsewhere are acked and dropped."""
        team, channel = where(body)
        if self.allows(team, channel):
            await next()
            return None
        kind = "command" if body.get("command") else "action" if body.get("actions") else "event"
        log(logger, f"{kind}.not_allowed", team=team, channel=channel)
        if kind == "command":
            return await ack(text=NOT_HERE)
        return await ack()


def where(body: dict[str, Any]) -> tuple[str, str]:
    """(team, channel) of an event, an interaction or a slash command."""
    if body.get("command"):  # slash commands arrive form-encoded, flat
        return str(body.get("team_id") or ""), str(body.get("channel_id") or "")
    event = body.get("event")
    if isinstance(event, dict):
        return _text(event.get("team")) or _text(body.get("team_id")), _text(event.get("channel"))
    team = body.get("team") if isinstance(body.get("team"), dict) else {}
    user = body.get("user") if isinstance(body.get("user"), dict) else {}
    channel = body.get("channel") if isinstance(body.get("channel"), dict) else {}
    return _text(team.get("id")) or _text(user.get("team_id")), _text(channel.get("id"))


def turn_from_event(body: Any, event: Any) -> Turn | None:
    """A Slack message event as a ``Turn``; None for anything that is not a usable message
    (Slack sends what it sends: a malformed event is ignored, never a crash)."""
    if not isinstance(body, dict) or not isinstance(event, dict):
        return None
    channel, ts = event.get("channel"), event.get("ts")
    if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
        return None
    thread_ts = event.get("thread_ts")
    files = event.get("files")
    return Turn(
        team=_text(event.get("team")) or _text(body.get("team_id")),
        channel=channel,
        thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts else ts,
        ts=ts,
        user=_text(event.get("user")),
        text=_text(event.get("text")),
        event_id=_text(body.get("event_id")),
        files=tuple(f for f in files if isinstance(f, dict)) if isinstance(files, list) else (),
    )


def person_message(bot_user_id: str | None) -> Middleware:
    """Only a person's usable message becomes a turn: not a bot's (ours included), not an
    edit or a join, not a malformed event. The parsed turn goes on in ``context``."""

    async def middleware(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, ack: AsyncAck, next: Next
    ) -> BoltResponse | None:
        turn = turn_from_event(body, event)
        usable = (
            turn is not None
            and not event.get("bot_id")
            and event.get("subtype") in ALLOWED_SUBTYPES
            and bool(turn.user)
            and turn.user != (context.bot_user_id or bot_user_id)
        )
        if not usable:
            return await _drop(ack, "not_a_person_message", body)
        context["turn"] = turn
        await next()
        return None

    return middleware


def follow_up_only(store: Store, bot_user_id: str | None) -> Middleware:
    """A plain channel message is ours only as a follow-up, without a mention, in a thread
    the bot already answers (a mention comes as ``app_mention``); every DM is ours."""

    async def middleware(
        event: dict[str, Any], context: AsyncBoltContext, ack: AsyncAck, next: Next
    ) -> BoltResponse | None:
        turn: Turn = context["turn"]
        if event.get("channel_type") != "im":
            me = context.bot_user_id or bot_user_id  # installed in many workspaces: this one's bot
            if turn.thread_ts == turn.ts or f"<@{me}>" in turn.text:
                return await _drop(ack, "not_a_follow_up", event_id=turn.event_id)
            if await store.lease_owner(f"bot-thread:{turn.key.as_str()}") is None:
                return await _drop(ack, "not_a_bot_thread", event_id=turn.event_id)
        await next()
        return None

    return middleware


class FirstDelivery:
    """Slack retries an event it thinks was lost, and one mention arrives twice
    (``app_mention`` and ``message``): each post is answered once, across replicas, and a
    crash between taking a delivery and writing its turn loses nothing.

    A delivery holds its marks (the post, the event) as short leases while the turn is
    taken in, and the listener marks them done for ``DEDUPE_TTL_S`` once the turn is in the
    store (Bolt runs a listener after its middleware returns, so only the listener knows).
    Another delivery of the same post is acked and dropped once the first is done; while the
    first is still being taken in it waits (the intake takes milliseconds); when the first
    died mid-intake, its leases expire within ``INTAKE_PENDING_S`` and this delivery goes on
    (the intake itself then finds a turn already written, and takes nothing twice). Still
    undecided after ``INTAKE_WAIT_S``, it is refused unacked, so Slack delivers it again."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def middleware(
        self, body: dict[str, Any], context: AsyncBoltContext, ack: AsyncAck, next: Next
    ) -> BoltResponse | None:
        turn: Turn = context["turn"]
        event_id = _text(body.get("event_id"))
        names = [f"post:{turn.team}:{turn.channel}:{turn.ts}"] + ([f"event:{event_id}"] if event_id else [])
        holder = f"delivery:{uuid.uuid4().hex}"
        taken = await self._take(names, holder)
        if taken is None:
            return await _drop(ack, "duplicate", event_id=event_id)  # taken in already
        if not taken:
            log(logger, "event.intake_undecided", logging.WARNING, event_id=event_id, channel=turn.channel)
            return BoltResponse(status=503, body="")  # no ack: Slack delivers it again later
        context["delivery_marks"] = (names, holder)
        await next()
        return None

    async def received(self, context: AsyncBoltContext) -> None:
        """The turn is in the store: later deliveries of the post are duplicates."""
        names, holder = context["delivery_marks"]
        await asyncio.gather(
            *(self.store.acquire_lease(f"done:{n}", "done", DEDUPE_TTL_S) for n in names),
            # held on, so a later delivery fails to take them and finds them done
            *(self.store.acquire_lease(n, holder, DEDUPE_TTL_S) for n in names),
        )

    async def release(self, context: AsyncBoltContext) -> None:
        """Let another delivery of the post take it (this one did not, or is finished)."""
        names, holder = context["delivery_marks"]
        await asyncio.gather(*(self.store.release_lease(n, holder) for n in names), return_exceptions=True)

    async def _take(self, names: list[str], holder: str) -> bool | None:
        """True: this delivery holds every mark; None: another delivery took the post in;
        False: another is still taking it in after ``INTAKE_WAIT_S``."""
        deadline = time.monotonic() + INTAKE_WAIT_S
        while True:
            taken = await asyncio.gather(
                *(self.store.acquire_lease(n, holder, INTAKE_PENDING_S) for n in names)
            )
            if all(taken):
                return True
            await asyncio.gather(*(self.store.release_lease(n, holder) for n in names))
            if any(await asyncio.gather(*(self.store.lease_owner(f"done:{n}") for n in names))):
                return None
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)


async def _drop(
    ack: AsyncAck, reason: str, body: dict[str, Any] | None = None, **fields: Any
) -> BoltResponse:
    """Acked (Slack must not retry it) and logged at DEBUG: channels are full of messages
    that are not for the bot."""
    if body is not None:
        fields.setdefault("event_id", _text(body.get("event_id")))
    log(logger, "event.ignored", logging.DEBUG, reason=reason, **fields)
    return await ack()


class RunLimits:
    """Per-user and per-channel limits on starting runs, with a friendly private note."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        note: Callable[[Turn, str], Awaitable[None]],
        *,
        user_per_minute: int = 10,
        channel_per_minute: int = 40,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.note = note
        self.user_per_minute = user_per_minute
        self.channel_per_minute = channel_per_minute

    async def middleware(self, context: AsyncBoltContext, ack: AsyncAck, next: Next) -> BoltResponse | None:
        turn: Turn = context["turn"]
        user_hits, channel_hits = await asyncio.gather(
            self.store.hit("user-runs", f"{turn.team}/{turn.user}", 60),
            self.store.hit("channel-runs", f"{turn.team}/{turn.channel}", 60),
        )
        if user_hits <= self.user_per_minute and channel_hits <= self.channel_per_minute:
            await next()
            return None
        who = "you are" if user_hits > self.user_per_minute else "this channel is"
        log(logger, "turn.limited", user=turn.user, channel=turn.channel, event_id=turn.event_id)
        self.metrics.turns_ended.labels("limited").inc()
        await self.note(turn, who)
        return await ack()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def _true() -> bool:
    return True
