"""Structured logs: one event per line, ``key=value`` (or JSON), secrets scrubbed.

Use ``log(logger, "agent.request", level=logging.INFO, status=200, run_id=...)``. Every
line can carry the Slack event id and the agent thread/run ids so an operator can follow
one conversation with grep.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    # Slack tokens: bot/user/app/config (xoxb-, xoxp-, xoxc-, xoxa-, xoxs-, xapp-) and the
    # rotation/refresh forms (xoxe-, xoxe.xoxp-)
    re.compile(r"\b(xox[a-z][-.]|xapp-)[A-Za-z0-9.\-]+"),
    # JSON Web Tokens (Entra ID access tokens, among others)
    re.compile(r"\b(eyJ)[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # credentials in a URL's query: OAuth codes, SAS signatures, keys
    re.compile(r"(?i)([?&](?:code|sig|key|api[_-]?key|token|access_token|client_secret)=)[^&\s\"'#]+"),
    re.compile(
        r"(?i)((?:token|secret|password|signature|authorization|api[_-]?key|x-api-key|client_secret)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s\"',&]+"
    ),
)


def redact(text: str) -> str:
    """Replace anything that looks like a credential with ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + "***", text)
    return text


def log(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


def _render(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c in text for c in ' "=\n'):
        text = json.dumps(text)
    return text


class StructuredFormatter(logging.Formatter):
    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            doc = {
                "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": record.getMessage(),
                **fields,
            }
            return redact(json.dumps(doc, default=str))
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname.lower(),
            record.name,
            record.getMessage(),
        ]
        parts.extend(f"{key}={_render(value)}" for key, value in fields.items())
        return redact(" ".join(parts))


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(StructuredFormatter(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "azure", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_audit(path: str) -> None:
    """``BOT_AUDIT_LOG``: the audit events also as JSON lines in this file (whatever the main
    log's format), for a collector to ship."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(StructuredFormatter(as_json=True))
    handler.setLevel(logging.INFO)
    audit = logging.getLogger("bot.audit")
    audit.handlers[:] = [handler]
    audit.setLevel(logging.INFO)  # audited whatever BOT_LOG_LEVEL says
