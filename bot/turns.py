"""The orchestrator of one turn: a Slack message in, the agent's reply streamed out.

It joins the layers without letting them leak into each other: the Slack side gives it a
``Turn`` and a writer; the agent side gives it backend-neutral events. One run per agent
thread at a time: a second message waits its turn (its placeholder is up at once) and is
answered after, so nobody ever sees "thread busy".
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from .agents import (
    AgentBackend,
    AgentConnectionError,
    AgentServiceError,
    ApprovalDecision,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextTooLongError,
    FunctionTool,
    NotFoundError,
    RateLimitedError,
    RunSnapshot,
    RunStream,
    StreamInterruptedError,
    ThreadBusyError,
    ToolOutput,
    TurnContext,
    function_tool,
)
from .agents.events import (
    AgentEvent,
    ApprovalRequest,
    ApprovalsRequested,
    Cancelled,
    Completed,
    Expired,
    Failed,
    Incomplete,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallsRequested,
)
from .logs import log
from .mentions import escape_mrkdwn
from .metrics import Metrics
from .plugins.context import ToolContext
from .plugins.runner import CannotAsk
from .slack.pacing import Budgets
from .slack.render import Citations
from .slack.sink import Turn
from .slack.text import UserDirectory, slack_to_agent_text
from .slack.writer import ReplyWriter
from .store import ConversationKey, InFlight, Store

logger = logging.getLogger("bot.turns")
T = TypeVar("T")

BOT_THREAD_TTL_S = 90 * 86400.0
INTERRUPTED = "_This reply was interrupted (the bot was stopping). Please ask again._"
STOPPED = "_Stopped._"
CONTEXT_PAGES = 5  # pages of 200 read at most for a first mention's context
PLACEHOLDER_WAIT_S = 5.0  # how long an owner waits for the receiving replica's placeholder
MARKER_MAX = 42  # a citation marker (【...】) is at most this long
TOO_LONG = (
    "_This conversation has grown too long for the agent to read in full. "
    "Mention me in a new thread (or start a new DM thread) to start fresh._"
)
EXPIRY_MARGIN_S = 5.0  # tool outputs must reach the service this long before the run expires


class ToolRunner(Protocol):
    """Answers the agent's function calls (the plugin registry implements this)."""

    async def definitions(self, context: ToolContext) -> list[dict[str, Any]]: ...

    async def run(self, calls: Sequence[ToolCall], context: ToolContext) -> list[dict[str, str]]: ...


class Approver(Protocol):
    """Asks a person to approve a tool call the agent's own tools want to make (Slack buttons)."""

    async def ask(self, context: ToolContext, title: str, arguments: dict[str, Any]) -> bool: ...


@dataclass
class _Active:
    requester: str
    record: InFlight | None = None
    thread_id: str | None = None
    run_id: str | None = None
    stop_requested: bool = False
    stopped_by: str | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


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
        body = self.render(final=True) + self.citations.footer()
        if ending:
            body = f"{body}\n\n{ending}" if body.strip() else ending
        return body or "_The agent returned no text._"


def _undelivered_since(payload: str) -> float:
    try:
        return float(json.loads(payload or "{}").get("undelivered_since") or time.time())
    except (ValueError, TypeError, AttributeError):
        return time.time()


def _fields(turn: Turn, turn_id: str) -> dict[str, Any]:
    """The log fields an operator follows one conversation by."""
    return {"event_id": turn.event_id, "channel": turn.channel, "thread_ts": turn.thread_ts, "turn": turn_id}


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


async def _unless_stopped(work: Awaitable[T], active: _Active) -> T | None:
    """The work's result, or None when Stop is clicked first (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(active.stopped.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
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


class TurnOrchestrator:
    def __init__(
        self,
        *,
        agents: AgentBackend,
        store: Store,
        slack: AsyncWebClient,
        budgets: Budgets,
        bot_user_id: str | None = None,
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
    ) -> None:
        self.delivery_deadline_s = delivery_deadline_s
        self.caps = caps or Caps()
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.metrics = metrics or Metrics()
        self.allow_mass_mentions = allow_mass_mentions
        self.lease_ttl_s = lease_ttl_s
        self._writers: dict[str, ReplyWriter] = {}
        self.answering: set[asyncio.Task[Any]] = set()
        self.agents = agents
        self.approver = approver
        self.store = store
        self.slack = slack
        self.budgets = budgets
        self.bot_user_id = bot_user_id
        self.tools = tools
        self.admins = admins
        self.context_messages = context_messages
        self.context_chars = context_chars
        self.busy_wait_s = busy_wait_s
        self.users = UserDirectory(slack)
        self._active: dict[str, _Active] = {}
        self._records: dict[str, InFlight] = {}  # the reply record of each turn being answered
        self.in_flight: set[asyncio.Task[None]] = set()

    # -- entry points ---------------------------------------------------------------------

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
        gets its ack)."""
        turn_id = uuid.uuid4().hex[:12]
        self.metrics.turns_started.inc()
        payload = {
            **asdict(turn),
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
        self._records[turn_id] = record  # one object per reply: every write carries what is known
        log(logger, "turn.received", **_fields(turn, turn_id))
        return record

    async def answer(self, record: InFlight, turn: Turn) -> None:
        received = time.monotonic()
        fields = _fields(turn, record.turn_id)
        writer = self._writer(turn, record.turn_id, fields)
        writer.on_posted = lambda ts: self._placeholder_posted(record.turn_id, ts, received)
        owner = await self.store.lease_owner(f"conv:{turn.key.as_str()}") or ""
        if owner and not owner.startswith(f"{self.replica_id}:"):
            # another replica owns the conversation: it posts the placeholder when it answers
            await self.store.acquire_lease(f"bot-thread:{turn.key.as_str()}", "bot", BOT_THREAD_TTL_S)
            await self.enqueue(record)
            self._records.pop(record.turn_id, None)
            return
        writer.begin()
        self._writers[record.turn_id] = writer
        # the bot is in this thread from now on: follow-ups need no mention (any replica)
        await self.store.acquire_lease(f"bot-thread:{turn.key.as_str()}", "bot", BOT_THREAD_TTL_S)
        await self.enqueue(record)
        if record.turn_id not in self._writers:
            return  # answered here
        owner = await self.store.lease_owner(f"conv:{turn.key.as_str()}") or ""
        if owner.startswith(f"{self.replica_id}:"):
            return  # our own queue answers it next, with this writer
        leftover = self._writers.pop(record.turn_id, None)
        if leftover is not None:  # another replica owns the conversation and answers the turn
            await self._hand_off(leftover, record.turn_id)
        if self._records.get(record.turn_id) is record:
            del self._records[record.turn_id]

    async def _placeholder_posted(self, turn_id: str, ts: str, received: float) -> None:
        """The first message is up: remember where it is (for whoever finishes the reply)."""
        self.metrics.first_write.observe(time.monotonic() - received)
        current = self._records.get(turn_id) or await self.store.reply(turn_id)
        if current is not None and not current.message_ts:
            current.message_ts = ts
            current.pages = [ts]
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
        ts = await writer.start(within_s=max(0.0, writer.deadline - time.monotonic()))
        await writer.aclose()
        current = await self.store.reply(turn_id)
        if ts and (current is None or current.message_ts != ts):
            with contextlib.suppress(SlackApiError):
                await self.slack.chat_delete(channel=writer.channel, ts=ts)

    async def enqueue(self, record: InFlight) -> None:
        """Put a received turn in its conversation's queue and answer the queue if free."""
        key = ConversationKey(record.team, record.channel, record.thread_ts)
        await self.store.push_turn(key, record.payload)
        record.state = "queued"
        await self.store.record_reply(record)
        await self.drain(key)

    async def drain(self, key: ConversationKey) -> None:
        """Answer the conversation's queued turns, in order, if nobody else is."""
        while True:
            owner = f"{self.replica_id}:{uuid.uuid4().hex[:8]}"
            lease = f"conv:{key.as_str()}"
            if not await self.store.acquire_lease(lease, owner, self.lease_ttl_s):
                return  # its owner answers it, in order
            renewal = asyncio.get_running_loop().create_task(self._keep_lease(lease, owner))
            try:
                while not renewal.done() and (payload := await self.store.pop_turn(key, self.replica_id)):
                    await self._answer(json.loads(payload))
            finally:
                renewal.cancel()
                await self.store.release_lease(lease, owner)
            # a turn queued while the lease was being released found it taken: look again
            if await self.store.queue_length(key) == 0:
                return

    async def _keep_lease(self, lease: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            if not await self.store.renew_lease(lease, owner, self.lease_ttl_s):
                log(logger, "turn.lease_lost", logging.WARNING, lease=lease)
                return

    def _writer(
        self, turn: Turn, turn_id: str, fields: dict[str, Any], existing_pages: list[str] | None = None
    ) -> ReplyWriter:
        return ReplyWriter(
            self.slack,
            self.budgets.for_team(turn.team),
            turn.channel,
            turn.thread_ts,
            stop_value=turn_id,
            log_fields=fields,
            existing_pages=existing_pages,
            allow_mass_mentions=self.allow_mass_mentions,
            on_rate_limited=self.metrics.slack_rate_limited.inc,
            deadline_s=self.delivery_deadline_s,
        )

    def writer_for(self, reply: InFlight) -> ReplyWriter:
        """A writer for a message another process started (recovery, restart)."""
        turn = Turn(reply.team, reply.channel, reply.thread_ts, reply.message_ts, reply.user, "")
        fields = {"channel": reply.channel, "thread_ts": reply.thread_ts, "turn": reply.turn_id}
        pages = reply.pages or ([reply.message_ts] if reply.message_ts else [])
        return self._writer(turn, reply.turn_id, fields, existing_pages=pages)

    async def _answer(self, item: dict[str, Any]) -> None:
        turn_id, attempt = item.pop("turn_id"), int(item.pop("attempt", 0) or 0)
        queued_ts = item.pop("message_ts", "") or ""
        received_by = item.pop("received_by", "") or ""
        if not await self.store.claim("answer", f"{turn_id}:{attempt}", 86400):
            return  # queued twice (a takeover re-queued it): answered once
        item["files"] = tuple(item.get("files") or ())
        turn = Turn(**item)
        fields = _fields(turn, turn_id)
        current = await self._placeholder_of(turn_id, waiting=received_by not in ("", self.replica_id))
        pages = (current.pages or [current.message_ts]) if current and current.message_ts else []
        if not pages and queued_ts:
            pages = [queued_ts]
        writer = self._writers.pop(turn_id, None) or self._writer(turn, turn_id, fields, existing_pages=pages)
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
        started = time.monotonic()
        active = self._active[turn_id] = _Active(turn.user, record=record)
        reply = Reply()
        ending = ""
        outcome = "completed"
        self.metrics.active_streams.inc()
        task = asyncio.current_task()
        if task is not None:
            self.answering.add(task)
        try:
            async with asyncio.timeout(self.caps.turn_seconds):
                ending = await self._run_turn(turn, writer, reply, active, fields)
            outcome = "stopped" if ending == STOPPED else "failed" if ending else "completed"
        except TimeoutError:
            log(logger, "turn.cap", logging.WARNING, cap="turn_seconds", **fields)
            minutes = self.caps.turn_seconds / 60
            ending, outcome = f"_The answer took longer than {minutes:g} minutes and was stopped._", "failed"
        except ContextTooLongError:
            ending, outcome = TOO_LONG, "failed"
        except RateLimitedError:
            ending, outcome = "_The agent service is busy right now. Please try again in a minute._", "failed"
        except AgentServiceError as exc:
            ref = uuid.uuid4().hex[:8]
            ending, outcome = service_failure_line(exc, ref), "failed"
            log(logger, "turn.agent_error", logging.WARNING, error=str(exc), ref=ref, **fields)
        except asyncio.CancelledError:
            ending, outcome = INTERRUPTED, "interrupted"
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("turn failed", extra={"fields": {**fields, "ref": ref}})
            ending, outcome = f"_Something went wrong (ref: {ref})._", "error"
        finally:
            self._active.pop(turn_id, None)
            self.metrics.active_streams.dec()
            if task is not None:
                self.answering.discard(task)
        if outcome != "completed" and active.thread_id:
            await self._leave_usable(active, outcome, fields)
        body = reply.body(ending)
        await writer.finish(body, deadline_s=10.0 if outcome == "interrupted" else None)
        self._records.pop(turn_id, None)
        if writer.undelivered:
            await self.keep_undelivered(record, writer, body)
        else:
            await self.store.finish_reply(turn_id)
        self.metrics.turns_ended.labels(outcome).inc()
        self.metrics.stream_duration.observe(time.monotonic() - started)
        log(
            logger,
            "turn.end",
            outcome=outcome,
            ms=round((time.monotonic() - started) * 1000),
            slack_calls=writer.calls,
            pages=len(writer.pages),
            **fields,
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

    async def stop(self, turn_id: str, user: str) -> str:
        """The Stop button. Returns a short answer for the person who clicked."""
        active = self._active.get(turn_id)
        if active is None:
            return await self._stop_elsewhere(turn_id, user)
        if user != active.requester and user not in self.admins:
            return f"Only <@{active.requester}> (or an admin) can stop this reply."
        active.stop_requested = True
        active.stopped.set()
        active.stopped_by = user
        if active.thread_id and active.run_id:
            await self.agents.cancel(active.thread_id, active.run_id)
        return "Stopping…"

    async def _stop_elsewhere(self, turn_id: str, user: str) -> str:
        """The reply is being written by another replica: cancel its run directly."""
        record = next((r for r in await self.store.replies_in_flight() if r.turn_id == turn_id), None)
        if record is None:
            return "This reply has already finished."
        if user != record.user and user not in self.admins:
            return f"Only <@{record.user}> (or an admin) can stop this reply."
        if record.agent_thread_id and record.run_id:
            await self.agents.cancel(record.agent_thread_id, record.run_id)
            return "Stopping…"
        return "This reply has not started yet; it will be answered in turn."

    async def _leave_usable(self, active: _Active, outcome: str, fields: dict[str, Any]) -> None:
        """A turn that did not complete must not leave its conversation stuck (a function call
        without its output, a run left open, a message held for a run that never started)."""
        reason = {
            "stopped": "cancelled by the user",
            "interrupted": "not run: the bot was stopping",
        }.get(outcome, "not run: the request failed")
        assert active.thread_id is not None
        try:
            await asyncio.wait_for(
                asyncio.shield(self.agents.abandon(active.thread_id, active.run_id, reason)), 15
            )
        except (AgentServiceError, TimeoutError, asyncio.CancelledError) as exc:
            log(logger, "turn.leave_failed", logging.WARNING, error=repr(exc), **fields)

    # -- the turn -------------------------------------------------------------------------

    async def _run_turn(
        self,
        turn: Turn,
        writer: ReplyWriter,
        reply: Reply,
        active: _Active,
        fields: dict[str, Any],
    ) -> str:
        thread_id = await self._agent_thread(turn, fields)
        active.thread_id = thread_id
        if active.record is not None:
            active.record.agent_thread_id = thread_id
        fields["thread_id"] = thread_id
        text = await slack_to_agent_text(
            turn.text,
            bot_user_id=self.bot_user_id,
            names=self.users.display_name,
            files=list(turn.files),
        )
        await self._add_message(thread_id, text or "(empty message)", fields)
        if active.stop_requested:
            return STOPPED
        if turn.user not in self.admins:
            await self._mark_others(turn.key)
        context = await self._tool_context(turn)
        tools = await self._function_tools(context)
        stream = await self.agents.start_run(
            thread_id,
            context=await self._turn_context(turn, context),
            tools=tools,
            metadata={
                "slack_team": turn.team,
                "slack_channel": turn.channel,
                "slack_thread_ts": turn.thread_ts,
                "slack_event_id": turn.event_id[:64],
            },
        )
        rounds = 0
        while True:
            paused = await self._stream_until_pause(stream, thread_id, reply, writer, active, fields)
            if isinstance(paused, str):
                return paused
            if active.stop_requested:
                return STOPPED
            rounds += 1
            if rounds > self.caps.tool_rounds:
                log(logger, "turn.cap", logging.WARNING, cap="tool_rounds", rounds=rounds - 1, **fields)
                limit = self.caps.tool_rounds
                return f"_Stopped: the agent asked for tools more than {limit} times in one turn._"
            answered = await _unless_stopped(
                self._answer_pause(paused, stream.expires_at, thread_id, context, writer, fields), active
            )
            if answered is None or active.stop_requested:
                return STOPPED  # the tools were left running no longer than the click
            stream = answered

    async def _stream_until_pause(
        self,
        stream: RunStream,
        thread_id: str,
        reply: Reply,
        writer: ReplyWriter,
        active: _Active,
        fields: dict[str, Any],
    ) -> str | ToolCallsRequested | ApprovalsRequested:
        """Show one stream; returns the ending line, or what the run now waits for."""
        paused: ToolCallsRequested | ApprovalsRequested | None = None
        try:
            async with stream:
                async for event in stream.events():
                    if stream.run_id and active.run_id != stream.run_id:
                        await self._note_run(stream.run_id, thread_id, active, fields)
                    if active.stop_requested:  # stop showing at once, whatever the service does
                        return STOPPED
                    if isinstance(event, (ToolCallsRequested, ApprovalsRequested)):
                        paused = event
                        continue
                    ending = self._show(event, reply, writer, fields)
                    if ending is not None:
                        return ending
        except StreamInterruptedError as exc:
            log(logger, "turn.stream_broken", logging.WARNING, error=str(exc), **fields)
            return await self._recover(thread_id, exc.run_id or active.run_id, reply, writer, fields)
        return paused if paused is not None else ""

    async def _note_run(self, run_id: str, thread_id: str, active: _Active, fields: dict[str, Any]) -> None:
        active.run_id = run_id
        fields["run_id"] = run_id
        if active.record is not None:
            active.record.run_id = run_id
            await self.store.record_reply(active.record)
        if active.stop_requested:
            await self.agents.cancel(thread_id, run_id)

    async def _answer_pause(
        self,
        paused: ToolCallsRequested | ApprovalsRequested,
        expires_at: float | None,
        thread_id: str,
        context: ToolContext,
        writer: ReplyWriter,
        fields: dict[str, Any],
    ) -> RunStream:
        """Run the tools (or ask for the approvals) the run waits for, within the run's own
        deadline, and stream what follows."""
        budget = None if expires_at is None else expires_at - time.time() - EXPIRY_MARGIN_S
        if isinstance(paused, ApprovalsRequested):
            decisions = await self._decide(paused.approvals, context, writer, budget, fields)
            writer.status(None)
            return await self.agents.answer_approvals(thread_id, paused.run_id, decisions)
        outputs = await self._run_tools(paused, context, writer, budget, fields)
        writer.status(None)
        return await self.agents.submit_tool_outputs(thread_id, paused.run_id, outputs)

    def _show(
        self, event: AgentEvent, reply: Reply, writer: ReplyWriter, fields: dict[str, Any]
    ) -> str | None:
        """Show one event; returns the ending line when the run has ended."""
        if isinstance(event, TextDelta):
            room = self.caps.reply_chars - reply.raw_length
            if room <= 0:
                log(logger, "turn.cap", logging.WARNING, cap="reply_chars", **fields)
                return f"_The reply was cut at {self.caps.reply_chars:,} characters._"
            reply.add(TextDelta(event.text[:room], event.annotations, event.message_id))
            writer.update(reply)
            return None
        if isinstance(event, StreamError):
            log(logger, "turn.stream_error", logging.WARNING, code=event.code, error=event.message, **fields)
            return None
        if isinstance(event, Completed):
            log(logger, "turn.completed", usage=event.usage.total_tokens if event.usage else None, **fields)
        elif isinstance(event, Failed):
            log(logger, "turn.run_failed", logging.WARNING, code=event.code, error=event.message, **fields)
        return ending_for(event)

    async def _run_tools(
        self,
        requested: ToolCallsRequested,
        context: ToolContext,
        writer: ReplyWriter,
        budget_s: float | None,
        fields: dict[str, Any],
    ) -> list[ToolOutput]:
        names = ", ".join(dict.fromkeys(call.name for call in requested.tool_calls))
        known = {tool.name for tool in await self._function_tools(context)}
        shown = dict.fromkeys(  # only the registry's own names reach Slack, never the agent's text
            escape_mrkdwn(call.name) if call.name in known else "an unknown tool"
            for call in requested.tool_calls
        )
        writer.status(f"Running {', '.join(shown)}…")
        log(logger, "turn.tools", tools=names, budget_s=budget_s, **fields)
        if self.tools is None:
            return [
                ToolOutput(c.id, f"error: no tool named {c.name!r} is installed")
                for c in requested.tool_calls
            ]
        declined = [
            ToolOutput(c.id, "error: not run: the agent's run would expire before this tool could finish")
            for c in requested.tool_calls
        ]
        if budget_s is not None and budget_s <= 0:
            log(logger, "turn.tools_declined", logging.WARNING, why="run expiring", **fields)
            return declined
        try:
            async with asyncio.timeout(budget_s):
                raw = await self.tools.run(requested.tool_calls, context)
        except TimeoutError:
            log(logger, "turn.tools_declined", logging.WARNING, why="run deadline reached", **fields)
            return declined
        return [ToolOutput(o["tool_call_id"], o["output"]) for o in raw]

    async def _decide(
        self,
        approvals: Sequence[ApprovalRequest],
        context: ToolContext,
        writer: ReplyWriter,
        budget_s: float | None,
        fields: dict[str, Any],
    ) -> list[ApprovalDecision]:
        """Ask the person (Approve / Deny in Slack) about each MCP call the agent wants."""
        writer.status("Waiting for approval…")
        decisions = []
        for request in approvals:
            approved = False
            if self.approver is not None:
                try:
                    arguments = json.loads(request.arguments or "{}")
                except ValueError:
                    arguments = {"arguments": request.arguments}
                title = f"{request.server_label}: {request.name}" if request.server_label else request.name
                try:
                    async with asyncio.timeout(budget_s):
                        approved = await self.approver.ask(context, title, arguments)
                except (TimeoutError, CannotAsk):
                    approved = False
            log(logger, "turn.approval", tool=request.name, approved=approved, **fields)
            reason = "" if approved else "declined in Slack"
            decisions.append(ApprovalDecision(request.id, approved, reason))
        return decisions

    async def _recover(
        self,
        thread_id: str,
        run_id: str | None,
        reply: Reply,
        writer: ReplyWriter,
        fields: dict[str, Any],
    ) -> str | ToolCallsRequested | ApprovalsRequested:
        """The stream broke: poll the run until it ends (show the stored answer) or waits."""
        if run_id is None:
            return "_The connection to the agent broke before the run started. Please try again._"
        snapshot = await wait_for_run(self.agents, thread_id, run_id, self.busy_wait_s)
        if snapshot is None:
            return "_The connection to the agent broke and the run did not finish in time._"
        if snapshot.text:
            reply.replace_with(Reply.of(snapshot))
            writer.update(reply.render(final=False))
        if snapshot.tool_calls:
            return ToolCallsRequested(snapshot.run_id, thread_id, snapshot.tool_calls)
        if snapshot.approvals:
            return ApprovalsRequested(snapshot.run_id, thread_id, snapshot.approvals)
        return ending_for(snapshot.final_event()) or ""

    # -- helpers --------------------------------------------------------------------------

    async def _mark_others(self, key: ConversationKey) -> None:
        await self.store.acquire_lease(f"others:{key.as_str()}", "1", BOT_THREAD_TTL_S)

    async def _tool_context(self, turn: Turn) -> ToolContext:
        others = await self.store.lease_owner(f"others:{turn.key.as_str()}") is not None
        return ToolContext(
            user_id=turn.user,
            user_name=await self.users.display_name(turn.user),
            team=turn.team,
            channel=turn.channel,
            thread_ts=turn.thread_ts,
            slack=self.slack,
            logger=logging.getLogger("bot.tools"),
            is_admin=turn.user in self.admins,
            allow_mass_mentions=self.allow_mass_mentions,
            thread_has_others=others,
        )

    async def _turn_context(self, turn: Turn, context: ToolContext) -> TurnContext:
        direct = turn.channel.startswith("D")
        return TurnContext(
            user_id=turn.user,
            user_name=context.user_name,
            timezone=await self.users.timezone(turn.user),
            channel_id=turn.channel,
            channel_name="" if direct else await self.users.channel_name(turn.channel),
            is_direct_message=direct,
        )

    async def _function_tools(self, context: ToolContext) -> list[FunctionTool]:
        if self.tools is None:
            return []
        return [function_tool(d) for d in await self.tools.definitions(context)]

    async def _agent_thread(self, turn: Turn, fields: dict[str, Any]) -> str:
        existing = await self.store.get_agent_thread(turn.key)
        if existing:
            return existing
        context = await self._thread_context(turn) if turn.thread_ts != turn.ts else []
        thread_id = await self.agents.create_conversation(
            context=context, metadata={"slack": f"{turn.team}/{turn.channel}/{turn.thread_ts}"}
        )
        await self.store.set_agent_thread(turn.key, thread_id)
        log(logger, "turn.thread_created", agent_thread=thread_id, context=len(context), **fields)
        return thread_id

    async def _thread_context(self, turn: Turn) -> list[str]:
        """The latest messages before the first mention in a human thread (the thread's own
        start matters less than what was just said), bounded by count and size; read once,
        when the conversation starts."""
        recent: deque[dict[str, Any]] = deque(maxlen=self.context_messages)
        cursor: str | None = None
        for _ in range(CONTEXT_PAGES):  # pages run oldest to newest: keep the tail
            try:
                response = await self.slack.conversations_replies(
                    channel=turn.channel,
                    ts=turn.thread_ts,
                    latest=turn.ts,
                    inclusive=False,
                    limit=200,
                    cursor=cursor,
                )
            except SlackApiError as exc:
                log(logger, "turn.context_unavailable", logging.INFO, error=str(exc.response.get("error")))
                break
            recent.extend(
                m
                for m in response.get("messages") or []
                if m.get("ts") != turn.ts and not m.get("bot_id") and not m.get("subtype")
            )
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return await self._context_lines(turn, list(recent))

    async def _context_lines(self, turn: Turn, messages: list[dict[str, Any]]) -> list[str]:
        lines: list[str] = []
        for message in messages:
            if message.get("user") not in self.admins:
                await self._mark_others(turn.key)
            who = await self.users.display_name(message.get("user", "someone"))
            text = await slack_to_agent_text(
                message.get("text", ""),
                bot_user_id=self.bot_user_id,
                names=self.users.display_name,
                files=message.get("files"),
            )
            lines.append(f"@{who}: {text}")
        while lines and sum(len(line) + 1 for line in lines) > self.context_chars:
            lines.pop(0)  # keep the most recent
        if not lines:
            return []
        return ["Earlier messages in this Slack thread, for context:\n" + "\n".join(lines)]

    async def _add_message(self, thread_id: str, text: str, fields: dict[str, Any]) -> None:
        """Add the message; if a run is still active on the thread (another process, a
        stuck run), wait for it to end rather than show "thread busy"."""
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            try:
                await self.agents.add_message(thread_id, text)
                return
            except ThreadBusyError as busy:
                if time.monotonic() > deadline or not busy.active_run_id:
                    raise
                log(
                    logger,
                    "turn.thread_busy",
                    logging.INFO,
                    active_run=busy.active_run_id,
                    **fields,
                )
                await wait_for_run(self.agents, thread_id, busy.active_run_id, deadline - time.monotonic())
