"""Classic agents: threads and runs over httpx and our SSE decoder (private to ``bot.agents``)."""

from __future__ import annotations

from .backend import ClassicBackend
from .client import AgentsClient, RunStream

__all__ = ["AgentsClient", "ClassicBackend", "RunStream"]
