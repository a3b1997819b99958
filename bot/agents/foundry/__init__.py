"""New Foundry agents over the Responses API (private to ``bot.agents``)."""

from __future__ import annotations

from .backend import PREVIEW_FEATURES, FoundryBackend
from .stream import ResponseStream

__all__ = ["PREVIEW_FEATURES", "FoundryBackend", "ResponseStream"]
