"""A reply that grows in Slack: a placeholder at once, then coalesced ``chat.update`` edits
paced by the workspace budget, continued in new messages when it outgrows one, and a final
edit that always carries the complete text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from .. import telemetry
from ..logs import log
from .native import NativePages, Stream, StreamTarget
from .pacing import Pacer, SlackBudget, Ticket
from .reads import retry_after
from .render import MARKDOWN_LIMIT, slack_safe, split_page
from .reply_thread import ReplyThread, reply_metadata

logger = logging.getLogger("bot.slack.writer")

PLACEHOLDER = "_Thinking…_"
STOP_ACTION = "stop_run"
ASK_AGAIN_ACTION = "ask_again"
FEEDBACK_ACTION = "answer_feedback"
QUIET_START_S = 90.0  # Slack drops a pane's status after two minutes without a message: post by then
PAGE_LIMIT = MARKDOWN_LIMIT - 1_000  # room for the status line and a closing fence


class TextSource(Protocol):
    """A reply's text as it grows, read by its tail: the writer only ever needs the text of
    the page still open, so a long reply costs each update the size of that page, not of the
    whole reply."""

    def __len__(self) -> int: ...

    def tail(self, start: int) -> str: ...


@dataclass(frozen=True)
class _Whole:
    text: str

    def __len__(self) -> int:
        return len(self.text)

    def tail(self, start: int) -> str:
        return self.text[start:]


@dataclass(eq=False)
class Page:
    ts: str | None = None
    body: str = ""
    closed: bool = False
    plain: bool = False  # Slack refused the blocks: send this page as text only
    sent: str | None = None  # the JSON of the last payload Slack accepted
    dirty_since: float | None = None
    stream: Stream | None = None  # streamed natively: what the stream holds
    # posts (None) and stream starts (the text they held) whose answer never came back
    lost: list[str | None] = field(default_factory=list)


class ReplyWriter:
    def __init__(
        self,
        client: AsyncWebClient,
        budget: SlackBudget,
        channel: str,
        thread_ts: str,
        *,
        stop_value: str | None = None,
        page_limit: int = PAGE_LIMIT,
        min_interval: float = 0.3,
        log_fields: dict[str, Any] | None = None,
        existing_ts: str | None = None,
        existing_pages: list[str] | None = None,
        allow_mass_mentions: bool = False,
        on_rate_limited: Callable[[], None] | None = None,
        deadline_s: float = 900.0,
        on_posted: Callable[[str], Awaitable[None]] | None = None,
        speaker: str | None = None,
        traceparent: str = "",
        stream_to: StreamTarget | None = None,
        quiet_start: bool = False,
    ) -> None:
        self.client = client
        # no placeholder: the first message waits for the first words (Slack's assistant pane
        # shows its own status line meanwhile)
        self._quiet_until = time.monotonic() + QUIET_START_S if quiet_start else 0.0
        self.traceparent = traceparent  # the turn's trace: each Slack call is a span in it
        self.speaker = speaker  # the agent answering, named in the status line (several agents)
        self._feedback = ""  # set by finish: the feedback buttons under the final answer
        self.budget = budget
        self.channel = channel
        self.thread_ts = thread_ts
        self.stop_value = stop_value
        self.page_limit = page_limit
        self.min_interval = min_interval
        self.log_fields = log_fields or {}
        # stream new pages natively (where the workspace allows it)
        self._native = NativePages(stream_to, self.log_fields) if stream_to else None
        # the reply's own messages, found again in the thread by the turn in their metadata
        self._thread = (
            ReplyThread(client, channel, thread_ts, stop_value, self.log_fields) if stop_value else None
        )
        known = list(existing_pages or ([existing_ts] if existing_ts else []))
        self.pages: list[Page] = [Page(ts=known[0] if known else None)]
        self._adopt = known[1:]  # messages a previous writer already posted for later pages
        self.allow_mass_mentions = allow_mass_mentions
        self.on_rate_limited = on_rate_limited
        self.first_write_at: float | None = None
        # delivery is retried (honouring Retry-After, through the pacer) until this moment, not
        # for a number of tries; a reply that misses it is undelivered and recovery takes over
        self.deadline = time.monotonic() + deadline_s
        self.undelivered = False
        self.on_posted = on_posted
        self.calls = 0
        self.rate_limited = 0
        self.staleness: list[float] = []  # seconds each update waited before Slack showed it
        self._source: TextSource = _Whole("")
        self._length = 0
        self._tail = 0  # where the open page starts in the body
        self._carry = ""  # a reopened code fence that starts the open page
        self._status: str | None = None
        self._finished = False
        self._ask_again = False
        self._attempt: str | None = None  # what the post in flight was: a stream start's text
        self._stop_offered = False  # a streamed reply's Stop, sent privately to the person who asked
        self._pending_updates: list[tuple[float, int]] = []  # (when, body length)
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._posted = asyncio.Event()
        self._ticket: Ticket | None = None
        self._last_edit = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def ts(self) -> str | None:
        """The first message of the reply (where the Stop button lives)."""
        return self.pages[0].ts

    # -- what callers do ----------------------------------------------------------------

    async def adopt_posted(self) -> bool:
        """Find the messages an earlier process posted for this reply but died before
        recording (each carries the turn in Slack's message metadata), so the reply goes on
        in them instead of in a second copy. Before ``begin``; False when none are found."""
        if self.pages[0].ts or not self.stop_value:
            return False
        found: dict[int, str] = {}
        for page, ts in await self._own():
            found.setdefault(page, ts)
        if 0 not in found:
            return False
        self.pages[0].ts = found[0]
        self._adopt = [found[i] for i in sorted(found) if i > 0]
        log(logger, "slack.adopted", pages=len(found), **self.log_fields)
        return True

    async def remove_strays(self) -> int:
        """Delete this turn's messages that are not this reply's pages: a placeholder another
        process posted for the turn before this one answered it (and died, or lost the race
        to say where it was), which would otherwise sit in the thread saying *Thinking…*
        forever. After ``finish``; how many were deleted."""
        if not self.stop_value:
            return 0
        mine = {page.ts for page in self.pages if page.ts}
        removed = 0
        for _, ts in await self._own():
            if ts in mine:
                continue
            try:
                await self.client.chat_delete(channel=self.channel, ts=ts)
                removed += 1
            except SlackApiError as exc:  # gone already, or not ours to delete: nothing to mend
                fields = {"ts": ts, "error": repr(exc), **self.log_fields}
                log(logger, "slack.stray_not_removed", logging.INFO, **fields)
        if removed:
            log(logger, "slack.strays_removed", removed=removed, **self.log_fields)
        return removed

    async def _own(self) -> list[tuple[int, str]]:
        """(page, ts) of the thread's messages that name this turn (none if unreadable)."""
        if self._thread is None:
            return []
        return await self._thread.own(deadline=self.deadline) or []

    async def _find_lost(self, page: Page) -> bool:
        """A post or stream start of ``page`` whose answer never came (the connection broke):
        Slack may have taken it. Look in the thread before posting again, so the reply goes on
        in that message instead of leaving a second one (or an empty open stream) above it."""
        lost, page.lost = page.lost, []
        if self._thread is None:
            return False
        started = {text for text in lost if text is not None}  # what each lost stream start held
        known = {p.ts for p in self.pages if p.ts}
        found = await self._thread.lost_post(self.pages.index(page), known, started, deadline=self.deadline)
        if not found:
            return False
        (ts, shown), extra = found[0], found[1:]
        log(logger, "slack.lost_post_found", ts=ts, copies=len(extra), **self.log_fields)
        for copy, _ in extra:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_delete(channel=self.channel, ts=copy)
        page.sent = None
        if shown is not None:
            page.stream = Stream(shown=shown)
        await self._took(page, ts)
        return True

    def begin(self) -> None:
        """Post the placeholder as soon as Slack takes it, then keep the reply in step. Never
        waits and never fails: text is buffered until Slack accepts the first message."""
        self._mark_dirty(self.pages[0])
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def start(self, within_s: float = 10.0) -> str | None:
        """``begin()``, then wait up to ``within_s`` for the placeholder; its ts, or None when
        Slack has not taken it yet (it keeps trying until the delivery deadline)."""
        self.begin()
        end = time.monotonic() + within_s
        while self.pages[0].ts is None and not self._done.is_set() and time.monotonic() < end:
            try:
                await asyncio.wait_for(self._posted.wait(), max(0.0, end - time.monotonic()))
            except TimeoutError:
                break
        return self.pages[0].ts

    def update(self, body: str | TextSource) -> None:
        if self._finished:
            return
        if isinstance(body, str):
            if isinstance(self._source, _Whole) and body == self._source.text:
                return
            source: TextSource = _Whole(body)
        elif len(body) == self._length:
            return  # a growing text that has not grown
        else:
            source = body
        self._source, self._length = source, len(source)
        self._pending_updates.append((time.monotonic(), self._length))
        self._layout()

    def status(self, line: str | None) -> None:
        if line != self._status and not self._finished:
            self._status = line
            if line and self._native is not None:
                self._native.noted(line)
            self._mark_dirty(self.pages[-1])

    async def finish(
        self, body: str, *, deadline_s: float | None = None, ask_again: bool = False, feedback: str = ""
    ) -> None:
        """Show the complete reply; returns once Slack has every final message, or when the
        delivery deadline (or ``deadline_s``, if sooner) passes: then ``undelivered`` is set.
        ``ask_again`` puts an *Ask again* button under a reply that was cut short; ``feedback``
        (what a click should name: the turn, its agent and run) thumbs up / down under an answer."""
        self._ask_again = ask_again and bool(self.stop_value)
        self._feedback = feedback
        self._source, self._length = _Whole(body), len(body)
        self._pending_updates.append((time.monotonic(), len(body)))
        self._finished = True
        self._status = None
        self._layout()
        for page in self.pages:
            page.closed = True
            self._mark_dirty(page)
        if self._ticket is not None:
            self.budget.update.promote(self._ticket)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())
        wait = self.deadline - time.monotonic()
        if deadline_s is not None:
            wait = min(wait, deadline_s)
        try:
            await asyncio.wait_for(self._done.wait(), max(0.0, wait))
        except TimeoutError:
            self.undelivered = True
        if any(page.ts is None or page.dirty_since is not None for page in self.pages):
            self.undelivered = True  # a message Slack never took, or a final edit it never showed
        if self.undelivered:
            log(logger, "writer.undelivered", logging.WARNING, pages=len(self.pages), **self.log_fields)
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- layout -------------------------------------------------------------------------

    def _layout(self) -> None:
        open_text = self._carry + self._source.tail(self._tail)
        while len(open_text) > self.page_limit:
            head, carry, consumed = split_page(open_text, self.page_limit)
            page = self.pages[-1]
            page.body, page.closed = head, True
            self._mark_dirty(page)
            self._tail += consumed - len(self._carry)
            self._carry = carry
            self.pages.append(Page(ts=self._adopt.pop(0) if self._adopt else None))
            open_text = self._carry + self._source.tail(self._tail)
        self.pages[-1].body = open_text
        self._mark_dirty(self.pages[-1])

    def _mark_dirty(self, page: Page) -> None:
        if page.dirty_since is None:
            page.dirty_since = time.monotonic()
        self._changed.set()
        if self._task is None and self.pages[0].ts is not None:  # a message adopted from elsewhere
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    def _metadata(self, page: Page) -> dict[str, Any] | None:
        """Which turn (and which of its pages) a message is: what ``adopt_posted`` finds."""
        if not self.stop_value:
            return None
        return reply_metadata(self.stop_value, self.pages.index(page))

    def _payload(self, page: Page) -> dict[str, Any]:
        is_open = page is self.pages[-1] and not self._finished
        markdown = page.body if page.body.strip() else (PLACEHOLDER if is_open else "…")
        markdown, text = slack_safe(markdown, allow_mass_mentions=self.allow_mass_mentions)
        if page.plain:  # mrkdwn, not Markdown: escaped like the fallback
            plain: dict[str, Any] = {
                "text": slack_safe(markdown[:39_000], allow_mass_mentions=self.allow_mass_mentions)[1]
            }
            if page.ts is not None:
                plain["blocks"] = []  # an edit without blocks would keep the old ones (and Stop)
            return plain
        blocks: list[dict[str, Any]] = [{"type": "markdown", "text": markdown}]
        status = self._status
        if self.speaker:
            status = f"{self.speaker} · {status}" if status else f"{self.speaker} is answering"
        if is_open and status:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
        if is_open and self.stop_value:
            blocks.append(_button(STOP_ACTION, "Stop", self.stop_value, style="danger"))
        if self._ask_again and page is self.pages[-1] and self.stop_value:
            blocks.append(_button(ASK_AGAIN_ACTION, "Ask again", self.stop_value, style="primary"))
        if self._feedback and self._finished and page is self.pages[-1]:
            blocks.append(feedback_block(self._feedback))
        return {"text": text, "blocks": blocks}

    # -- sending ------------------------------------------------------------------------

    def _next_dirty(self) -> Page | None:
        for page in self.pages:
            if page.dirty_since is not None:
                if page.ts is None and not page.body.strip() and self._quiet():
                    return None  # nothing to say yet, and no placeholder wanted (for now)
                return page
        return None

    @property
    def holding_back(self) -> bool:
        """Nothing posted yet, on purpose: waiting for the first words (assistant pane)."""
        return self.pages[0].ts is None and self._quiet()

    def _quiet(self) -> bool:
        return not self._finished and time.monotonic() < self._quiet_until

    async def _flush_loop(self) -> None:
        while True:
            if time.monotonic() > self.deadline:
                self.undelivered = self._next_dirty() is not None
                self._done.set()
                return
            page = self._next_dirty()
            if page is None:
                if self._finished:
                    self._done.set()
                    return
                self._changed.clear()
                if self._quiet():  # post the placeholder after all if no words come in time
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self._quiet_until - time.monotonic())
                else:
                    await self._changed.wait()
                continue
            urgent = page.closed or self._finished or page.ts is None
            if not urgent:  # let a few deltas coalesce into one edit
                pause = self._last_edit + self.min_interval - time.monotonic()
                if pause > 0:
                    try:
                        await asyncio.wait_for(self._wait_finished(), pause)
                    except TimeoutError:
                        pass
                    continue
            await self._send(page)

    async def _wait_finished(self) -> None:
        while not self._finished:
            self._changed.clear()
            await self._changed.wait()

    async def _send(self, page: Page) -> None:
        posting = page.ts is None
        pacer: Pacer = self.budget.post(self.channel) if posting else self.budget.update
        if not posting and page.stream is not None and page.stream.open:
            pacer = self.budget.append  # appends and stops spend their own budget (Tier 4)
        ticket = pacer.ticket(page.dirty_since, final=page.closed or self._finished)
        self._ticket = ticket if not posting else None
        await pacer.acquire(ticket)
        self._ticket = None
        payload = self._payload(page)
        encoded = json.dumps(payload, sort_keys=True)
        if encoded == page.sent:  # nothing visible changed: give the slot back
            page.dirty_since = None
            pacer.refund()
            return
        sent_length = self._length
        dirty_since = page.dirty_since
        page.dirty_since = None
        method = "chat.postMessage" if posting else "chat.update"
        if (page.stream is not None and page.stream.open) or (posting and self._streams(page)):
            method = "chat.startStream" if posting else "chat.appendStream"
        attributes = {"slack.channel": self.channel, "slack.ts": page.ts}
        with telemetry.span(f"slack.{method}", attributes, parent=self.traceparent):
            await self._call(page, pacer, payload, encoded, dirty_since, sent_length)

    async def _call(
        self,
        page: Page,
        pacer: Pacer,
        payload: dict[str, Any],
        encoded: str,
        dirty_since: float | None,
        sent_length: int,
    ) -> None:
        try:
            self.calls += 1
            await self._put(page, payload)
        except SlackApiError as exc:
            page.dirty_since = dirty_since or time.monotonic()
            status = exc.response.status_code if exc.response is not None else None
            error = exc.response.get("error") if exc.response is not None else None
            telemetry.annotate(**{"http.response.status_code": status, "slack.error": error})
            self._handle_error(page, pacer, exc)
            return
        except Exception as exc:  # network trouble: Slack may or may not have taken the call
            page.dirty_since = dirty_since or time.monotonic()
            log(logger, "writer.send_failed", logging.WARNING, error=repr(exc), **self.log_fields)
            if page.ts is None:  # a post or a stream start: found in the thread before the next
                page.lost.append(self._attempt)
            elif page.stream is not None and page.stream.open:  # an append: sent again it may
                page.stream.open = False  # double the words; the page goes on whole, by edits
            await asyncio.sleep(0.5)
            return
        pacer.succeeded()
        page.sent = encoded
        now = time.monotonic()
        self._last_edit = now
        if self.first_write_at is None:
            self.first_write_at = now
        keep = []
        for when, length in self._pending_updates:
            if length <= sent_length and (page is self.pages[-1] or page.closed):
                self.staleness.append(now - when)
            else:
                keep.append((when, length))
        self._pending_updates = keep

    async def _put(self, page: Page, payload: dict[str, Any]) -> None:
        """One call that brings the page up to ``payload``: a stream started, appended to or
        stopped; else a message posted or edited."""
        if page.ts is None and page.lost and await self._find_lost(page):
            pass  # taken after all: it goes on below as an edit or an append
        elif page.ts is None:
            if self._streams(page) and await self._start_stream(page, payload):
                return
            self._attempt = None
            response = await self.client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                metadata=self._metadata(page),
                **payload,
            )
            await self._took(page, str(response["ts"]))
            return
        if page.stream is not None and page.stream.open and await self._stream_more(page, payload):
            return
        await self.client.chat_update(channel=self.channel, ts=page.ts, **payload)

    async def _took(self, page: Page, ts: str) -> None:
        page.ts = ts
        if page is self.pages[0]:
            self._posted.set()
            if self.on_posted is not None:
                await self.on_posted(ts)

    def _streams(self, page: Page) -> bool:
        """Start this page as a native stream? Not when its text is already final (closed by
        the next page, or the reply done before Slack took it): one ordinary post says it all."""
        final = page.closed or self._finished
        return self._native is not None and not page.plain and not final and self._native.wanted()

    def _markdown(self, page: Page, payload: dict[str, Any]) -> str:
        """The page's text as the stream shows it (nothing yet, rather than a placeholder)."""
        blocks = payload.get("blocks") or []
        if not blocks or blocks[0].get("type") != "markdown" or not page.body.strip():
            return ""
        return str(blocks[0]["text"])

    def _open(self, page: Page) -> bool:
        """The page the reply is still growing in (where status lines show)."""
        return page is self.pages[-1] and (self._finished or not page.closed)

    async def _start_stream(self, page: Page, payload: dict[str, Any]) -> bool:
        assert self._native is not None
        current = None if self._finished else self._status
        self._attempt = self._markdown(page, payload)
        started = await self._native.start(self._attempt, current, open_page=self._open(page))
        if started is None:
            self.calls += 1  # the ordinary post that follows
            return False
        page.stream = started[1]
        await self._took(page, started[0])
        if self.stop_value and not self._finished and not self._stop_offered:
            self._stop_offered = True
            self.calls += 1
            await self._native.offer_stop(_button(STOP_ACTION, "Stop", self.stop_value, style="danger"))
        return True

    async def _stream_more(self, page: Page, payload: dict[str, Any]) -> bool:
        assert self._native is not None and page.stream is not None and page.ts is not None
        return await self._native.more(
            page.ts,
            page.stream,
            self._markdown(page, payload),
            None if self._finished else self._status,
            open_page=self._open(page),
            final=page.closed or self._finished,
            # under the final answer: Ask again, or the feedback buttons
            blocks=[b for b in (payload.get("blocks") or [])[1:] if b.get("type") != "context"],
            metadata=self._metadata(page),
        )

    def _handle_error(self, page: Page, pacer: Pacer, exc: SlackApiError) -> None:
        error = exc.response.get("error") if exc.response is not None else None
        if exc.response is not None and exc.response.status_code == 429:
            self.rate_limited += 1
            if self.on_rate_limited is not None:
                self.on_rate_limited()
            wait = retry_after(exc)
            pacer.rate_limited(wait)
            log(
                logger,
                "slack.rate_limited",
                logging.INFO,
                retry_after=wait,
                **self.log_fields,
            )
            return
        log(logger, "slack.error", logging.WARNING, error=error, **self.log_fields)
        if error == "message_not_found":
            page.ts, page.stream = None, None  # deleted under us: post it again
        elif page.stream is not None and page.stream.open:
            # Slack closed the stream (or will not take this append): the page goes on as an
            # ordinary message, edited whole, so what the stream missed is shown once
            page.stream.open = False
        elif error in ("msg_too_long", "invalid_blocks") and not page.plain:
            page.plain = True
        else:
            page.dirty_since = None  # cannot be fixed by retrying: stop trying this payload


def feedback_block(about: str) -> dict[str, Any]:
    """Slack's feedback buttons (a ``context_actions`` block) under a final answer; each
    button's value is ``good|<about>`` or ``bad|<about>``."""
    return {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "Good answer"},
                    "accessibility_label": "Mark this answer as good",
                    "value": f"good|{about}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "Bad answer"},
                    "accessibility_label": "Mark this answer as bad",
                    "value": f"bad|{about}",
                },
            }
        ],
    }


def _button(action_id: str, label: str, value: str, *, style: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": "controls",
        "elements": [
            {
                "type": "button",
                "action_id": action_id,
                "style": style,
                "value": value,
                "text": {"type": "plain_text", "text": label},
            }
        ],
    }
