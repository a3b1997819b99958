"""What the operator commands that read the store share: a store (or a setting) that cannot
be used is one line on stderr, never a traceback, and a URL is printed without its password."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from .settings import Settings
from .store import AuditEntry, AuditQuery, open_store

T = TypeVar("T")
STORE_ERRORS = (OSError, TimeoutError, sqlite3.Error, redis.RedisError)  # a store that cannot be used


def redacted_url(url: str) -> str:
    """A store or service URL as it may be printed: no password."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def run_on_store(settings: Settings, work: Coroutine[Any, Any, T]) -> T | None:
    """Run a command's work; None (and one line saying why) when it cannot be done."""
    try:
        return asyncio.run(work)
    except ValueError as exc:  # a setting, a routing file, a time that cannot be read
        print(f"error: {exc}", file=sys.stderr)
    except STORE_ERRORS as exc:
        print(f"error: cannot read the store {redacted_url(settings.store_url)}: {exc}", file=sys.stderr)
    return None


def read_audit(settings: Settings, question: Callable[[], AuditQuery]) -> list[AuditEntry] | None:
    """The audit entries a command asks for; None (and one line saying why) when the question
    (a time that cannot be read) or the store cannot be used."""
    try:
        query = question()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return run_on_store(settings, _audit_entries(settings, query))


async def _audit_entries(settings: Settings, query: AuditQuery) -> list[AuditEntry]:
    store = await open_store(settings.store_url, audit_retention_s=settings.audit_retention_days * 86400)
    try:
        return await store.audit_entries(query)
    finally:
        await store.close()
