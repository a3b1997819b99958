"""Headless Chromium for the playground's browser tests: Debian's package, driven by
Playwright (Playwright's own browser download is not used)."""

from __future__ import annotations

import os
import shutil
import subprocess
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
    """Chromium's path, installing Debian's package when possible. In CI a missing browser
    is a failure; elsewhere the test is skipped with the reason."""
    path = _found()
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=1200
        )
        path = _found()
        if path:
            return path
    message = "Debian's chromium is not installed and could not be installed (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
