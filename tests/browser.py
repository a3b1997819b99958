"""Headless Chromium for the playground's browser tests: Debian's package, driven by
Playwright (Playwright's own browser download is not used)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _found() -> str | None:
    return next((path for path in CANDIDATES if Path(path).exists()), None)


def chromium_path() -> str:
    """Chromium's path. ``make test`` installs Debian's package before the tests run (a test
    never installs anything); in CI a missing browser is a failure, elsewhere a skip."""
    path = _found()
    if path:
        return path
    message = "chromium is missing: `make test` installs it (as root), or: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
