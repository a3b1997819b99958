"""Threads for synchronous tools, apart from the event loop's default executor.

The loop's default executor also does DNS lookups (for Slack and the agent service): a
hung synchronous tool there would stall every conversation. Here a tool gets one of a
fixed number of threads; when all are taken (tools hanging past their timeout still hold
theirs, as Python cannot stop a thread), new calls are refused at once with a clear output.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DEFAULT_TOOL_THREADS = 8


class WorkersBusy(Exception):
    """Every tool thread is taken."""


class ToolWorkers:
    def __init__(self, size: int = DEFAULT_TOOL_THREADS) -> None:
        if size < 1:
            raise ValueError("the tool thread pool needs at least one thread")
        self.size = size
        self.busy = 0  # threads running a tool, including ones past their timeout
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tool")

    async def run(self, function: Callable[..., Any], /, **kwargs: Any) -> Any:
        if self.busy >= self.size:
            raise WorkersBusy
        loop = asyncio.get_running_loop()
        self.busy += 1
        future = self._pool.submit(functools.partial(function, **kwargs))
        # the thread's end (not the caller's timeout) frees the slot
        future.add_done_callback(lambda _: self._release_from_thread(loop))
        return await asyncio.wrap_future(future)

    def _release_from_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop has closed (shutting down): nobody counts any more
            pass

    def _release(self) -> None:
        self.busy -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
