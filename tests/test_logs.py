"""Structured log lines: one event per line, fields as key=value or JSON, secrets scrubbed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bot.logs import StructuredFormatter, log, redact


def _record(event: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("bot.test", logging.INFO, __file__, 1, event, None, None)
    record.fields = fields
    return record


def test_key_value_line_with_ids() -> None:
    line = StructuredFormatter().format(
        _record("turn.start", event_id="Ev1", thread_id="thread_1", run_id="run_1")
    )
    assert line.endswith("info bot.test turn.start event_id=Ev1 thread_id=thread_1 run_id=run_1")
    assert "\n" not in line


def test_values_with_spaces_are_quoted_and_multiline_stays_one_line() -> None:
    line = StructuredFormatter().format(_record("x", why="two words\nand a line"))
    assert 'why="two words\\nand a line"' in line and "\n" not in line


def test_json_lines() -> None:
    doc = json.loads(StructuredFormatter(as_json=True).format(_record("x", run_id="run_1", n=3)))
    assert doc["event"] == "x" and doc["run_id"] == "run_1" and doc["n"] == 3


def test_redaction_of_known_secret_shapes() -> None:
    text = (
        "Authorization: Bearer abc.def-ghi xoxb-123-456-abc xapp-1-A1-2-zz "
        "token=sekrit&x=1 'signing_secret': 'shh'"
    )
    cleaned = redact(text)
    for secret in ("abc.def-ghi", "xoxb-123-456-abc", "xapp-1-A1-2-zz", "sekrit", "shh"):
        assert secret not in cleaned
    assert "x=1" in cleaned


def test_log_helper_drops_none_fields(caplog) -> None:  # type: ignore[no-untyped-def]
    logger = logging.getLogger("bot.test.helper")
    with caplog.at_level(logging.INFO, logger="bot.test.helper"):
        log(logger, "evt", a=1, b=None)
    assert caplog.records[0].fields == {"a": 1}


async def test_the_audit_stream_is_json_lines_in_its_own_file(tmp_path: Path) -> None:
    """BOT_AUDIT_LOG: each audit entry one JSON line, whatever the main log's format and level."""
    import json

    from bot.logs import configure_audit
    from bot.store import AuditEntry
    from bot.store.audit import AuditTrail

    audit_logger = logging.getLogger("bot.audit")
    saved = (audit_logger.handlers[:], audit_logger.level)
    root_level = logging.getLogger().level
    path = tmp_path / "audit.jsonl"
    try:
        logging.getLogger().setLevel(logging.ERROR)  # the main log shows errors only
        configure_audit(str(path))
        entry = AuditEntry(
            "tool_call", "T1", "C1", "U1", "restart", "ok", approval="approved", approver="U2",
            duration_ms=5, ids={"run": "run_1", "event_id": "Ev1"},
        )  # fmt: skip
        await AuditTrail(None).record(entry)
        [line] = path.read_text().splitlines()
        doc = json.loads(line)
        assert doc["event"] == "audit.tool_call" and doc["logger"] == "bot.audit"
        wanted = {"user": "U1", "tool": "restart", "outcome": "ok", "approver": "U2", "run": "run_1"}
        assert {k: doc[k] for k in wanted} == wanted and doc["event_id"] == "Ev1"
    finally:
        for handler in audit_logger.handlers:
            handler.close()
        audit_logger.handlers[:] = saved[0]
        audit_logger.setLevel(saved[1])
        logging.getLogger().setLevel(root_level)
