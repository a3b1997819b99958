"""The playground: the emulated Slack workspace in a browser, the real bot behind it.

One process runs the Slack emulator, the agent emulator (or your real agent), the real
bot, and this page. The page shows the emulator's messages as they change (Server-Sent
Events), writes as a chosen person, clicks buttons, and shows each reply's timeline of
Slack calls and agent events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from importlib import resources
from typing import Any

from aiohttp import web
from yarl import URL

from ..devstack.stack import EmulatedStack, start_stack
from ..emulators.agent_script import Script
from ..emulators.agents import AgentServiceEmulator
from ..settings import Settings
from .demo import DEMO_SCRIPT, restart_service

logger = logging.getLogger("bot.playground")
STATIC = resources.files("bot.playground") / "static"
CONTENT_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css"}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_HEADER = "X-Playground-Token"
MAX_ATTACH_BYTES = 25 * 1024 * 1024  # one file the page may attach (the bot's own limit applies after)
MAX_ATTACHED = 10
# shown in the page as pictures; every other file is only ever a download (never rendered on
# this origin, where a shared HTML file could read the page's token)
INLINE_IMAGES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}


class Playground:
    def __init__(self, stack: EmulatedStack, *, real_agent: bool) -> None:
        self.stack = stack
        self.real_agent = real_agent
        self.started = time.monotonic()
        self.timeline: list[dict[str, Any]] = []
        self.clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        # the page carries this; another site's page (or a rebound DNS name) cannot read it
        self.token = secrets.token_urlsafe(24)
        stack.slack.listeners.append(self._on_change)
        stack.agent.listeners.append(self._on_change)

    def _on_change(self, change: dict[str, Any]) -> None:
        change = {**change}
        if "t" in change:
            change["t"] = round((change["t"] - self.started) * 1000)
        if change["kind"] not in ("message", "ephemeral", "pane"):
            self.timeline.append(change)
            del self.timeline[:-5000]
        for queue in list(self.clients):
            queue.put_nowait(change)

    def close_streams(self) -> None:
        for queue in list(self.clients):
            queue.put_nowait(None)

    def snapshot(self) -> dict[str, Any]:
        slack = self.stack.slack
        return {
            "bot_user": slack.bot_user,
            "users": {
                uid: {"name": u["name"], "real_name": u["real_name"], "is_bot": u["is_bot"]}
                for uid, u in slack.users.items()
            },
            "channels": [
                {"id": c["id"], "name": c["name"], "is_im": c["is_im"]} for c in slack.channels.values()
            ],
            "messages": [slack.message_change(m) for msgs in slack.messages.values() for m in msgs],
            "ephemerals": [{**e, "t": round((e["t"] - self.started) * 1000)} for e in slack.ephemerals],
            "timeline": self.timeline,
            "real_agent": self.real_agent,
            "panes": [slack.pane_change(dm, ts) for dm, ts in slack.panes],
            "stream_mode": self.stack.bot.orchestrator.native.mode,
        }

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Only this machine's own page may drive the playground: a loopback ``Host`` (no DNS
        rebinding), and on ``/api/*`` the page's token, JSON bodies and a same-origin
        ``Origin`` (no cross-site form or fetch)."""
        host = URL(f"http://{request.host}").host if request.host else None
        if host not in LOOPBACK:
            return _refuse(403, "the playground answers only on 127.0.0.1 / localhost")
        if request.path == "/healthz" or not request.path.startswith("/api/"):
            return await handler(request)
        given = request.headers.get(TOKEN_HEADER) or request.query.get("token") or ""
        if not hmac.compare_digest(given, self.token):
            return _refuse(403, "missing or wrong playground token (reload the page)")
        if request.method != "GET":
            if request.content_type != "application/json":
                return _refuse(415, "send JSON")
            if request.headers.get("Origin") != f"{request.scheme}://{request.host}":
                return _refuse(403, "requests must come from the playground's own page")
        return await handler(request)

    def app(self) -> web.Application:
        # attached files arrive base64 in JSON: room for MAX_ATTACHED of them, at most
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_ATTACH_BYTES * 2)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/post", self._post)
        app.router.add_post("/api/click", self._click)
        app.router.add_post("/api/assistant", self._assistant)
        app.router.add_post("/api/writer", self._writer)
        app.router.add_get("/api/files/{file_id}", self._file)
        app.router.add_get("/healthz", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _index(self, request: web.Request) -> web.Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        meta = f'<meta name="playground-token" content="{self.token}">'
        return web.Response(text=page.replace("<head>", f"<head>\n{meta}", 1), content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or ".." in name or suffix not in CONTENT_TYPES:
            raise web.HTTPNotFound()
        resource = STATIC / name
        if not resource.is_file():
            raise web.HTTPNotFound()
        return web.Response(text=resource.read_text(encoding="utf-8"), content_type=CONTENT_TYPES[suffix])

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.clients.add(queue)
        try:
            await response.write(f"event: snapshot\ndata: {json.dumps(self.snapshot())}\n\n".encode())
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if change is None:  # the playground is stopping
                    break
                await response.write(f"event: change\ndata: {json.dumps(change, default=str)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(queue)
        return response

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        user, channel, text = body.get("user"), body.get("channel"), (body.get("text") or "").strip()
        slack = self.stack.slack
        try:
            files = _attached(body.get("files") or [])
        except ValueError as exc:
            return _refuse(400, str(exc))
        if user not in slack.users or channel not in slack.channels or not (text or files):
            return _refuse(400, "need a known user, channel and some text or a file")
        thread_ts = body.get("thread_ts") or None
        if files:
            ts = slack.user_shares(user, channel, text, files, thread_ts=thread_ts)
        else:
            ts = slack.user_posts(user, channel, text, thread_ts=thread_ts)
        return web.json_response({"ok": True, "ts": ts})

    async def _file(self, request: web.Request) -> web.Response:
        """A file of the workspace, for the page: a picture inline, anything else a download."""
        stored = self.stack.slack.files.files.get(request.match_info["file_id"])
        if stored is None or stored.content is None:
            raise web.HTTPNotFound()
        inline = INLINE_IMAGES.get(stored.filetype)
        headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
        if inline is None:
            safe = "".join(c if c.isalnum() or c in "._- " else "_" for c in stored.name)
            headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        return web.Response(
            body=stored.content, content_type=inline or "application/octet-stream", headers=headers
        )

    async def _click(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            status = await self.stack.slack.click(
                body["user"], body["channel"], body["ts"], body["action_id"], body.get("value", "")
            )
        except ValueError:  # the page showed a button an update has since taken off
            return web.json_response({"ok": False, "error": "that button is no longer on the message"})
        return web.json_response({"ok": status == 200})

    async def _assistant(self, request: web.Request) -> web.Response:
        """The person opens the bot's assistant pane, looking at ``viewing`` (a channel, or none)."""
        body = await request.json()
        slack, user, viewing = self.stack.slack, body.get("user"), body.get("viewing") or None
        has_dm = any(c.get("is_im") and c.get("user") == user for c in slack.channels.values())
        if user not in slack.users or not has_dm or (viewing is not None and viewing not in slack.channels):
            return _refuse(400, "need a person with a DM with the bot, and a known channel (or none)")
        dm, thread_ts = slack.open_assistant(user, viewing=viewing)
        return web.json_response({"ok": True, "channel": dm, "thread_ts": thread_ts})

    async def _writer(self, request: web.Request) -> web.Response:
        """Switch how replies stream: edits, Slack's native streams, or native where it works."""
        mode = (await request.json()).get("mode")
        if mode not in ("edit", "native", "auto"):
            return _refuse(400, "mode is edit, native or auto")
        native = self.stack.bot.orchestrator.native
        native.mode = mode
        native.refused.clear()  # a switch is a fresh start: try native again everywhere
        return web.json_response({"ok": True, "mode": mode})


def _attached(files: Any) -> list[tuple[str, bytes, str]]:
    """The page's attachments (name, MIME type, base64 content each), checked."""
    if not isinstance(files, list) or len(files) > MAX_ATTACHED:
        raise ValueError(f"attach at most {MAX_ATTACHED} files")
    out = []
    for file in files:
        name = str((file or {}).get("name") or "").strip()
        if not name or "/" in name:
            raise ValueError("each attached file needs a plain name")
        try:
            content = base64.b64decode(str(file.get("data") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: the file's content is not valid base64") from None
        if len(content) > MAX_ATTACH_BYTES:
            raise ValueError(f"{name}: over the playground's {MAX_ATTACH_BYTES // 1024 // 1024} MB limit")
        out.append((name, content, str(file.get("type") or "application/octet-stream")))
    return out


def _refuse(status: int, why: str) -> web.Response:
    return web.json_response({"ok": False, "error": why}, status=status)


async def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    script_path: str | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    backend: str = "classic",
) -> None:
    """Run the playground until ``stop`` is set (or forever)."""
    script = Script.load(script_path) if script_path else Script.parse(DEMO_SCRIPT)
    overrides: dict[str, Any] = {"tools_dir": settings.tools_dir}
    real_agent = settings.has_agent
    if real_agent:
        overrides.update(
            project_endpoint=settings.project_endpoint,
            agent_id=settings.agent_id,
            agent_name=settings.agent_name,
            agent_version=settings.agent_version,
            agent_backend=settings.agent_backend,
            agents_access_token=settings.agents_access_token,
            agent_addressing=settings.agent_addressing,
            agents_background=settings.agents_background,
            agents_truncation=settings.agents_truncation,
        )
    agent = AgentServiceEmulator(script, agent_tools=[])
    stack = await start_stack(
        agent=agent,
        settings_overrides=overrides,
        extra_tools=[restart_service],
        budgets=None,
        backend="classic" if real_agent else backend,
    )
    playground = Playground(stack, real_agent=real_agent)
    runner = web.AppRunner(playground.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await stack.close()
        raise
    print(f"Playground: http://{host}:{port}", flush=True)
    print(
        "This is a demo on emulated services: an emulated Slack workspace, "
        + ("your real agent." if real_agent else "an emulated, scripted agent."),
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        playground.close_streams()
        await runner.cleanup()
        await stack.close()
