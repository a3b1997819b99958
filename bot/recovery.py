"""Nothing lost: finishing replies whose process died, and answering queues nobody owns.

Every replica keeps a heartbeat lease (``replica:<id>``). A sweep (at start and every few
seconds) looks at the replies in flight: one whose owner's heartbeat is gone is taken over
(once, by claim) and finished from the run's stored result, or marked interrupted with a
clear line. Queued turns whose conversation has no owner are answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from .agents import AgentServiceError
from .agents.routing import RoutesError
from .logs import log
from .store import InFlight
from .turns import Reply, TurnOrchestrator, ending_for, wait_for_run
from .turns.retention import enforce

logger = logging.getLogger("bot.recovery")

HEARTBEAT_TTL_S = 15.0
FORGET_EVERY_S = 3600.0
DELIVER_RETRY_S = 120.0  # an undelivered reply is tried again this often (by any replica)
GIVE_UP_S = 86400.0  # ... for this long; then it is logged as undeliverable and dropped
RESTART_LINE = "_This reply was interrupted when the bot restarted. Please ask again._"


class Recovery:
    def __init__(
        self,
        orchestrator: TurnOrchestrator,
        *,
        interval_s: float = 5.0,
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
        run_wait_s: float = 120.0,
    ) -> None:
        self.o = orchestrator
        self.store = orchestrator.store
        self.interval_s = interval_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.run_wait_s = run_wait_s
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[Any]] = set()
        self.recovered: list[dict[str, Any]] = []
        self._forgot_at = 0.0
        self._quiet_since: dict[str, float] = {}  # owner -> when its heartbeat was first missed

    @property
    def heartbeat(self) -> str:
        return f"replica:{self.o.replica_id}"

    async def start(self) -> None:
        await self.store.acquire_lease(self.heartbeat, self.o.replica_id, self.heartbeat_ttl_s)
        await self.sweep()
        await self.forget_expired()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._work):
            task.cancel()
        await self.store.release_lease(self.heartbeat, self.o.replica_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.store.acquire_lease(self.heartbeat, self.o.replica_id, self.heartbeat_ttl_s)
                await self.sweep()
                if time.monotonic() - self._forgot_at > FORGET_EVERY_S:
                    await self.forget_expired()
            except Exception:
                logger.exception("recovery sweep failed")

    async def forget_expired(self) -> None:
        """The store's periodic clean-up (conversation mappings past the retention, old marks,
        leases, counters, dead replicas' heartbeats), so its state stays bounded."""
        self._forgot_at = time.monotonic()
        kept = await enforce(self.store, self.o.router)  # what the agent services keep for us
        removed = await self.store.sweep()
        log(
            logger,
            "recovery.store_swept",
            removed=removed,
            agent_files_deleted=kept.deleted_files,
            agent_conversations_deleted=kept.deleted_conversations,
            deletions_failed=kept.failed or None,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def sweep(self) -> None:
        replies = await self.store.replies_in_flight()
        owners = {reply.owner for reply in replies}
        for owner in [o for o in self._quiet_since if o not in owners]:
            del self._quiet_since[owner]  # nothing of theirs left to watch
        for reply in replies:
            if reply.state == "undelivered":  # answered, but Slack had not taken it: deliver
                if await self.store.claim("deliver", f"{reply.turn_id}:{reply.started_at}", DELIVER_RETRY_S):
                    self._spawn(self.deliver(reply))
                continue
            if reply.owner == self.o.replica_id or reply.state == "queued":
                continue  # ours; or waiting in a queue, which the loop below looks after
            if not await self._owner_gone(reply.owner):
                continue  # its owner is alive (or only just went quiet)
            if not await self.store.claim("takeover", f"{reply.turn_id}:{reply.owner}", 600):
                continue  # another replica took it
            never_started = reply.state == "running" and not reply.run_id and not reply.agent_thread_id
            if reply.payload and (reply.state == "received" or never_started):
                await self.requeue(reply)  # it never reached the agent: answer it afresh
            else:
                self._spawn(self.finish(reply))
        for key in await self.store.queued_conversations():
            if await self.store.lease_owner(f"conv:{key.as_str()}") is None:
                self._spawn(self.o.drain(key))

    async def _owner_gone(self, owner: str) -> bool:
        """An owner is gone when its heartbeat has stayed missing for a whole heartbeat TTL
        more: a live replica whose event loop stalled past one TTL (a CPU spike, a long GC)
        keeps its replies instead of seeing them written twice."""
        if await self.store.lease_owner(f"replica:{owner}"):
            self._quiet_since.pop(owner, None)
            return False
        now = time.monotonic()
        first = self._quiet_since.setdefault(owner, now)
        return now - first >= self.heartbeat_ttl_s

    async def requeue(self, reply: InFlight) -> None:
        payload = json.loads(reply.payload)
        payload["attempt"] = int(payload.get("attempt") or 0) + 1  # a fresh claim to answer it
        reply.payload = json.dumps(payload)
        reply.owner = self.o.replica_id
        reply.state = "received"
        await self.store.record_reply(reply)
        log(logger, "recovery.requeued", turn=reply.turn_id, channel=reply.channel)
        self._spawn(self.o.enqueue(reply, first=True))  # it came before any turn queued since

    async def deliver(self, reply: InFlight) -> None:
        """Post (or edit into place) a reply Slack did not take before its deadline."""
        kept = json.loads(reply.payload or "{}")
        body = str(kept.get("body") or RESTART_LINE)
        if time.time() - float(kept.get("undelivered_since") or time.time()) > GIVE_UP_S:
            # Slack refused it for a day (the channel is gone, the bot was removed): stop trying
            await self.store.finish_reply(reply.turn_id)
            self.o.metrics.recovered.labels("abandoned").inc()
            log(logger, "recovery.undeliverable", logging.ERROR, turn=reply.turn_id, channel=reply.channel)
            return
        writer = self.o.writer_for(reply)
        await writer.adopt_posted()  # posted by the dead owner, but not yet recorded
        await writer.finish(body)
        if writer.undelivered:
            await self.o.keep_undelivered(reply, writer, body)  # tried again at the next sweep
            return
        await self.store.finish_reply(reply.turn_id)
        self.o.metrics.recovered.labels("delivered").inc()
        log(logger, "recovery.delivered", turn=reply.turn_id, channel=reply.channel)

    async def finish(self, reply: InFlight) -> None:
        """Finish a reply its owner left: the run's stored answer, or a clear line."""
        started = time.monotonic()
        fields = {
            "turn": reply.turn_id,
            "channel": reply.channel,
            "thread_id": reply.agent_thread_id,
            "run_id": reply.run_id,
            "dead_owner": reply.owner,
        }
        body, how = RESTART_LINE, "interrupted"
        try:
            if reply.agent_thread_id and reply.run_id:
                body, how = await self._from_run(reply)
            elif reply.agent_thread_id:
                agents, thread_id = self.o.router.resolve(reply.agent_thread_id)
                # the dead process's turn; a message held here is a live turn's: it stays
                await agents.abandon(thread_id, None, "not run: the bot restarted", drop_held=False)
        except (AgentServiceError, RoutesError) as exc:  # RoutesError: its agent left the routing file
            log(logger, "recovery.run_unavailable", logging.WARNING, error=str(exc), **fields)
        writer = self.o.writer_for(reply)
        await writer.adopt_posted()  # posted by the dead owner, but not yet recorded
        again = how == "interrupted" and await self.o.again.keep(reply)
        await writer.finish(body, ask_again=again)
        if writer.undelivered:
            await self.o.keep_undelivered(reply, writer, body)
        else:
            await writer.remove_strays()  # a second placeholder of the turn, from another replica
            await self.store.finish_reply(reply.turn_id)
        self.o.metrics.recovered.labels(how).inc()
        self.recovered.append({"turn_id": reply.turn_id, "how": how, "s": time.monotonic() - started})
        log(logger, "recovery.finished", how=how, ms=round((time.monotonic() - started) * 1000), **fields)

    async def _from_run(self, reply: InFlight) -> tuple[str, str]:
        """The run's stored answer; a run still going or waiting for us is ended first, so the
        conversation takes the next message (a new agent's function call is answered)."""
        assert reply.agent_thread_id and reply.run_id
        agents, thread_id = self.o.router.resolve(reply.agent_thread_id)
        snapshot = await wait_for_run(agents, thread_id, reply.run_id, self.run_wait_s)
        if snapshot is None or not snapshot.terminal:
            await agents.abandon(thread_id, reply.run_id, "not run: the bot restarted", drop_held=False)
            return RESTART_LINE, "interrupted"
        ending = ending_for(snapshot.final_event()) or ""
        return Reply.of(snapshot).body(ending), "finished"
