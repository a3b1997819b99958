"""Finding tools: every module in ``BOT_TOOLS_DIR`` and the ``slack_agent_bot.tools``
entry-point group (plugins installed as packages).

A module that fails to import is listed as broken with its error, and the others still
load; two tools with one name stop the start-up with an error naming both sources.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from ..logs import log
from .tool import ToolSpec

logger = logging.getLogger("bot.plugins")
ENTRY_POINT_GROUP = "slack_agent_bot.tools"


class PluginError(ValueError):
    """A plugin set the bot cannot start with (e.g. two tools with one name)."""


@dataclass
class BrokenPlugin:
    source: str
    error: str


@dataclass
class Registry:
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)

    def add(self, spec: ToolSpec, source: str) -> None:
        existing = self.tools.get(spec.name)
        if existing is not None and existing.function is not spec.function:
            raise PluginError(
                f"two tools are named {spec.name!r}: {existing.source} and {source}; "
                "rename one with @tool(name=...)"
            )
        spec.source = source
        self.tools[spec.name] = spec

    def get(self, name: str) -> ToolSpec | None:
        return self.tools.get(name)

    def __len__(self) -> int:
        return len(self.tools)


def specs_in(obj: Any) -> list[ToolSpec]:
    """The tools a module (or a single function, or a list of functions) offers."""
    if isinstance(obj, ModuleType):
        candidates = [value for key, value in vars(obj).items() if not key.startswith("__")]
    elif isinstance(obj, (list, tuple)):
        candidates = list(obj)
    else:
        candidates = [obj]
    specs = []
    for candidate in candidates:
        spec = getattr(candidate, "__tool__", None)
        if isinstance(spec, ToolSpec) and spec not in specs:
            specs.append(spec)
    return specs


def _import_file(path: Path) -> ModuleType:
    module_name = f"slack_agent_bot_tools.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _error_text(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def discover(tools_dir: str | Path | None, *, entry_point_group: str = ENTRY_POINT_GROUP) -> Registry:
    registry = Registry()
    if tools_dir:
        folder = Path(tools_dir)
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                source = str(path)
                try:
                    module = _import_file(path)
                except Exception as exc:  # a broken plugin must not take the bot down
                    registry.broken.append(BrokenPlugin(source, _error_text(exc)))
                    log(
                        logger,
                        "plugin.broken",
                        logging.ERROR,
                        source=source,
                        error=_error_text(exc),
                    )
                    continue
                for spec in specs_in(module):
                    registry.add(spec, f"{source}:{spec.function.__name__}")
        elif folder.exists():
            registry.broken.append(BrokenPlugin(str(folder), "BOT_TOOLS_DIR is not a folder"))
    for entry in entry_points(group=entry_point_group):
        source = f"entry point {entry.name} ({entry.value})"
        try:
            loaded = entry.load()
        except Exception as exc:
            registry.broken.append(BrokenPlugin(source, _error_text(exc)))
            log(logger, "plugin.broken", logging.ERROR, source=source, error=_error_text(exc))
            continue
        for spec in specs_in(loaded):
            registry.add(spec, source)
    log(
        logger,
        "plugins.loaded",
        tools=",".join(registry.tools) or "none",
        broken=len(registry.broken),
    )
    return registry
