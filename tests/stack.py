"""Test access to the emulated stack (kept as a module so tests import one name)."""

from __future__ import annotations

from typing import Any

from bot.emulators.stack import EmulatedStack as Stack
from bot.emulators.stack import start_stack as _start_stack


async def start_stack(script: Any = None, *, tmp_path: Any, **kwargs: Any) -> Stack:
    return await _start_stack(script, store_url=f"sqlite:///{tmp_path}/bot.db", admins="U0ADMIN", **kwargs)


__all__ = ["Stack", "start_stack"]
