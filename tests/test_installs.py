"""Installed in many workspaces: Bolt's OAuth flow against the Slack emulator's consent page
and ``oauth.v2.access``, installs kept by slack_sdk's SQLAlchemy store on the machine's real
PostgreSQL, each workspace answered with its own token, tokens rotated before they expire,
uninstalls cleaned up."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from slack_sdk.web.async_client import AsyncWebClient

from bot.emulators.slack import SlackEmulator
from bot.slack.installs import BOT_SCOPES, InstallStoreError, engine_url, open_installs
from tests.stack import Stack, start_stack

REDIS_URL = os.environ.get("TEST_REDIS_INSTALLS_URL", "redis://127.0.0.1:6379/12")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCRIPT = {"turns": [{"actions": [{"text": "Hello from the agent."}], "repeat": True}]}


async def install(stack: Stack, team: str, user: str) -> str:
    return await install_at(stack.url, stack.slack, team, user)


async def install_at(bot_url: str, slack: SlackEmulator, team: str, user: str) -> str:
    """A person signed in to ``team`` opens /slack/install and clicks Allow; the page the
    bot shows at the end."""
    slack.sign_in(team, user)
    # Bolt's state cookie is Secure, as it must be; the test's http://127.0.0.1 stands for https
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[bot_url])
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{bot_url}/slack/install") as response:
            assert response.status == 200
            page = await response.text()
        found = re.search(r'href="([^"]*/oauth/v2/authorize\?[^"]*)"', page)
        assert found, page
        async with browser.get(html.unescape(found.group(1))) as response:
            assert response.status == 200, await response.text()
            consent = await response.text()
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', consent))
        form = {k: html.unescape(v) for k, v in form.items()}
        async with browser.post(
            f"{slack.base_url}/oauth/v2/authorize", data={**form, "decision": "allow"}
        ) as response:  # Slack sends the browser back to the bot's /slack/oauth_redirect
            assert str(response.url).startswith(f"{bot_url}/slack/oauth_redirect")
            return await response.text()


ROUTES = """
agents:
  beta: {backend: foundry, name: demo-agent}
  helpdesk: {backend: classic, id: asst_demo}
default: helpdesk
routes:
  - {team: T0BETA, agent: beta}
"""


async def multi_workspace_stack(
    tmp_path: Path, *, overrides: dict[str, Any] | None = None, **oauth: Any
) -> tuple[Stack, str]:
    slack = SlackEmulator()
    slack.add_workspace("T0BETA", "Beta Corp", channel=("C0BETA", "beta-general"))
    slack.add_user("U0CARL", "carl", "Carl Beta", team_id="T0BETA")
    client_id = f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"  # rows of this test only
    stack = await start_stack(
        SCRIPT,
        tmp_path=tmp_path,
        slack=slack,
        settings_overrides={
            "slack_bot_token": None,
            "slack_client_id": client_id,
            "slack_client_secret": _secret("client-secret"),
            "install_store_url": POSTGRES_URL,
            **(overrides or {}),
        },
    )
    stack.owns_emulators = True
    slack.enable_oauth(
        client_id, "client-secret", redirect_urls=(f"{stack.url}/slack/oauth_redirect",), **oauth
    )
    return stack, client_id


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@pytest.fixture
async def two_workspaces(tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    """Installs in PostgreSQL, the bot's state in Redis (as several replicas would run), and a
    routing file that sends the second workspace to its own agent."""
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()  # this test's own database: nothing of another test's threads
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    stack, client_id = await multi_workspace_stack(
        tmp_path, overrides={"store_url": REDIS_URL, "routes": str(routes)}
    )
    try:
        yield stack, client_id
    finally:
        await _drop_rows(stack, client_id)
        await stack.close()
        await redis.flushdb()
        await redis.aclose()


async def _drop_rows(stack: Stack, client_id: str) -> None:
    installs = stack.bot.installs
    assert installs is not None
    async with installs.engine.begin() as conn:
        for table in (installs.installations.installations, installs.installations.bots):
            await conn.execute(table.delete().where(table.c.client_id == client_id))


def mention(slack: SlackEmulator, user: str, channel: str, text: str) -> str:
    bot_user = slack.workspaces[slack.team_of_channel(channel)].bot_user
    return slack.user_posts(user, channel, f"<@{bot_user}> {text}")


async def test_two_workspaces_install_through_oauth_and_each_is_answered_with_its_own_token(
    two_workspaces: tuple[Stack, str],
) -> None:
    stack, _ = two_workspaces
    slack = stack.slack
    for team, user in (("T0EMU", "U0ALICE"), ("T0BETA", "U0CARL")):
        assert "Thank you" in await install(stack, team, user)
    exchanges = slack.calls_of("oauth.v2.access")
    assert [c.ok for c in exchanges] == [True, True]
    tokens = {i["team"]: i["token"] for i in slack.installs.installed}
    assert set(tokens) == {"T0EMU", "T0BETA"} and tokens["T0EMU"] != tokens["T0BETA"]
    stored = stack.bot.installs
    assert stored is not None
    for team in tokens:  # kept in PostgreSQL, for every replica
        found = await stored.installations.async_find_installation(enterprise_id=None, team_id=team)
        assert found is not None and found.bot_token == tokens[team]

    alpha = mention(slack, "U0ALICE", "C0GENERAL", "hello from alpha")
    beta = mention(slack, "U0CARL", "C0BETA", "hello from beta")
    await stack.settle()
    assert stack.reply_text("C0GENERAL", alpha) == "Hello from the agent."
    assert stack.reply_text("C0BETA", beta) == "Hello from the agent."
    writes = [c for c in slack.calls if c.method.startswith("chat.")]
    assert writes and all(c.ok or c.status == 429 for c in writes), [c.error for c in writes if not c.ok]
    for call in writes:  # each workspace's channel was written with that workspace's token
        assert call.team == slack.team_of_channel(call.params["channel"])
    assert {c.team for c in writes} == {"T0EMU", "T0BETA"}
    # routed by workspace: Beta's agent is a new Foundry agent, the default a classic one
    classic_runs = [b for m, p, b in stack.agent.requests if m == "POST" and p.endswith("/runs")]
    responses = [b for m, p, b in stack.agent.requests if m == "POST" and p.endswith("/responses")]
    assert len(classic_runs) == 1 and [r["agent_reference"]["name"] for r in responses] == ["demo-agent"]
    assert not [c for c in slack.calls if c.error in ("invalid_auth", "not_authed", "channel_not_found")]


async def test_an_uninstalled_workspace_loses_its_installation_and_the_other_keeps_answering(
    two_workspaces: tuple[Stack, str],
) -> None:
    stack, _ = two_workspaces
    slack = stack.slack
    await install(stack, "T0EMU", "U0ALICE")
    await install(stack, "T0BETA", "U0CARL")
    stored = stack.bot.installs
    assert stored is not None
    mention(slack, "U0CARL", "C0BETA", "first")  # the token is in use (and cached) before the uninstall
    await stack.settle()

    slack.uninstall("T0BETA")
    await stack.settle()
    assert await stored.installations.async_find_installation(enterprise_id=None, team_id="T0BETA") is None
    assert await stored.installations.async_find_bot(enterprise_id=None, team_id="T0BETA") is None
    removed = await stack.bot.store.audit_entries(_query(kind="install"))
    assert [(e.team, e.outcome) for e in removed] == [("T0BETA", "uninstalled")]
    from tests.test_cli import run_cli

    listed = await asyncio.to_thread(
        run_cli, "audit", "--kind", "install", "--json", env={"BOT_STORE_URL": stack.bot.settings.store_url}
    )
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["outcome"] for line in listed.stdout.splitlines()] == ["uninstalled"]

    before = len(slack.calls)
    ignored = mention(slack, "U0CARL", "C0BETA", "are you there?")
    answered = mention(slack, "U0ALICE", "C0GENERAL", "still here?")
    await stack.settle()
    assert stack.replies("C0BETA", ignored) == []  # nothing to answer with: no token, no write
    assert stack.reply_text("C0GENERAL", answered) == "Hello from the agent."
    assert not [c for c in slack.calls[before:] if c.team == "T0BETA"]


async def test_revoked_bot_tokens_remove_the_bot(two_workspaces: tuple[Stack, str]) -> None:
    stack, _ = two_workspaces
    await install(stack, "T0BETA", "U0CARL")
    stack.slack.revoke_bot_token("T0BETA")
    await stack.settle()
    stored = stack.bot.installs
    assert stored is not None
    assert await stored.installations.async_find_bot(enterprise_id=None, team_id="T0BETA") is None
    removed = await stack.bot.store.audit_entries(_query(kind="install"))
    assert [(e.team, e.outcome) for e in removed] == [("T0BETA", "tokens_revoked")]


async def test_an_expired_token_is_rotated_before_the_bot_speaks(tmp_path: Path) -> None:
    """Token rotation on: tokens expire; the bot refreshes one before it runs out and keeps
    the new one (and the new refresh token: each is good once) for every replica."""
    stack, client_id = await multi_workspace_stack(tmp_path, token_rotation=True, token_ttl_s=3 * 3600)
    try:
        slack = stack.slack
        await install(stack, "T0BETA", "U0CARL")
        stored = stack.bot.installs
        assert stored is not None
        first = await stored.installations.async_find_installation(enterprise_id=None, team_id="T0BETA")
        assert first is not None and first.bot_refresh_token and first.bot_token_expires_at
        # an hour later: less than Bolt's two hours left, so the token is refreshed first
        for issued in slack.installs.tokens.values():
            if issued.team == "T0BETA" and issued.expires_at:
                issued.expires_at = time.time() + 3600
        await _age_installation(stored, client_id, "T0BETA", by_s=2 * 3600)
        ts = mention(slack, "U0CARL", "C0BETA", "after a while")
        await stack.settle()
        assert stack.reply_text("C0BETA", ts) == "Hello from the agent."
        refreshes = [
            c for c in slack.calls_of("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"
        ]
        print(
            "CALLS",
            [
                (c.method, c.params, c.ok, c.error)
                for c in slack.calls
                if "oauth" in c.method or "auth" in c.method
            ],
        )
        assert refreshes and all(c.ok for c in refreshes)
        rotated = await stored.installations.async_find_installation(enterprise_id=None, team_id="T0BETA")
        assert rotated is not None and rotated.bot_token != first.bot_token
        assert (
            rotated.bot_token.startswith("xoxe.xoxb-")
            and rotated.bot_refresh_token != first.bot_refresh_token
        )
        # the first token ran out: nothing the bot sends uses it any more
        slack.installs.tokens[first.bot_token].expires_at = time.time() - 1
        later = mention(slack, "U0CARL", "C0BETA", "and now?")
        await stack.settle()
        assert stack.reply_text("C0BETA", later) == "Hello from the agent."
        assert not [c for c in slack.calls if c.error in ("token_expired", "invalid_auth")]
    finally:
        await _drop_rows(stack, client_id)
        await stack.close()


async def _age_installation(installs: Any, client_id: str, team: str, *, by_s: float) -> None:
    """As if the install had been made ``by_s`` earlier: its token now expires that much sooner."""
    from datetime import UTC, datetime

    store = installs.installations
    found = await store.async_find_installation(enterprise_id=None, team_id=team)
    expires = datetime.fromtimestamp(found.bot_token_expires_at - by_s, tz=UTC).replace(tzinfo=None)
    async with installs.engine.begin() as conn:
        for table in (store.installations, store.bots):
            await conn.execute(
                table.update()
                .where(table.c.client_id == client_id, table.c.team_id == team)
                .values(bot_token_expires_at=expires)
            )


def _query(**kwargs: Any) -> Any:
    from bot.store import AuditQuery

    return AuditQuery(**kwargs)


async def test_the_emulator_refuses_what_slack_refuses_in_the_oauth_flow() -> None:
    """Wrong client credentials, a code used twice, a redirect_uri that does not match the one
    the person was sent with, an unknown grant type, a refresh token used twice."""
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    async with SlackEmulator() as slack:
        slack.enable_oauth("1.2", "s3cret", token_rotation=True)
        client = AsyncWebClient(base_url=slack.api_url)
        code = await _code(slack, redirect_uri="https://bot.example/slack/oauth_redirect")

        async def refused(**params: Any) -> str:
            with pytest.raises(SlackApiError) as caught:
                await client.oauth_v2_access(**params)
            return str(caught.value.response["error"])

        assert await refused(client_id="9.9", client_secret="s3cret", code=code) == "invalid_client_id"
        assert await refused(client_id="1.2", client_secret="wrong", code=code) == "bad_client_secret"
        assert await refused(client_id="1.2", client_secret="s3cret", code=code) == "bad_redirect_uri"
        assert await refused(client_id="1.2", client_secret="s3cret", code="nope") == "invalid_code"
        assert (
            await refused(client_id="1.2", client_secret="s3cret", grant_type="password")
            == "invalid_grant_type"
        )
        granted = await client.oauth_v2_access(
            client_id="1.2",
            client_secret="s3cret",
            code=code,
            redirect_uri="https://bot.example/slack/oauth_redirect",
        )
        assert granted["token_type"] == "bot" and granted["expires_in"] == 43_200
        assert granted["team"] == {"id": "T0EMU", "name": "Emulated"} and granted["bot_user_id"] == "U0BOT"
        again = dict(
            client_id="1.2",
            client_secret="s3cret",
            code=code,
            redirect_uri="https://bot.example/slack/oauth_redirect",
        )
        assert await refused(**again) == "invalid_code"  # a code is good once
        refresh = dict(client_id="1.2", client_secret="s3cret", grant_type="refresh_token")
        renewed = await client.oauth_v2_access(**refresh, refresh_token=granted["refresh_token"])
        assert renewed["access_token"].startswith("xoxe.xoxb-")
        assert await refused(**refresh, refresh_token=granted["refresh_token"]) == "invalid_refresh_token"
        # a token speaks for its workspace only, and not after it expires or is revoked
        as_bot = AsyncWebClient(token=renewed["access_token"], base_url=slack.api_url)
        assert (await as_bot.auth_test())["team_id"] == "T0EMU"
        slack.installs.tokens[renewed["access_token"]].expires_at = time.time() - 1
        with pytest.raises(SlackApiError, match="token_expired"):
            await as_bot.auth_test()
        slack.uninstall("T0EMU")
        with pytest.raises(SlackApiError, match="token_revoked"):
            await AsyncWebClient(token=granted["access_token"], base_url=slack.api_url).auth_test()


async def test_a_token_of_one_workspace_cannot_write_in_another() -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    async with SlackEmulator() as slack:
        slack.add_workspace("T0BETA", "Beta Corp", channel=("C0BETA", "beta-general"))
        alpha = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        with pytest.raises(SlackApiError, match="channel_not_found"):
            await alpha.chat_postMessage(channel="C0BETA", text="hi")
        assert (await alpha.chat_postMessage(channel="C0GENERAL", text="hi"))["ok"]


async def _code(slack: SlackEmulator, *, redirect_uri: str, client_id: str = "1.2") -> str:
    query = {"client_id": client_id, "scope": "chat:write", "state": "s1", "redirect_uri": redirect_uri}
    async with aiohttp.ClientSession() as browser:
        async with browser.get(f"{slack.base_url}/oauth/v2/authorize", params=query) as response:
            assert response.status == 200
        async with browser.get(
            f"{slack.base_url}/oauth/v2/authorize", params={**query, "client_id": "x"}
        ) as bad:
            assert bad.status == 400 and "invalid_client_id" in await bad.text()
        form = {**query, "team": "T0EMU", "user": "U0ALICE", "decision": "allow"}
        async with browser.post(
            f"{slack.base_url}/oauth/v2/authorize", data=form, allow_redirects=False
        ) as response:
            assert response.status == 302
            location = response.headers["Location"]
    assert location.startswith(redirect_uri) and "state=s1" in location
    return re.search(r"code=([0-9a-f]+)", location).group(1)  # type: ignore[union-attr]


async def test_the_install_store_opens_on_sqlite_for_one_process_and_refuses_a_bad_url(
    tmp_path: Path,
) -> None:
    installs = await open_installs(f"sqlite:///{tmp_path}/deep/installs.db", "1.2")
    try:
        assert await installs.installations.async_find_installation(enterprise_id=None, team_id="T1") is None
    finally:
        await installs.aclose()
    assert engine_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(InstallStoreError, match="postgresql:// or sqlite:///"):
        engine_url("mysql://u@h/db")
    with pytest.raises(InstallStoreError, match="cannot open the install store"):
        await open_installs("postgresql://nobody@127.0.0.1:9/none", "1.2")


def test_the_scopes_asked_for_at_install_are_the_manifest_s() -> None:
    manifest = yaml.safe_load(Path("manifest.yml").read_text())
    assert tuple(manifest["oauth_config"]["scopes"]["bot"]) == BOT_SCOPES


async def test_two_replicas_rotating_one_token_at_once_both_end_with_a_good_one() -> None:
    """The refresh token is good once: the replica that loses the race reads the winner's new
    token from the shared store instead of failing."""
    from slack_sdk.oauth.installation_store import Installation

    from bot.slack.workspaces import InstalledWorkspaces

    client_id = f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"
    async with SlackEmulator() as slack:
        slack.enable_oauth(client_id, "s3cret", token_rotation=True)
        code = await _code(slack, redirect_uri="https://bot.example/r", client_id=client_id)
        granted = await AsyncWebClient(base_url=slack.api_url).oauth_v2_access(
            client_id=client_id, client_secret="s3cret", code=code, redirect_uri="https://bot.example/r"
        )
        installs = await open_installs(POSTGRES_URL, client_id)
        try:
            await installs.installations.async_save(
                Installation(
                    app_id="A0EMUAPP",
                    team_id="T0EMU",
                    user_id="U0ALICE",
                    bot_token=granted["access_token"],
                    bot_id="B0BOT",
                    bot_user_id="U0BOT",
                    bot_refresh_token=granted["refresh_token"],
                    bot_token_expires_in=60,  # a minute left: both replicas rotate before speaking
                )
            )
            replicas = [
                InstalledWorkspaces(
                    installs.installations,
                    client_id=client_id,
                    client_secret="s3cret",
                    base_url=slack.api_url,
                )
                for _ in range(2)
            ]
            # Slack takes a second to answer: both replicas have asked (and read the store) before
            # either has a new token, however loaded the machine (no race left to chance)
            slack.latency = 1.0
            tokens = await asyncio.gather(*(r.token("T0EMU") for r in replicas))
            slack.latency = 0.0
            refreshes = [c for c in slack.calls_of("oauth.v2.access") if c.params.get("grant_type")]
            assert len(refreshes) == 2 and sorted(c.ok for c in refreshes) == [False, True]
            assert tokens[0] == tokens[1] != granted["access_token"]
            for token in tokens:  # the token both use speaks for the workspace
                assert (await AsyncWebClient(token=token, base_url=slack.api_url).auth_test())["ok"]
        finally:
            async with installs.engine.begin() as conn:
                for table in (installs.installations.installations, installs.installations.bots):
                    await conn.execute(table.delete().where(table.c.client_id == client_id))
            await installs.aclose()


async def test_check_reports_the_install_store_and_each_installed_workspace(
    two_workspaces: tuple[Stack, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.check import Report, check_slack

    stack, _ = two_workspaces
    settings = stack.bot.settings
    report = Report()
    await check_slack(settings, report)
    out = capsys.readouterr().out
    assert not report.failed and "! no workspace has installed the app yet" in out
    await install(stack, "T0BETA", "U0CARL")
    await check_slack(settings, report)
    out = capsys.readouterr().out
    assert "ok workspace Beta Corp (T0BETA) as bot user agentbot" in out and not report.failed
    stack.slack.installs.revoke("T0BETA")  # revoked, and the app never told
    await check_slack(settings, report)
    out = capsys.readouterr().out
    assert "x workspace T0BETA: Slack refused its token (token_revoked)" in out and report.failed
    both = settings.model_copy(update={"slack_bot_token": _secret("xoxb-1")})
    report = Report()
    await check_slack(both, report)
    assert "x both SLACK_BOT_TOKEN and SLACK_CLIENT_ID/SLACK_CLIENT_SECRET are set" in capsys.readouterr().out


async def test_in_socket_mode_installs_come_back_over_http_and_events_over_the_socket(tmp_path: Path) -> None:
    """The deployed process (`python -m bot run --mode socket`) with OAuth settings serves the
    install pages on --port and answers each installed workspace over its one socket."""
    from bot.devstack.processes import start_bot
    from bot.emulators.agent_script import Script
    from bot.emulators.agents import AgentServiceEmulator

    client_id = f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"
    async with AgentServiceEmulator(Script.parse(SCRIPT)) as agent, SlackEmulator() as slack:
        slack.add_workspace("T0BETA", "Beta Corp", channel=("C0BETA", "beta-general"))
        slack.add_user("U0CARL", "carl", "Carl Beta", team_id="T0BETA")
        bot = await start_bot(
            agent,
            slack,
            f"sqlite:///{tmp_path}/bot.db",
            str(tmp_path / "bot.log"),
            mode="socket",
            SLACK_BOT_TOKEN="",
            SLACK_CLIENT_ID=client_id,
            SLACK_CLIENT_SECRET="client-secret",
            BOT_INSTALL_STORE_URL=POSTGRES_URL,
        )
        installs = await open_installs(POSTGRES_URL, client_id)
        try:
            slack.enable_oauth(
                client_id, "client-secret", redirect_urls=(f"{bot.public_url}/slack/oauth_redirect",)
            )
            assert "Thank you" in await install_at(bot.public_url, slack, "T0BETA", "U0CARL")
            ts = mention(slack, "U0CARL", "C0BETA", "over the socket")
            await _answered(slack, "C0BETA", ts, "Hello from the agent.")
            assert slack.deliveries and not slack.events_url  # every event went over the socket
        finally:
            bot.terminate()
            assert await bot.wait() == 0, bot.logs()[-2000:]
            async with installs.engine.begin() as conn:
                for table in (installs.installations.installations, installs.installations.bots):
                    await conn.execute(table.delete().where(table.c.client_id == client_id))
            await installs.aclose()


async def _answered(slack: SlackEmulator, channel: str, ts: str, text: str) -> None:
    from tests.stack import eventually

    def shown() -> bool:
        replies = slack.bot_replies(channel, ts)
        return bool(replies) and replies[0].visible_text == text

    await eventually(shown, f"{text!r} shown in {channel}")
