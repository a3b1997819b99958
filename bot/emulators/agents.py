"""Emulator of the Azure AI Foundry Agent Service, for the playground, the tests and the
benchmarks: one server speaking both protocols, the classic threads/runs (``classic.py``)
and new agents over the Responses API (``responses.py``), on shared state
(``agent_state.py``). This module adds the server, the bearer and api-version checks,
injected faults and the command line.

It speaks the wire format of the real service (DESIGN.md section 2, checked by running
the official azure-ai-agents SDK against it): routes under ``/api/projects/<project>``
with ``?api-version``, a bearer check, JSON error bodies, one active run per thread, and
runs that stream ``event:``/``data:`` frames ending with ``event: done`` / ``data: [DONE]``.
Its "model" is a script (``agent_script.py``) or, with none, an echo that can call a
function tool named in the message.

Standalone: ``python -m bot.emulators.agents --port 8081 [--script FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
from typing import Any

from aiohttp import web

from .agent_script import Script, ScriptError
from .agent_state import BODY, Fault, api_error
from .classic import ClassicAPI
from .responses import ResponsesAPI


class AgentServiceEmulator(ClassicAPI):
    """In-memory agent service. ``await start()`` returns the project endpoint URL."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        project: str = "demo",
        token: str | None = None,
        crlf: bool = False,
        keepalive: float | None = None,
        agent_id: str = "asst_demo",
        agent_tools: list[dict[str, Any]] | None = None,
        run_expiry_s: int = 600,
        action_expiry_s: int = 36000,
        context_limit_chars: int | None = None,
    ) -> None:
        super().__init__(
            script, crlf=crlf, keepalive=keepalive, run_expiry_s=run_expiry_s, action_expiry_s=action_expiry_s
        )
        self.project = project
        self.token = token
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.responses_api = ResponsesAPI(self, context_limit_chars=context_limit_chars)
        self.app = self._make_app()
        if agent_id:
            self._create_agent_doc(
                {
                    "model": "gpt-4o-emulated",
                    "name": "Demo agent",
                    "instructions": "You are a helpful assistant.",
                    "tools": agent_tools or [],
                },
                agent_id=agent_id,
            )

    # -- lifecycle --------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/api/projects/{self.project}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.endpoint

    async def stop(self) -> None:
        await self.stop_runs()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AgentServiceEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(
        self,
        method: str,
        path: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        body: str | None = None,
        content_type: str | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``times`` requests matching ``method path`` fail this way."""
        self.faults.append(
            Fault(method.upper(), path, status, times, retry_after, body, content_type, message)
        )

    # -- app and middleware -----------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        base = "/api/projects/{project}"
        self.classic_routes(app.router, base)
        self.responses_api.routes(app, base)
        self.files.routes(app.router, base)
        app.router.add_post("/_emulator/faults", self._add_fault)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return await handler(request)
        prefix = f"/api/projects/{self.project}"
        if not request.path.startswith(prefix + "/"):
            return api_error(404, f"Resource not found: {request.path}", "NotFound")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return api_error(
                401,
                "Access denied: missing bearer token. Authenticate with Entra ID "
                "for scope https://ai.azure.com/.default.",
                "PermissionDenied",
            )
        if self.token is not None and token.strip() != self.token:
            return api_error(
                401, "Access denied: the bearer token is invalid or expired.", "PermissionDenied"
            )
        if not request.query.get("api-version") and "/openai/v1/" not in request.path:
            return api_error(
                400,
                "Missing required query parameter: api-version",
                "BadRequest",
                param="api-version",
            )
        body: Any = None
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    return api_error(400, "The request body is not valid JSON.", "invalid_payload")
                if not isinstance(body, dict):
                    return api_error(400, "The request body must be a JSON object.", "invalid_payload")
        request[BODY] = body if body is not None else {}
        route = request.path[len(prefix) :]
        self.requests.append((request.method, route, body))
        if request.transport is not None:  # which client connection it came on (pooling is visible)
            self.connections.add(request.transport.get_extra_info("peername"))
        self.request_log.append(
            {
                "method": request.method,
                "path": route,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fnmatch.fnmatchcase(route, fault.path):
                fault.times -= 1
                return fault.response()
        return await handler(request)

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            self.fail_next(**(await request.json()))
        except (TypeError, ValueError) as exc:
            return api_error(400, f"bad fault: {exc}")
        return web.json_response({"ok": True})


# -- command line --------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot.emulators.agents",
        description="Emulated Azure AI Foundry Agent Service (classic threads/runs).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--project", default="demo", help="project name in the endpoint path")
    parser.add_argument("--script", help="JSON or YAML script for the model (see agent_script.py)")
    parser.add_argument("--token", help="accept only this bearer token (default: any)")
    parser.add_argument("--agent-id", default="asst_demo", help="id of the agent created at start")
    parser.add_argument("--crlf", action="store_true", help="frame the stream with CRLF line ends")
    parser.add_argument(
        "--keepalive",
        type=float,
        metavar="SECONDS",
        help="send ': keep-alive' comments when idle this long",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, script: Script) -> None:
    emulator = AgentServiceEmulator(
        script,
        project=args.project,
        token=args.token,
        crlf=args.crlf,
        keepalive=args.keepalive,
        agent_id=args.agent_id,
    )
    endpoint = await emulator.start(args.host, args.port)
    print(f"agent service emulator on {endpoint}", flush=True)
    print(
        f"  PROJECT_ENDPOINT={endpoint} AGENT_ID={args.agent_id} "
        f"AGENTS_ACCESS_TOKEN={'<your --token>' if args.token else 'any-value'}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        script = Script.load(args.script) if args.script else Script()
    except ScriptError as exc:
        print(f"error: {exc}")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(_serve(args, script))
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}")
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["AgentServiceEmulator", "ClassicAPI", "Fault", "ResponsesAPI", "Script", "ScriptError"]
