"""The README's promises: the settings table matches the code, the example runs."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from bot.settings import Settings
from tests.test_sdk_against_emulator import WEATHER_SCRIPT

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_settings_table_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.MULTILINE))
    declared = {field.alias for field in Settings.model_fields.values()}
    assert documented == declared


def test_readme_gives_the_two_setup_commands() -> None:
    assert "make run" in README and "make test" in README


async def test_get_weather_example_runs_against_the_emulator(make_emulator: Callable, tmp_path: Path) -> None:
    emulator = await make_emulator(WEATHER_SCRIPT)
    code = README.split("<!-- example: get_weather -->\n```python\n", 1)[1].split("```", 1)[0]
    example = tmp_path / "example.py"
    example.write_text(code, encoding="utf-8")
    env = {
        **os.environ,
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "readme",
        "PYTHONPATH": os.getcwd(),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(example),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert 'The forecast: {"location": "Seattle", "weather": "72F, sunny"}. Enjoy!' in out.decode()
    assert ": completed" in out.decode()
