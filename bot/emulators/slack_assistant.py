"""Slack's assistant side pane in the emulator: a person opens the pane (``assistant_thread_started``
with the channel they are looking at), switches channel (``assistant_thread_context_changed``),
and the app sets the thread's status, suggested prompts and title.

Sources (docs/service-contract.md): docs.slack.dev/ai (Agents & AI Apps: the events and their
``assistant_thread`` object: ``user_id``, ``channel_id``, ``thread_ts``, ``context``
``{channel_id, team_id, enterprise_id}``); the method pages of ``assistant.threads.setStatus``,
``setSuggestedPrompts`` and ``setTitle`` (args and errors as kept in slack-ruby/slack-api-ref:
``channel_id`` and ``thread_ts`` required, ``invalid_thread_ts``, ``channel_not_found``);
DESIGN.md 3 (at most four prompts; ``loading_messages``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .slack import Message

MAX_PROMPTS = 4


class PaneThread:
    """One assistant thread as Slack keeps it: its status, prompts and title over time."""

    def __init__(self, user: str, context: dict[str, str]) -> None:
        self.user = user
        self.context = context
        self.statuses: list[tuple[float, str, list[str]]] = []  # (when, status, loading messages)
        self.prompts: list[dict[str, str]] = []
        self.prompts_title = ""
        self.title = ""
        self.status = ""  # shown until the app replies in the thread (or it is set to "")


class AssistantMethods:
    """Mixed into ``SlackEmulator``: the pane's events and the ``assistant.threads.*`` methods."""

    channels: dict[str, dict[str, Any]]
    team_id: str

    def _init_assistant(self) -> None:
        self.panes: dict[tuple[str, str], PaneThread] = {}

    def open_assistant(self, user: str, *, viewing: str | None = None) -> tuple[str, str]:
        """The person opens the app's pane (looking at channel ``viewing``): Slack starts a
        thread in their DM with the app and tells the app. Returns (DM channel, thread_ts)."""
        dm = next(c for c, info in self.channels.items() if info.get("is_im") and info.get("user") == user)
        team = str(self.channels[dm]["team"])
        root = self._bot_post(dm, "New chat")  # Slack's own root of the pane's thread
        context = {"channel_id": viewing, "team_id": team, "enterprise_id": None} if viewing else {}
        self.panes[(dm, root.ts)] = PaneThread(user, {k: v for k, v in context.items() if v})
        self._pane_changed(dm, root.ts)
        event = {
            "type": "assistant_thread_started",
            "assistant_thread": {"user_id": user, "context": context, "channel_id": dm, "thread_ts": root.ts},
            "event_ts": f"{time.time():.6f}",
        }
        self._deliver_event(event, team)
        return dm, root.ts

    def switch_channel(self, user: str, dm: str, thread_ts: str, viewing: str) -> None:
        """The person, pane open, moves to another channel."""
        team = str(self.channels[dm]["team"])
        context = {"channel_id": viewing, "team_id": team, "enterprise_id": None}
        self.panes[(dm, thread_ts)].context = {"channel_id": viewing, "team_id": team}
        thread = {"user_id": user, "context": context, "channel_id": dm, "thread_ts": thread_ts}
        event = {
            "type": "assistant_thread_context_changed",
            "assistant_thread": thread,
            "event_ts": f"{time.time():.6f}",
        }
        self._deliver_event(event, team)

    def pane(self, dm: str, thread_ts: str) -> PaneThread | None:
        return self.panes.get((dm, thread_ts))

    def pane_change(self, dm: str, thread_ts: str) -> dict[str, Any]:
        pane = self.panes[(dm, thread_ts)]
        return {
            "kind": "pane",
            "channel": dm,
            "thread_ts": thread_ts,
            "title": pane.title,
            "status": pane.status,
            "loading": pane.statuses[-1][2] if pane.statuses and pane.status else [],
            "prompts": pane.prompts,
            "prompts_title": pane.prompts_title,
            "viewing": pane.context.get("channel_id"),
        }

    def _pane_changed(self, dm: str, thread_ts: str) -> None:
        self._notify(self.pane_change(dm, thread_ts))

    def _app_replied(self, channel: str, thread_ts: str | None) -> None:
        """The app posted in a pane's thread: its status goes (as in Slack's client)."""
        pane = self.panes.get((channel, thread_ts or ""))
        if pane is not None and pane.status:
            pane.status = ""
            self._pane_changed(channel, str(thread_ts))

    # -- the methods --------------------------------------------------------------------------

    def _pane_of(self, params: dict[str, Any]) -> tuple[PaneThread | None, str | None]:
        channel, thread_ts = params.get("channel_id"), params.get("thread_ts")
        if not channel or not thread_ts:
            return None, "invalid_arguments"
        if self._channel_error({"channel": channel}):
            return None, "channel_not_found"
        pane = self.panes.get((str(channel), str(thread_ts)))
        if pane is None:
            return None, "invalid_thread_ts"
        return pane, None

    def _m_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        pane, error = self._pane_of(params)
        if pane is None or "status" not in params:
            return {"ok": False, "error": error or "invalid_arguments"}
        loading = params.get("loading_messages") or []
        if not isinstance(loading, list) or len(loading) > 10:
            return {"ok": False, "error": "invalid_arguments"}
        pane.statuses.append((time.monotonic(), str(params["status"]), [str(m) for m in loading]))
        pane.status = str(params["status"])
        self._pane_changed(str(params["channel_id"]), str(params["thread_ts"]))
        return {"ok": True}

    def _m_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        pane, error = self._pane_of(params)
        if pane is None:
            return {"ok": False, "error": error}
        prompts = params.get("prompts")
        if (
            not isinstance(prompts, list)
            or not 1 <= len(prompts) <= MAX_PROMPTS
            or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts)
        ):
            return {"ok": False, "error": "invalid_arguments"}
        pane.prompts = [{"title": str(p["title"]), "message": str(p["message"])} for p in prompts]
        pane.prompts_title = str(params.get("title") or "")
        self._pane_changed(str(params["channel_id"]), str(params["thread_ts"]))
        return {"ok": True}

    def _m_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        pane, error = self._pane_of(params)
        if pane is None or not params.get("title"):
            return {"ok": False, "error": error or "invalid_arguments"}
        pane.title = str(params["title"])
        self._pane_changed(str(params["channel_id"]), str(params["thread_ts"]))
        return {"ok": True}

    # provided by SlackEmulator
    def _channel_error(self, params: dict[str, Any]) -> str | None: ...
    def _bot_post(self, channel: str, text: str) -> Message: ...
    def _deliver_event(self, event: dict[str, Any], team: str) -> None: ...
    def _notify(self, change: dict[str, Any]) -> None: ...
