"""Each conversation's queue of turns, answered in order by whichever process holds its
lease (one run per agent thread, so nobody ever sees "thread busy")."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..logs import log
from ..store import ConversationKey, InFlight, Store

logger = logging.getLogger("bot.turns")


class ConversationQueue:
    def __init__(
        self,
        store: Store,
        replica_id: str,
        answer: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        lease_ttl_s: float = 15.0,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.lease_ttl_s = lease_ttl_s
        self._answer = answer
        # one drain per conversation in this process, whatever the store's lease says: a lease
        # lost to a stalled event loop must not let a second turn of the conversation run here
        # beside the first
        self._draining: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, drains holding or waiting

    @staticmethod
    def lease_name(key: ConversationKey) -> str:
        return f"conv:{key.as_str()}"

    async def owned_here(self, key: ConversationKey) -> bool | None:
        """True if this process answers the conversation now, False if another one does,
        None if nobody does."""
        owner = await self.store.lease_owner(self.lease_name(key)) or ""
        return owner.startswith(f"{self.replica_id}:") if owner else None

    async def enqueue(self, record: InFlight, *, first: bool = False) -> None:
        """Put a received turn in its conversation's queue (``first``: ahead of the others) and
        answer the queue if free."""
        key = ConversationKey(record.team, record.channel, record.thread_ts)
        await self.store.push_turn(key, record.payload, first=first)
        record.state = "queued"
        await self.store.record_reply(record)
        await self.drain(key)

    async def drain(self, key: ConversationKey) -> None:
        """Answer the conversation's queued turns, in order, if nobody else is."""
        name = key.as_str()
        lock, users = self._draining.get(name) or (asyncio.Lock(), 0)
        self._draining[name] = (lock, users + 1)
        try:
            async with lock:
                await self._drain(key)
        finally:
            lock, users = self._draining[name]
            if users <= 1:
                del self._draining[name]
            else:
                self._draining[name] = (lock, users - 1)

    async def _drain(self, key: ConversationKey) -> None:
        while True:
            owner = f"{self.replica_id}:{uuid.uuid4().hex[:8]}"
            lease = self.lease_name(key)
            if not await self.store.acquire_lease(lease, owner, self.lease_ttl_s):
                return  # its owner answers it, in order
            renewal = asyncio.get_running_loop().create_task(self._keep_lease(lease, owner))
            waiting = False
            try:
                while not renewal.done():
                    if waiting := await self.answered_elsewhere(key):
                        break
                    if not (payload := await self.store.pop_turn(key, self.replica_id)):
                        break
                    await self._answer(json.loads(payload))
            finally:
                renewal.cancel()
                await self.store.release_lease(lease, owner)
            # a turn queued while the lease was being released found it taken: look again
            # (unless an earlier turn is still being answered elsewhere: recovery drains after it)
            if waiting or await self.store.queue_length(key) == 0:
                return

    async def answered_elsewhere(self, key: ConversationKey) -> bool:
        """A turn of this conversation taken in or popped by another process and not yet
        answered: the queue waits for it. Its process lost the lease (it died, or stalled), so
        the next turn answered now would land above it in the thread, or run beside it; recovery
        finishes it or queues it again first, then drains the queue."""
        for reply in await self.store.replies_in_flight():
            if (reply.team, reply.channel, reply.thread_ts) != (key.team, key.channel, key.thread_ts):
                continue
            if reply.state in ("received", "running") and reply.owner != self.replica_id:
                log(
                    logger,
                    "turn.waits_for_earlier",
                    turn=reply.turn_id,
                    owner=reply.owner,
                    channel=key.channel,
                )
                return True
        return False

    async def _keep_lease(self, lease: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            if not await self.store.renew_lease(lease, owner, self.lease_ttl_s):
                log(logger, "turn.lease_lost", logging.WARNING, lease=lease)
                return
