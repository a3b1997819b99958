"""The pipeline's front: a Slack message in, durably received, queued in its conversation,
answered (``TurnAnswer``) and delivered, whatever Slack or the agent service do meanwhile.

It joins the layers without letting them leak into each other: the Slack side gives it a
``Turn`` and takes a writer; the agent side gives it backend-neutral events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from typing import Any

from slack_sdk.errors import SlackApiError

from .. import telemetry
from ..agents.routing import AgentRouter, RoutesError
from ..logs import log
from ..mentions import escape_mrkdwn
from ..metrics import Metrics
from ..slack.assistant import PaneThreads
from ..slack.native import NativeSupport, StreamTarget
from ..slack.pacing import Budgets
from ..slack.sink import Turn
from ..slack.workspaces import Workspaces
from ..slack.writer import ReplyWriter
from ..store import ConversationKey, InFlight, Store
from ..store.audit import AuditTrail
from .answer import TurnAnswer, fields_of
from .ask_again import AskAgain
from .context import BOT_THREAD_TTL_S, ContextReader
from .files_in import FilesIn
from .files_out import FilesOut
from .ports import Approver, ToolRunner
from .queue import ConversationQueue
from .reply import Caps, Outcome

logger = logging.getLogger("bot.turns")

PLACEHOLDER_WAIT_S = 5.0  # how long an owner waits for the receiving replica's placeholder
INTERRUPTED_FINISH_S = 10.0  # a reply cut by shutdown gets this long to show its last line


class TurnOrchestrator:
    def __init__(
        self,
        *,
        router: AgentRouter,
        store: Store,
        workspaces: Workspaces,
        budgets: Budgets,
        tools: ToolRunner | None = None,
        admins: frozenset[str] = frozenset(),
        context_messages: int = 15,
        context_chars: int = 8_000,
        busy_wait_s: float = 120.0,
        replica_id: str | None = None,
        metrics: Metrics | None = None,
        allow_mass_mentions: bool = False,
        lease_ttl_s: float = 15.0,
        approver: Approver | None = None,
        delivery_deadline_s: float = 900.0,
        caps: Caps | None = None,
        files_in: FilesIn | None = None,
        files_out: FilesOut | None = None,
        audit: AuditTrail | None = None,
        native: NativeSupport | None = None,
        panes: PaneThreads | None = None,
    ) -> None:
        self.router = router  # which agent answers where (one, or a routing file's)
        self.store = store
        self.workspaces = workspaces  # each workspace's Slack client (one, or OAuth installs)
        self.budgets = budgets
        self.admins = admins
        self.approver = approver
        self.audit = audit  # decisions on the agent's own tools (plugin calls: the runner's)
        self.busy_wait_s = busy_wait_s
        self.caps = caps or Caps()
        self.delivery_deadline_s = delivery_deadline_s
        self.allow_mass_mentions = allow_mass_mentions
        self.native = native or NativeSupport()  # where replies stream natively (BOT_STREAM_MODE)
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.metrics = metrics or Metrics()
        self.context = ContextReader(
            workspaces,
            store,
            admins,
            tools,
            allow_mass_mentions=allow_mass_mentions,
            context_messages=context_messages,
            context_chars=context_chars,
            panes=panes,
        )
        self.queue = ConversationQueue(store, self.replica_id, self._answer, lease_ttl_s=lease_ttl_s)
        self.again = AskAgain(store, admins)
        self.files_in = files_in  # files people share, given to the agent
        self.files_out = files_out  # files the agent makes, shared in the thread
        self.answering: set[asyncio.Task[Any]] = set()
        self._writers: dict[str, ReplyWriter] = {}  # placeholders posted here, not yet answered
        self._records: dict[str, InFlight] = {}  # one record object per reply being handled here
        self._active: dict[str, TurnAnswer] = {}

    # -- intake ---------------------------------------------------------------------------------

    async def handle(self, turn: Turn) -> None:
        """Answer one message. Never raises: every failure ends as a clear line in Slack.

        The turn is durable first (another process answers it if this one dies), the
        placeholder goes up as soon as Slack takes it (retried until the delivery deadline,
        never given up after a number of tries), and the turn joins its conversation's queue:
        whichever process owns the conversation (a lease in the store) answers it in order,
        whether or not Slack has shown the placeholder yet.
        """
        record = await self.receive(turn)
        await self.answer(record, turn)

    async def receive(self, turn: Turn) -> InFlight:
        """The durable intake: the turn written to the store (cheap, so it can run before Slack
        gets its ack). A post already taken in (by a process that died before telling Slack)
        is not taken twice: its record is returned, and whoever owns it answers it."""
        turn_id = turn_id_of(turn)
        existing = await self.store.reply(turn_id)
        if existing is not None:
            log(logger, "turn.already_received", owner=existing.owner, **fields_of(turn, turn_id))
            return existing
        self.metrics.turns_started.inc()
        payload = {
            **turn.to_json(),
            "turn_id": turn_id,
            "message_ts": "",
            "attempt": 0,
            "received_by": self.replica_id,
        }
        record = InFlight(
            turn_id,
            turn.team,
            turn.channel,
            turn.thread_ts,
            "",
            self.replica_id,
            time.time(),
            user=turn.user,
            state="received",
            payload=json.dumps(payload),
        )
        await self.store.record_reply(record)
        self._records[turn_id] = record
        log(logger, "turn.received", **fields_of(turn, turn_id))
        return record

    async def answer(self, record: InFlight, turn: Turn) -> None:
        """Post the placeholder and queue the turn; answer it here if this process owns the
        conversation, else leave it (and the placeholder) to the owner."""
        if record.owner != self.replica_id:
            return  # taken in by another process: it answers, or recovery does if it died
        received = time.monotonic()
        # the bot is in this thread from now on: follow-ups need no mention (any replica)
        await self.store.acquire_lease(f"bot-thread:{turn.key.as_str()}", "bot", BOT_THREAD_TTL_S)
        if await self.queue.owned_here(turn.key) is False or await self.queue.answered_elsewhere(turn.key):
            # the owner posts the placeholder when it answers (after any earlier turn still
            # being answered elsewhere, so the answers stand in the thread in the order asked)
            await self.queue.enqueue(record)
            self._records.pop(record.turn_id, None)
            return
        writer = self._writer(turn, record.turn_id, fields_of(turn, record.turn_id))
        writer.on_posted = lambda ts: self._placeholder_posted(record.turn_id, ts, received)
        writer.begin()
        self._writers[record.turn_id] = writer
        await self.queue.enqueue(record)
        if record.turn_id not in self._writers or await self.queue.owned_here(turn.key):
            return  # answered here, or our own queue answers it next with this writer
        leftover = self._writers.pop(record.turn_id, None)
        if leftover is not None:  # another replica owns the conversation and answers the turn
            await self._hand_off(leftover, record.turn_id)
        if self._records.get(record.turn_id) is record:
            del self._records[record.turn_id]

    async def enqueue(self, record: InFlight, *, first: bool = False) -> None:
        await self.queue.enqueue(record, first=first)

    async def drain(self, key: ConversationKey) -> None:
        await self.queue.drain(key)

    async def _placeholder_posted(self, turn_id: str, ts: str, received: float) -> None:
        """The first message is up: remember where it is (for whoever finishes the reply)."""
        self.metrics.first_write.observe(time.monotonic() - received)
        current = mine = self._records.get(turn_id)
        if mine is not None and not mine.message_ts:
            mine.message_ts, mine.pages = ts, [ts]  # our copy, which we may write again later
        if mine is None or mine.state != "running" or mine.owner != self.replica_id:
            # not answered here (yet): another replica's queue may have taken the turn
            # meanwhile, so note the message on the stored record, not over it with our copy
            current = await self.store.reply(turn_id)
        if current is not None and (current is mine or not current.message_ts):
            current.message_ts, current.pages = current.message_ts or ts, current.pages or [ts]
            await self.store.record_reply(current)

    async def _placeholder_of(self, turn_id: str, *, waiting: bool) -> InFlight | None:
        """The turn's record; when another replica took the message, give its placeholder a
        moment to appear, so the reply continues there instead of in a second message."""
        deadline = time.monotonic() + (PLACEHOLDER_WAIT_S if waiting else 0.0)
        while True:
            current = await self.store.reply(turn_id)
            if current is None or current.message_ts or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(0.1)

    async def _hand_off(self, writer: ReplyWriter, turn_id: str) -> None:
        """This replica took the message but another one answers it: leave no task behind. A
        placeholder of ours that the owner did not adopt (it posted its own) is removed."""
        if writer.holding_back:  # a pane's turn posts nothing before its first words: none to remove
            await writer.aclose()
            return
        ts = await writer.start(within_s=max(0.0, writer.deadline - time.monotonic()))
        await writer.aclose()
        current = await self.store.reply(turn_id)
        if ts and (current is None or current.message_ts != ts):
            with contextlib.suppress(SlackApiError):
                await writer.client.chat_delete(channel=writer.channel, ts=ts)

    # -- answering ------------------------------------------------------------------------------

    def _writer(
        self, turn: Turn, turn_id: str, fields: dict[str, Any], existing_pages: list[str] | None = None
    ) -> ReplyWriter:
        client = self.workspaces.client(turn.team)
        stream_to = None
        if self.native.mode != "edit" and turn.user:
            stream_to = StreamTarget(client, turn.channel, turn.thread_ts, turn.team, turn.user, self.native)
        return ReplyWriter(
            client,
            self.budgets.for_team(turn.team),
            turn.channel,
            turn.thread_ts,
            stop_value=turn_id,
            log_fields=fields,
            existing_pages=existing_pages,
            allow_mass_mentions=self.allow_mass_mentions,
            on_rate_limited=self.metrics.slack_rate_limited.inc,
            deadline_s=self.delivery_deadline_s,
            speaker=self.speaker(turn.team, turn.channel),
            traceparent=turn.traceparent,
            stream_to=stream_to,
            quiet_start=turn.surface == "assistant",
        )

    def speaker(self, team: str, channel: str) -> str | None:
        """The answering agent's name for the status line, when several agents answer."""
        if not self.router.routed:
            return None
        return escape_mrkdwn(self.router.label(self.router.route(team, channel)))

    def writer_for(self, reply: InFlight) -> ReplyWriter:
        """A writer for a message another process started (recovery, restart)."""
        turn = Turn(reply.team, reply.channel, reply.thread_ts, reply.message_ts, reply.user, "")
        fields = {"channel": reply.channel, "thread_ts": reply.thread_ts, "turn": reply.turn_id}
        pages = reply.pages or ([reply.message_ts] if reply.message_ts else [])
        return self._writer(turn, reply.turn_id, fields, existing_pages=pages)

    async def _answer(self, item: dict[str, Any]) -> None:
        """Answer one queued turn (called by its conversation's queue, in order)."""
        turn_id, attempt = item.pop("turn_id"), int(item.pop("attempt", 0) or 0)
        queued_ts = item.pop("message_ts", "") or ""
        received_by = item.pop("received_by", "") or ""
        if not await self.store.claim("answer", f"{turn_id}:{attempt}", 86400):
            return  # queued twice (a takeover re-queued it): answered once
        try:
            turn = Turn.from_json(item)
        except ValueError as exc:  # not ours to guess at: say so where an operator looks
            log(logger, "turn.unreadable", logging.ERROR, turn=turn_id, error=str(exc))
            await self.store.finish_reply(turn_id)
            return
        attributes = {
            "turn.id": turn_id,
            "slack.event_id": turn.event_id,
            "slack.team": turn.team,
            "slack.channel": turn.channel,
            "slack.thread_ts": turn.thread_ts,
            "bot.replica": self.replica_id,
        }
        with telemetry.span("turn", attributes, parent=turn.traceparent):
            await self._answer_traced(turn, turn_id, queued_ts, item, received_by, attempt)

    async def _answer_traced(
        self, turn: Turn, turn_id: str, queued_ts: str, item: dict[str, Any], received_by: str, attempt: int
    ) -> None:
        waiting = received_by not in ("", self.replica_id)
        answer = await self._prepare(turn, turn_id, queued_ts, item, waiting=waiting)
        # taken in by another replica, or asked afresh after one died: either may have put up a
        # placeholder this one never saw
        answer.received_elsewhere = waiting or attempt > 0
        telemetry.annotate(**{"agent.route": answer.route or None})
        started = time.monotonic()
        self._active[turn_id] = answer
        self.metrics.active_streams.inc()
        task = asyncio.current_task()
        if task is not None:
            self.answering.add(task)
        try:
            outcome, ending = await answer.run()
        finally:
            self._active.pop(turn_id, None)
            self.metrics.active_streams.dec()
            if task is not None:
                self.answering.discard(task)
        telemetry.annotate(**{"turn.outcome": outcome.value, "agent.run_id": answer.run_id})
        await self._deliver(answer, outcome, ending, started)

    async def _prepare(
        self, turn: Turn, turn_id: str, queued_ts: str, item: dict[str, Any], *, waiting: bool
    ) -> TurnAnswer:
        """The writer (continuing any placeholder already up) and the reply's record."""
        current = await self._placeholder_of(turn_id, waiting=waiting)
        pages = (current.pages or [current.message_ts]) if current and current.message_ts else []
        if not pages and queued_ts:
            pages = [queued_ts]
        writer = self._writers.pop(turn_id, None)
        if writer is None:
            writer = self._writer(turn, turn_id, fields_of(turn, turn_id), existing_pages=pages)
            if not pages:  # another process may have posted it and died before saying where
                await writer.adopt_posted()
        writer.begin()  # (re)post the placeholder if Slack has not taken one yet
        record = InFlight(
            turn_id,
            turn.team,
            turn.channel,
            turn.thread_ts,
            writer.ts or "",
            self.replica_id,
            time.time(),
            user=turn.user,
            state="running",
            payload=current.payload if current is not None else json.dumps({**item, "turn_id": turn_id}),
            pages=[p.ts for p in writer.pages if p.ts],
        )
        self._records[turn_id] = record
        if writer.on_posted is None:
            writer.on_posted = lambda ts: self._placeholder_posted(turn_id, ts, time.monotonic())
        await self.store.record_reply(record)
        return TurnAnswer(self, turn, turn_id, writer, record)

    async def _deliver(self, answer: TurnAnswer, outcome: Outcome, ending: str, started: float) -> None:
        """The final text, delivered (or kept for recovery if Slack will not take it)."""
        writer, record = answer.writer, answer.record
        body = answer.reply.body(ending)
        cut = outcome is Outcome.INTERRUPTED
        again = cut and await self.again.keep(record)
        # what a thumbs up / down names: the turn, the agent (route) and the run that answered
        about = (
            f"{answer.turn_id}|{answer.route}|{answer.run_id or ''}" if outcome is Outcome.COMPLETED else ""
        )
        await writer.finish(
            body, deadline_s=INTERRUPTED_FINISH_S if cut else None, ask_again=again, feedback=about
        )
        self._records.pop(answer.turn_id, None)
        if answer.received_elsewhere and not writer.undelivered:
            await writer.remove_strays()  # the receiver's placeholder, if it went unadopted
        if answer.produced and self.files_out is not None:
            await self.files_out.deliver(
                answer.turn.team,
                answer.turn.channel,
                answer.turn.thread_ts,
                answer.produced,
                answer.fields,
                agents=answer.agents,
            )
        if writer.undelivered:
            await self.keep_undelivered(record, writer, body)
        else:
            await self.store.finish_reply(answer.turn_id)
        self.metrics.turns_ended.labels(outcome.value).inc()
        self.metrics.stream_duration.observe(time.monotonic() - started)
        ms = round((time.monotonic() - started) * 1000)
        log(
            logger,
            "turn.end",
            outcome=outcome.value,
            ms=ms,
            slack_calls=writer.calls,
            pages=len(writer.pages),
            **answer.fields,
        )

    async def keep_undelivered(self, record: InFlight, writer: ReplyWriter, body: str) -> None:
        """Slack did not take the reply before its deadline: keep it, with its text, for
        recovery to deliver later (counted in the log and in /metrics)."""
        record.state = "undelivered"
        record.message_ts = writer.ts or record.message_ts
        record.pages = [page.ts for page in writer.pages if page.ts]
        since = _undelivered_since(record.payload)
        record.payload = json.dumps({"body": body, "undelivered_since": since})
        record.started_at = time.time()
        await self.store.record_reply(record)
        self.metrics.undelivered.inc()
        log(logger, "turn.undelivered", logging.WARNING, turn=record.turn_id, channel=record.channel)

    async def aclose(self) -> None:
        for files in (self.files_in, self.files_out):
            if files is not None:
                await files.aclose()

    async def ask_again(self, turn_id: str, user: str) -> Turn | str:
        """The *Ask again* button: the question to receive again, or a note for the clicker."""
        return await self.again.take(turn_id, user)

    # -- Stop -----------------------------------------------------------------------------------

    async def stop(self, turn_id: str, user: str) -> str:
        """The Stop button. Returns a short answer for the person who clicked."""
        answer = self._active.get(turn_id)
        if answer is None:
            return await self._stop_elsewhere(turn_id, user)
        if user != answer.requester and user not in self.admins:
            return f"Only <@{answer.requester}> (or an admin) can stop this reply."
        await answer.stop(user)
        return "Stopping…"

    async def _stop_elsewhere(self, turn_id: str, user: str) -> str:
        """The reply is being written by another replica: cancel its run directly."""
        record = await self.store.reply(turn_id)
        if record is None or record.state not in ("received", "queued", "running"):
            return "This reply has already finished."
        if user != record.user and user not in self.admins:
            return f"Only <@{record.user}> (or an admin) can stop this reply."
        if record.agent_thread_id and record.run_id:
            try:
                agents, thread_id = self.router.resolve(record.agent_thread_id)
            except RoutesError:
                return "This reply's agent is no longer configured here; it cannot be stopped."
            await agents.cancel(thread_id, record.run_id)
            return "Stopping…"
        return "This reply has not started yet; it will be answered in turn."


def turn_id_of(turn: Turn) -> str:
    """One id per post (both deliveries of a mention, and Slack's retries, get the same one);
    a question asked again is a new turn."""
    again = turn.event_id.count(":again")
    key = f"{turn.team}:{turn.channel}:{turn.ts}:{again}"
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def _undelivered_since(payload: str) -> float:
    try:
        return float(json.loads(payload or "{}").get("undelivered_since") or time.time())
    except (ValueError, TypeError, AttributeError):
        return time.time()
