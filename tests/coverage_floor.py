"""The coverage floor `make test` holds: >= 90% of bot/ in all, and no module under 80%.

Reads the data `pytest --cov` just wrote (the bot processes the tests started included) and
exits non-zero naming every module under its floor.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import coverage

TOTAL_FLOOR = 90.0
MODULE_FLOOR = 80.0


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    cov = coverage.Coverage(data_file=str(root / ".coverage"), config_file=str(root / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))  # every file under bot/, imported or not
        report = json.loads(out.read_text())
    total = float(report["totals"]["percent_covered"])
    low = sorted(
        (name, float(entry["summary"]["percent_covered"]))
        for name, entry in report["files"].items()
        if entry["summary"]["num_statements"] and entry["summary"]["percent_covered"] < MODULE_FLOOR
    )
    print(
        f"coverage floor: {total:.1f}% of bot/ in all (floor {TOTAL_FLOOR:g}%), "
        f"every module >= {MODULE_FLOOR:g}%: {'held' if total >= TOTAL_FLOOR and not low else 'MISSED'}"
    )
    for name, percent in low:
        print(f"  under the floor: {name} {percent:.1f}%")
    return 0 if total >= TOTAL_FLOOR and not low else 1


if __name__ == "__main__":
    sys.exit(main())
