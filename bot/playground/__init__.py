"""The local playground: an emulated Slack thread view in the browser, the real bot behind it."""

from .server import Playground, serve

__all__ = ["Playground", "serve"]
