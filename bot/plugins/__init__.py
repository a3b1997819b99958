"""Tool plugins: ``from bot.plugins import tool, ToolContext``.

A plugin is a Python module with functions marked ``@tool``. Type hints become the JSON
Schema the agent sees, the docstring its description. See ``tools/README.md``.
"""

from .context import ToolContext
from .registry import ENTRY_POINT_GROUP, BrokenPlugin, PluginError, Registry, discover
from .runner import Confirmer, PluginToolRunner
from .tool import ToolSpec, tool

__all__ = [
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "Confirmer",
    "PluginError",
    "PluginToolRunner",
    "Registry",
    "ToolContext",
    "ToolSpec",
    "discover",
    "tool",
]
