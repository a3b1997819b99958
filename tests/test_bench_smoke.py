"""The benchmark script keeps working (figures themselves belong to `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_sse_bench_runs_and_reports_ratios() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "sse_parse.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--size",
            "0.05",
            "--chunks",
            "64,4096",
            "--repeat",
            "1",
            "--report-only",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "full path ratio, ours vs SDK" in result.stdout
    assert "the time for 10x the input" in result.stdout


def test_slack_stream_bench_runs_and_reports_baselines() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "slack_stream.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--replies",
            "3",
            "--chars",
            "120",
            "--token-rate",
            "200",
            "--report-only",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ours", "per-delta", "fixed-1s", "calls per reply, ours / per-delta"):
        assert line in result.stdout


def test_load_bench_runs_and_reports_cpu_and_memory_per_conversation() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "load.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            *("--replies", "4", "--baseline", "2", "--idle", "2", "--chars", "120", "--token-rate", "200"),
            "--report-only",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("CPU per reply, 4 at once / 2 at once", "RSS per active conversation", "text lost: 0"):
        assert line in result.stdout
