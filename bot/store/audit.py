"""The audit trail's writer: each entry goes to the store (``python -m bot audit`` reads it
there) and to the ``bot.audit`` log stream, one event a line (JSON lines in
``BOT_AUDIT_LOG`` when set). Writing it never fails the action it records."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from ..logs import log
from .base import AuditEntry, Store

logger = logging.getLogger("bot.audit")


def arguments_digest(arguments: Any) -> str:
    """``sha256:<hex>`` of the arguments as canonical JSON: the same call, the same digest,
    without keeping what people passed to tools."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class AuditTrail:
    def __init__(self, store: Store | None) -> None:
        self.store = store

    async def record(self, entry: AuditEntry) -> None:
        doc = entry.as_dict()
        ids = doc.pop("ids") or {}
        log(logger, f"audit.{entry.kind}", **doc, **ids)
        if self.store is None:
            return
        try:
            await self.store.add_audit(entry)
        except Exception as exc:  # the store down: the log line above still holds it
            log(
                logger, "audit.store_failed", logging.ERROR, error=repr(exc), kind=entry.kind, tool=entry.tool
            )
