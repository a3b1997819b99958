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
            "--floor-sizes",
            "2",
            "--report-only",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ours", "per-delta", "fixed-1s", "calls per reply, ours / per-delta", "ours/native"):
        assert line in result.stdout
    floor_rows = [row.split() for row in result.stdout.splitlines() if row.split()[:1] == ["2"]]
    assert [row[1] for row in floor_rows] == ["edit", "native", "both"]  # each beside its floor
    assert all(row[-1] == "0" for row in floor_rows)  # nothing lost


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


def test_the_ideal_schedulers_floor_is_what_the_budget_allows() -> None:
    from bench.floor import Budget, ideal_staleness, percentile

    # one reply, 30 pieces in 0.15 s, ten calls at once: each piece shown within 16 ms
    fast = [[(i * 0.005, i + 1) for i in range(30)]]
    staleness, calls = ideal_staleness(fast, Budget(50, 10))
    assert len(staleness) == 30 and max(staleness) <= 0.02 and calls <= 10
    # 100 replies ending together need 100 final calls: 10 at once, then 50 a minute, so
    # the last is shown about (100 - 10) / 50 minutes after the text ends, and no sooner
    crowd = [[(i / 40, i + 1) for i in range(300)] for _ in range(100)]
    staleness, calls = ideal_staleness(crowd, Budget(50, 10))
    assert 100 <= calls <= 10 + 50 * (7.5 + max(staleness)) / 60
    assert 100 <= max(staleness) <= 110 and percentile(staleness, 0.5) < max(staleness)
