"""One turn being answered: its message to the agent, the run and its tool rounds, what the
person sees as it streams, and a clear end whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import telemetry
from ..agents import (
    AgentServiceError,
    ContextTooLongError,
    InputFile,
    RateLimitedError,
    RunStream,
    StreamInterruptedError,
    ThreadBusyError,
)
from ..agents.events import (
    AgentEvent,
    ApprovalsRequested,
    Completed,
    Failed,
    FileProduced,
    StreamError,
    TextDelta,
    ToolCallsRequested,
)
from ..agents.routing import make_ref, split_ref
from ..logs import log
from ..plugins.context import ToolContext
from ..slack.sink import Turn
from ..slack.writer import ReplyWriter
from ..store import InFlight
from .context import NO_CONTEXT
from .reply import (
    INTERRUPTED,
    STOPPED,
    TOO_LONG,
    Outcome,
    Reply,
    ending_for,
    service_failure_line,
    wait_for_run,
)
from .tool_round import decide, run_tools

if TYPE_CHECKING:
    from .orchestrator import TurnOrchestrator

logger = logging.getLogger("bot.turns")
T = TypeVar("T")

EXPIRY_MARGIN_S = 5.0  # tool outputs must reach the service this long before the run expires
LEAVE_WITHIN_S = 15.0  # how long a turn that did not complete may take to leave its conversation usable


def fields_of(turn: Turn, turn_id: str) -> dict[str, Any]:
    """The log fields an operator follows one conversation by."""
    return {"event_id": turn.event_id, "channel": turn.channel, "thread_ts": turn.thread_ts, "turn": turn_id}


class TurnAnswer:
    """The turn, its writer, the reply so far and its log fields, in one place. ``run`` never
    raises: every end is an ``Outcome`` and a line the person can read."""

    def __init__(
        self, o: TurnOrchestrator, turn: Turn, turn_id: str, writer: ReplyWriter, record: InFlight
    ) -> None:
        self.o = o
        self.turn = turn
        self.turn_id = turn_id
        self.writer = writer
        self.record = record
        self.reply = Reply()
        self.produced: list[FileProduced] = []  # files the agent made, for the thread
        self.earlier_files: list[dict[str, Any]] = []  # shared in the thread before a first mention
        self.fields = fields_of(turn, turn_id)
        self.route = o.router.route(turn.team, turn.channel)  # the agent answering here
        self.agents = o.router.backend(self.route)
        if o.router.routed:
            self.fields["agent"] = self.route or "default"
        self.requester = turn.user
        self.thread_id: str | None = None
        self.run_id: str | None = None
        self.stop_requested = False
        self.stopped = asyncio.Event()
        # taken in by another process, which may have posted a placeholder this one never saw
        self.received_elsewhere = False

    # -- from outside -------------------------------------------------------------------------

    async def stop(self, user: str) -> None:
        """The Stop button: stop showing at once, end the run on the service."""
        self.stop_requested = True
        self.stopped.set()
        if self.thread_id and self.run_id:
            await self.agents.cancel(self.thread_id, self.run_id)

    async def run(self) -> tuple[Outcome, str]:
        try:
            async with asyncio.timeout(self.o.caps.turn_seconds):
                ending = await self._run_turn()
            outcome = (
                Outcome.STOPPED if ending == STOPPED else Outcome.FAILED if ending else Outcome.COMPLETED
            )
        except TimeoutError:
            log(logger, "turn.cap", logging.WARNING, cap="turn_seconds", **self.fields)
            minutes = self.o.caps.turn_seconds / 60
            ending, outcome = (
                f"_The answer took longer than {minutes:g} minutes and was stopped._",
                Outcome.FAILED,
            )
        except ContextTooLongError:
            ending, outcome = TOO_LONG, Outcome.FAILED
        except RateLimitedError:
            ending = "_The agent service is busy right now. Please try again in a minute._"
            outcome = Outcome.FAILED
        except AgentServiceError as exc:
            ref = uuid.uuid4().hex[:8]
            ending, outcome = service_failure_line(exc, ref), Outcome.FAILED
            log(logger, "turn.agent_error", logging.WARNING, error=str(exc), ref=ref, **self.fields)
        except asyncio.CancelledError:
            ending, outcome = INTERRUPTED, Outcome.INTERRUPTED
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("turn failed", extra={"fields": {**self.fields, "ref": ref}})
            ending, outcome = f"_Something went wrong (ref: {ref})._", Outcome.ERROR
        if outcome is not Outcome.COMPLETED and self.thread_id:
            await self._leave_usable(outcome)
        return outcome, ending

    async def _leave_usable(self, outcome: Outcome) -> None:
        """A turn that did not complete must not leave its conversation stuck (a function call
        without its output, a run left open, a message held for a run that never started)."""
        reason = {
            Outcome.STOPPED: "cancelled by the user",
            Outcome.INTERRUPTED: "not run: the bot was stopping",
        }.get(outcome, "not run: the request failed")
        assert self.thread_id is not None
        work = self.agents.abandon(self.thread_id, self.run_id, reason)
        try:
            await asyncio.wait_for(asyncio.shield(work), LEAVE_WITHIN_S)
        except (AgentServiceError, TimeoutError, asyncio.CancelledError) as exc:
            log(logger, "turn.leave_failed", logging.WARNING, error=repr(exc), **self.fields)

    # -- the turn -------------------------------------------------------------------------------

    async def _run_turn(self) -> str:
        turn, context_reader = self.turn, self.o.context
        self.thread_id = thread_id = await self._agent_thread()
        self.record.agent_thread_id = make_ref(self.route, thread_id)  # recovery finds its agent
        self.fields["thread_id"] = thread_id
        telemetry.annotate(**{"agent.thread_id": thread_id})
        files: list[InputFile] = []
        if (turn.files or self.earlier_files) and self.o.files_in is not None:
            prepared = await self.o.files_in.prepare(
                turn.key,
                turn.files,
                self.fields,
                earlier=self.earlier_files,
                agents=self.agents,
                route=self.route,
            )
            files, self.reply.notes = prepared.files, prepared.notes
        await self._add_message((await context_reader.message_text(turn)) or "(empty message)", files)
        if self.stop_requested:
            return STOPPED
        if turn.user not in self.o.admins:
            await context_reader.mark_others(turn.key)
        context = await context_reader.tool_context(turn)
        attributes = {
            "agent.thread_id": thread_id,
            "agent.backend": self.agents.kind,
            "agent.route": self.route,
        }
        with telemetry.span("agent.run", attributes):
            return await self._run_agent(thread_id, context)

    async def _run_agent(self, thread_id: str, context: ToolContext) -> str:
        """Start the run and follow it (and its tool rounds) to its end."""
        stream = await self._start_when_free(thread_id, context)
        rounds = 0
        while True:
            paused = await self._stream_until_pause(stream)
            if isinstance(paused, str):
                return paused
            if self.stop_requested:
                return STOPPED
            rounds += 1
            if rounds > self.o.caps.tool_rounds:
                log(logger, "turn.cap", logging.WARNING, cap="tool_rounds", rounds=rounds - 1, **self.fields)
                limit = self.o.caps.tool_rounds
                return f"_Stopped: the agent asked for tools more than {limit} times in one turn._"
            answered = await self._unless_stopped(self._answer_pause(paused, stream.expires_at, context))
            if answered is None or self.stop_requested:
                return STOPPED  # the tools were left running no longer than the click
            stream = answered

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """The work's result, or None when Stop is clicked first (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.stopped.wait())
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

    async def _stream_until_pause(self, stream: RunStream) -> str | ToolCallsRequested | ApprovalsRequested:
        """Show one stream; returns the ending line, or what the run now waits for."""
        paused: ToolCallsRequested | ApprovalsRequested | None = None
        try:
            async with stream:
                async for event in stream.events():
                    if stream.run_id and self.run_id != stream.run_id:
                        await self._note_run(stream.run_id)
                    if self.stop_requested:  # stop showing at once, whatever the service does
                        return STOPPED
                    if isinstance(event, (ToolCallsRequested, ApprovalsRequested)):
                        paused = event
                        continue
                    ending = self._show(event)
                    if ending is not None:
                        return ending
        except StreamInterruptedError as exc:
            log(logger, "turn.stream_broken", logging.WARNING, error=str(exc), **self.fields)
            return await self._recover(exc.run_id or self.run_id)
        return paused if paused is not None else ""

    async def _note_run(self, run_id: str) -> None:
        self.run_id = self.record.run_id = self.fields["run_id"] = run_id
        telemetry.annotate(**{"agent.run_id": run_id})
        await self.o.store.record_reply(self.record)
        if self.stop_requested and self.thread_id:
            await self.agents.cancel(self.thread_id, run_id)

    async def _answer_pause(
        self, paused: ToolCallsRequested | ApprovalsRequested, expires_at: float | None, context: ToolContext
    ) -> RunStream:
        """Run the tools (or ask for the approvals) the run waits for, within the run's own
        deadline, and stream what follows."""
        assert self.thread_id is not None
        budget = None if expires_at is None else expires_at - time.time() - EXPIRY_MARGIN_S
        if isinstance(paused, ApprovalsRequested):
            decisions = await decide(
                paused.approvals, context, budget, self.writer, self.o.approver, self.fields, self.o.audit
            )
            self.writer.status(None)
            return await self.agents.answer_approvals(self.thread_id, paused.run_id, decisions)
        tools = self.o.context.tools
        known = {tool.name for tool in await self.o.context.function_tools(context)}
        outputs = await run_tools(paused, context, budget, self.writer, tools, known, self.fields)
        self.writer.status(None)
        return await self.agents.submit_tool_outputs(self.thread_id, paused.run_id, outputs)

    def _show(self, event: AgentEvent) -> str | None:
        """Show one event; returns the ending line when the run has ended."""
        if isinstance(event, TextDelta):
            room = self.o.caps.reply_chars - self.reply.raw_length
            if room <= 0:
                log(logger, "turn.cap", logging.WARNING, cap="reply_chars", **self.fields)
                return f"_The reply was cut at {self.o.caps.reply_chars:,} characters._"
            self.reply.add(TextDelta(event.text[:room], event.annotations, event.message_id))
            self.writer.update(self.reply)
            return None
        if isinstance(event, FileProduced):  # sent to the thread once the reply is final
            if all(f.file_id != event.file_id for f in self.produced):
                self.produced.append(event)
            return None
        if isinstance(event, StreamError):
            log(
                logger,
                "turn.stream_error",
                logging.WARNING,
                code=event.code,
                error=event.message,
                **self.fields,
            )
            return None
        if isinstance(event, Completed):
            log(
                logger,
                "turn.completed",
                usage=event.usage.total_tokens if event.usage else None,
                **self.fields,
            )
        elif isinstance(event, Failed):
            log(
                logger,
                "turn.run_failed",
                logging.WARNING,
                code=event.code,
                error=event.message,
                **self.fields,
            )
        return ending_for(event)

    async def _start_when_free(self, thread_id: str, context: ToolContext) -> Any:
        """Start the run; while another run of the conversation is still going (a replica
        that lost the conversation's lease mid-turn, a stuck run), wait for it to end instead
        of mixing two turns, until the busy deadline."""
        turn, context_reader = self.turn, self.o.context
        deadline = time.monotonic() + self.o.busy_wait_s
        pause = 0.5
        while True:
            try:
                return await self.agents.start_run(
                    thread_id,
                    context=await context_reader.turn_context(turn, context),
                    tools=await context_reader.function_tools(context),
                    metadata={
                        "slack_team": turn.team,
                        "slack_channel": turn.channel,
                        "slack_thread_ts": turn.thread_ts,
                        "slack_event_id": turn.event_id[:64],
                    },
                )
            except ThreadBusyError as busy:
                left = deadline - time.monotonic()
                if left <= 0 or self.stop_requested:
                    raise
                log(
                    logger,
                    "turn.conversation_busy",
                    logging.INFO,
                    active_run=busy.active_run_id,
                    **self.fields,
                )
                if busy.active_run_id:
                    await wait_for_run(self.agents, thread_id, busy.active_run_id, left)
                else:  # the service names no run: it asks to retry in a few seconds
                    await asyncio.sleep(min(pause, left))
                    pause = min(pause * 2, 4.0)

    async def _recover(self, run_id: str | None) -> str | ToolCallsRequested | ApprovalsRequested:
        """The stream broke: poll the run until it ends (show the stored answer) or waits."""
        if run_id is None or self.thread_id is None:
            return "_The connection to the agent broke before the run started. Please try again._"
        snapshot = await wait_for_run(self.agents, self.thread_id, run_id, self.o.busy_wait_s)
        if snapshot is None:
            return "_The connection to the agent broke and the run did not finish in time._"
        if snapshot.text:
            self.reply.replace_with(Reply.of(snapshot))
            self.writer.update(self.reply.render(final=False))
        if snapshot.tool_calls:
            return ToolCallsRequested(snapshot.run_id, self.thread_id, snapshot.tool_calls)
        if snapshot.approvals:
            return ApprovalsRequested(snapshot.run_id, self.thread_id, snapshot.approvals)
        return ending_for(snapshot.final_event()) or ""

    # -- the agent's conversation ----------------------------------------------------------------

    async def _agent_thread(self) -> str:
        turn, store = self.turn, self.o.store
        existing = await store.get_agent_thread(turn.key)
        if existing:
            key, thread_id = split_ref(existing)
            if key == self.route:
                return thread_id
            # the channel is routed to another agent now: this thread starts afresh with it
            # (the old conversation is deleted, with its own agent, by the retention clean-up)
            log(logger, "turn.agent_changed", was=key or "default", **self.fields)
        context = await self.o.context.thread_context(turn) if turn.thread_ts != turn.ts else NO_CONTEXT
        self.earlier_files = context.files
        thread_id = await self.agents.create_conversation(
            context=context.lines, metadata={"slack": f"{turn.team}/{turn.channel}/{turn.thread_ts}"}
        )
        await store.set_agent_thread(turn.key, make_ref(self.route, thread_id))
        log(
            logger,
            "turn.thread_created",
            agent_thread=thread_id,
            context=len(context.lines),
            earlier_files=len(context.files),
            **self.fields,
        )
        return thread_id

    async def _add_message(self, text: str, files: list[InputFile]) -> None:
        """Add the message; if a run is still active on the thread (another process, a
        stuck run), wait for it to end rather than show "thread busy"."""
        assert self.thread_id is not None
        deadline = time.monotonic() + self.o.busy_wait_s
        while True:
            try:
                await self.agents.add_message(self.thread_id, text, files)
                return
            except ThreadBusyError as busy:
                if time.monotonic() > deadline or not busy.active_run_id:
                    raise
                log(logger, "turn.thread_busy", logging.INFO, active_run=busy.active_run_id, **self.fields)
                await wait_for_run(
                    self.agents, self.thread_id, busy.active_run_id, deadline - time.monotonic()
                )
