"""Slack's side of installing an app in a workspace: the consent page
(``/oauth/v2/authorize``), the code exchange and token refresh (``oauth.v2.access``), and the
tokens it issues, each bound to one workspace, expiring when token rotation is on, revoked
when the app is uninstalled.

Sources (docs/service-contract.md, "Slack OAuth"): the method's documented errors
(``invalid_client_id``, ``bad_client_secret``, ``invalid_code``, ``bad_redirect_uri``,
``invalid_grant_type``, ``invalid_refresh_token``), Slack's token rotation guide (``expires_in``
43200 s, ``xoxe.xoxb-`` tokens, ``refresh_token`` ``xoxe-1-``), and slack_sdk's
``AuthorizeUrlGenerator`` / ``AsyncTokenRotator`` for what a client sends.
"""

from __future__ import annotations

import base64
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

CODE_TTL_S = 600.0  # a code not exchanged within ten minutes is refused
ROTATED_TOKEN_TTL_S = 43_200  # Slack's rotating tokens live twelve hours


@dataclass
class Workspace:
    team_id: str
    name: str
    bot_user: str
    bot_id: str


@dataclass
class IssuedToken:
    team: str
    expires_at: float | None = None  # wall clock; None: never expires (rotation off)
    revoked: bool = False


@dataclass
class _Code:
    team: str
    user: str
    redirect_uri: str | None
    scopes: str
    expires_at: float
    used: bool = False


@dataclass
class OAuthApp:
    """The app as configured on api.slack.com: credentials, redirect URLs, token rotation."""

    client_id: str
    client_secret: str
    redirect_urls: tuple[str, ...] = ()
    token_rotation: bool = False
    token_ttl_s: int = ROTATED_TOKEN_TTL_S


@dataclass
class SlackInstalls:
    """Installs of one app across the emulated workspaces, and every token they issued."""

    app: OAuthApp | None = None
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    signed_in: tuple[str, str] = ("T0EMU", "U0ALICE")  # who the browser is signed in as
    _codes: dict[str, _Code] = field(default_factory=dict)
    _refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> team
    installed: list[dict[str, Any]] = field(default_factory=list)  # every exchange, in order

    # -- tokens ------------------------------------------------------------------------

    def team_of(self, token: str) -> tuple[str | None, str | None]:
        """(team, None) for a good token; (None, Slack's error) otherwise."""
        issued = self.tokens.get(token)
        if issued is None:
            return None, "invalid_auth"
        if issued.revoked:
            return None, "token_revoked"
        if issued.expires_at is not None and issued.expires_at <= time.time():
            return None, "token_expired"
        return issued.team, None

    def revoke(self, team: str) -> None:
        for issued in self.tokens.values():
            if issued.team == team:
                issued.revoked = True
        self._refresh = {token: t for token, t in self._refresh.items() if t != team}

    def _issue(self, team: str, *, prefix: str) -> dict[str, Any]:
        token = f"{prefix}-{team}-{secrets.token_hex(8)}"
        granted: dict[str, Any] = {"access_token": token}
        if self.app is not None and self.app.token_rotation:
            self.tokens[token] = IssuedToken(team, time.time() + self.app.token_ttl_s)
            refresh = f"xoxe-1-{secrets.token_hex(12)}"
            self._refresh[refresh] = team
            granted.update(refresh_token=refresh, expires_in=self.app.token_ttl_s)
        else:
            self.tokens[token] = IssuedToken(team)
        return granted

    # -- the consent page --------------------------------------------------------------

    def routes(self, app: web.Application, workspaces: dict[str, Workspace]) -> None:
        self._workspaces = workspaces
        app.router.add_get("/oauth/v2/authorize", self._consent)
        app.router.add_post("/oauth/v2/authorize", self._decide)

    def _authorize_error(self, query: Any) -> str | None:
        if self.app is None or query.get("client_id") != self.app.client_id:
            return "invalid_client_id"
        if not query.get("scope") and not query.get("user_scope"):
            return "no_scopes"
        redirect_uri = query.get("redirect_uri")
        if self.app.redirect_urls and redirect_uri and not redirect_uri.startswith(self.app.redirect_urls):
            return "bad_redirect_uri"
        if not redirect_uri and not self.app.redirect_urls:
            return "bad_redirect_uri"
        return None

    async def _consent(self, request: web.Request) -> web.Response:
        """What the person signed in to Slack sees: which workspace, which app, Allow."""
        error = self._authorize_error(request.query)
        if error:
            return web.Response(
                status=400, text=f"<h1>Something went wrong</h1><p>{error}</p>", content_type="text/html"
            )
        team, user = self.signed_in
        workspace = self._workspaces[team]
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in request.query.items()
        )
        name = html.escape(workspace.name)
        page = (
            f"<h1>Agent is requesting permission to access the {name} Slack workspace</h1>"
            f'<form method="post" action="/oauth/v2/authorize">{hidden}'
            f'<input type="hidden" name="team" value="{team}">'
            f'<input type="hidden" name="user" value="{user}">'
            '<button name="decision" value="allow">Allow</button>'
            '<button name="decision" value="cancel">Cancel</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        error = self._authorize_error(form)
        if error:
            return web.Response(status=400, text=error)
        assert self.app is not None
        target = str(form.get("redirect_uri") or self.app.redirect_urls[0])
        state = str(form.get("state") or "")
        if form.get("decision") != "allow":
            raise web.HTTPFound(f"{target}?{urlencode({'error': 'access_denied', 'state': state})}")
        code = secrets.token_hex(12)
        self._codes[code] = _Code(
            str(form["team"]),
            str(form["user"]),
            str(form.get("redirect_uri") or "") or None,
            str(form.get("scope") or ""),
            time.time() + CODE_TTL_S,
        )
        raise web.HTTPFound(f"{target}?{urlencode({'code': code, 'state': state})}")

    # -- oauth.v2.access ---------------------------------------------------------------

    def access(self, authorization: str, params: dict[str, Any]) -> dict[str, Any]:
        """The code exchange (``grant_type=authorization_code``, the default) or a token
        refresh (``grant_type=refresh_token``); client credentials by HTTP Basic auth (what
        slack_sdk sends) or as parameters."""
        client_id, client_secret = _credentials(authorization, params)
        if self.app is None or client_id != self.app.client_id:
            return {"ok": False, "error": "invalid_client_id"}
        if client_secret != self.app.client_secret:
            return {"ok": False, "error": "bad_client_secret"}
        grant = params.get("grant_type") or "authorization_code"
        if grant == "refresh_token":
            return self._refreshed(str(params.get("refresh_token") or ""))
        if grant != "authorization_code":
            return {"ok": False, "error": "invalid_grant_type"}
        code = self._codes.get(str(params.get("code") or ""))
        if code is None or code.used or code.expires_at <= time.time():
            return {"ok": False, "error": "invalid_code"}
        if code.redirect_uri and params.get("redirect_uri") != code.redirect_uri:
            return {"ok": False, "error": "bad_redirect_uri"}
        code.used = True
        answer = self._grant(code.team, code.scopes)
        answer["authed_user"] = {"id": code.user}
        self.installed.append({"team": code.team, "user": code.user, "token": answer["access_token"]})
        return answer

    def _refreshed(self, refresh_token: str) -> dict[str, Any]:
        team = self._refresh.pop(refresh_token, None)  # each refresh token is good once
        if team is None:
            return {"ok": False, "error": "invalid_refresh_token"}
        return {**self._grant(team, "", prefix="xoxe.xoxb-1"), "authed_user": {}}

    def _grant(self, team: str, scopes: str, *, prefix: str = "xoxb") -> dict[str, Any]:
        workspace = self._workspaces[team]
        return {
            "ok": True,
            "app_id": "A0EMUAPP",
            "token_type": "bot",
            "scope": scopes,
            "bot_user_id": workspace.bot_user,
            "team": {"id": team, "name": workspace.name},
            "enterprise": None,
            "is_enterprise_install": False,
            **self._issue(team, prefix=prefix),
        }


def _credentials(authorization: str, params: dict[str, Any]) -> tuple[str, str]:
    if authorization.startswith("Basic "):
        try:
            decoded = base64.b64decode(authorization.removeprefix("Basic ").strip()).decode()
        except ValueError:
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        return client_id, client_secret
    return str(params.get("client_id") or ""), str(params.get("client_secret") or "")
