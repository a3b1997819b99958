"""The command line as an operator meets it: `run`, `chat`, `check`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from bot.emulators.agents import AgentServiceEmulator


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PROJECT_", "AGENT", "BOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "BOT_STORE_URL": "sqlite://:memory:", **(env or {})},
        cwd=os.getcwd(),
    )


def test_chat_with_no_settings_is_a_demo_on_the_emulator() -> None:
    result = run_cli("chat", stdin="hello bot\nwhat is current_time\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Demo on an emulated agent service" in result.stdout
    assert "agent> You said: hello bot" in result.stdout
    assert "[calling current_time] `current_time` returned: 20" in result.stdout


def test_run_in_slack_mode_without_settings_says_what_is_missing() -> None:
    result = run_cli("run", "--mode", "http", env={"SLACK_BOT_TOKEN": "xoxb-1-2-secret"})
    assert result.returncode == 2
    assert "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET" in result.stderr
    assert "xoxb-1-2-secret" not in result.stderr + result.stdout and "Traceback" not in result.stderr


async def test_chat_and_check_against_a_configured_agent(make_emulator: Callable) -> None:
    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    env = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    import asyncio

    result = await asyncio.to_thread(run_cli, "chat", stdin="configured\n", env=env)
    assert result.returncode == 0, result.stderr
    assert "Talking to agent asst_demo" in result.stdout and "You said: configured" in result.stdout
    check = await asyncio.to_thread(run_cli, "check", env=env)
    assert (
        check.returncode == 1
        and "ok classic agent (threads/runs) asst_demo (model gpt-4o-emulated)" in check.stdout
    )
    assert "x SLACK_BOT_TOKEN is not set" in check.stdout
    wrong = await asyncio.to_thread(run_cli, "check", env={**env, "AGENTS_ACCESS_TOKEN": "nope"})
    assert wrong.returncode == 1 and "authentication failed" in wrong.stdout and "fix:" in wrong.stdout
    missing = await asyncio.to_thread(run_cli, "check", env={**env, "AGENT_ID": "asst_gone"})
    assert missing.returncode == 1 and "No assistant found with id 'asst_gone'" in missing.stdout


def test_check_without_endpoint_says_what_to_set() -> None:
    result = run_cli("check")
    assert result.returncode == 1 and "PROJECT_ENDPOINT is not set" in result.stdout


def test_invalid_setting_is_a_clear_error() -> None:
    result = run_cli("check", env={"AGENTS_STREAM_IDLE_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "AGENTS_STREAM_IDLE_TIMEOUT" in result.stderr and "Traceback" not in result.stderr


async def test_check_names_each_failure_and_its_fix(make_emulator: Callable) -> None:
    """Every `check` failure is one clear line (and a fix), never a traceback."""
    import asyncio

    from bot.emulators.slack import SlackEmulator

    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    slack = SlackEmulator()
    await slack.start()
    agent = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    try:
        cases = [
            ({"PROJECT_ENDPOINT": emulator.endpoint}, "x no agent: set AGENT_ID"),
            (
                {**agent, "SLACK_BOT_TOKEN": "xoxb-not-the-token", "SLACK_API_URL": slack.api_url},
                "x Slack refused the bot token: invalid_auth",
            ),
            (
                {**agent, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": "http://127.0.0.1:9/api/"},
                "x cannot reach Slack at http://127.0.0.1:9/api/",
            ),
        ]
        for env, expected in cases:
            result = await asyncio.to_thread(run_cli, "check", env=env)
            assert result.returncode == 1 and expected in result.stdout, (env, result.stdout)
            assert "Traceback" not in result.stderr
        emulator.fail_next("GET", "/assistants/*", 500, times=100_000)  # down past the retry deadline
        down = await asyncio.to_thread(run_cli, "check", env={**agent, "AGENTS_RETRY_SECONDS": "1"})
        assert down.returncode == 1 and "x the agent service failed" in down.stdout
    finally:
        await slack.stop()


async def test_run_refuses_clearly_what_it_cannot_serve(make_emulator: Callable) -> None:
    """`run` with an agent but a refused Slack token, or a port already taken: exit 2 and one
    line saying what to do; `run` in Slack mode without an agent says what to set."""
    import asyncio
    import socket

    from bot.emulators.slack import SlackEmulator

    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    slack = SlackEmulator()
    await slack.start()
    agent = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    slack_env = {"SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url}
    try:
        refused = await asyncio.to_thread(
            run_cli, "run", "--mode", "http", env={**agent, **slack_env, "SLACK_BOT_TOKEN": "xoxb-wrong"}
        )
        assert refused.returncode == 2 and "Slack refused the bot token (invalid_auth)" in refused.stderr
        no_agent = await asyncio.to_thread(
            run_cli, "run", "--mode", "http", env={**slack_env, "SLACK_BOT_TOKEN": slack.bot_token}
        )
        assert no_agent.returncode == 2 and "PROJECT_ENDPOINT and AGENT_ID (or AGENT_NAME)" in no_agent.stderr
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            busy = await asyncio.to_thread(
                run_cli,
                "run", "--mode", "http", "--host", "127.0.0.1", "--port", port,
                env={**agent, **slack_env, "SLACK_BOT_TOKEN": slack.bot_token},
            )  # fmt: skip
            assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
            played = await asyncio.to_thread(run_cli, "playground", "--port", port)
            assert played.returncode == 2 and "(try --port)" in played.stderr
        for result in (refused, no_agent, busy, played):
            assert "Traceback" not in result.stderr
    finally:
        await slack.stop()


def test_the_playground_names_a_broken_script() -> None:
    result = run_cli("playground", "--port", "0", "--script", "/nonexistent/script.yaml")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


async def test_chat_shows_every_ending_and_runs_local_tools_safely(make_emulator: Callable) -> None:
    """The terminal chat words each way a run ends, runs its local tool with arguments (and
    survives a bad argument or an unknown tool), skips blank lines and stops at /quit."""
    import asyncio

    script = {
        "turns": [
            {"match": "offset", "actions": [
                {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "+02:00"}}]},
                {"text": "got ${output}"},
            ]},
            {"match": "broken", "actions": [
                {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "+xx"}}]},
                {"text": "tool said ${output}"},
            ]},
            {"match": "unknown", "actions": [
                {"tool_calls": [{"name": "no_such_tool", "arguments": {}}]},
                {"text": "tool said ${output}"},
            ]},
            {"match": "fail", "actions": [{"fail": {"code": "server_error", "message": "boom"}}]},
            {"match": "short", "actions": [{"text": "half"}, {"incomplete": "max_output_tokens"}]},
            {"match": "late", "actions": [{"expire": True}]},
            {"match": "hiccup", "actions": [{"error_event": {"code": "server_error", "message": "hiccup"}}]},
        ]
    }  # fmt: skip
    emulator: AgentServiceEmulator = await make_emulator(script, token="cfg-token")
    env = {"PROJECT_ENDPOINT": emulator.endpoint, "AGENT_ID": "asst_demo", "AGENTS_ACCESS_TOKEN": "cfg-token"}
    lines = "offset\nbroken\n\nunknown\nfail\nshort\nlate\nhiccup\n/quit\nnever sent\n"
    result = await asyncio.to_thread(run_cli, "chat", stdin=lines, env=env)
    out = result.stdout
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "got 20" in out and "+02:00" in out
    assert "tool said error: ValueError" in out
    assert "tool said error: no tool named 'no_such_tool'" in out
    assert "[the run failed: boom (server_error)]" in out
    assert "[the answer is incomplete: max_output_tokens]" in out
    assert "[the run was expired]" in out
    assert "[the agent service reported an error: hiccup]" in out
    assert "never sent" not in str(emulator.requests)


async def test_tools_commands_explain_every_refusal(tmp_path: Any, make_emulator: Callable) -> None:
    """`python -m bot tools ...` as an admin meets it: an empty directory, a broken module, a
    name defined twice, an unknown tool, a tool that fails, and sync with no agent or a
    failing service each get one clear line and an exit code a script can test."""
    import asyncio

    empty, mixed, twice = tmp_path / "empty", tmp_path / "mixed", tmp_path / "twice"
    for folder in (empty, mixed, twice):
        folder.mkdir()
    good = (
        "from bot.plugins import tool\n\n"
        "@tool\ndef halve(x: int) -> float:\n"
        '    """Half of x."""\n'
        "    return x / 0 if x == 0 else x / 2\n"
    )
    (mixed / "good.py").write_text(good)
    (mixed / "broken.py").write_text("import nonexistent_module_for_the_test\n")
    (twice / "a.py").write_text(good)
    (twice / "b.py").write_text(good)

    def tools(folder: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli("tools", *args, env={"BOT_TOOLS_DIR": str(folder), **env})

    listed = await asyncio.to_thread(tools, empty, "list")
    assert listed.returncode == 0 and "no tools found in" in listed.stdout
    listed = await asyncio.to_thread(tools, mixed, "list")
    assert listed.returncode == 1 and "halve" in listed.stdout and "(broken)" in listed.stdout
    doubled = await asyncio.to_thread(tools, twice, "list")
    assert doubled.returncode == 2 and doubled.stderr.startswith("error: ") and "halve" in doubled.stderr
    unknown = await asyncio.to_thread(tools, mixed, "schema", "nope")
    assert unknown.returncode == 2 and "no tool named 'nope'" in unknown.stderr
    unknown = await asyncio.to_thread(tools, mixed, "call", "nope")
    assert unknown.returncode == 2 and "no tool named 'nope'" in unknown.stderr
    ok = await asyncio.to_thread(
        tools, mixed, "call", "halve", "--json", '{"x": 8}', SLACK_BOT_TOKEN="xoxb-1"
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "4.0"
    failed = await asyncio.to_thread(tools, mixed, "call", "halve", "--json", '{"x": 0}')
    assert failed.returncode == 1 and failed.stdout.startswith("error: halve failed (ZeroDivisionError")
    no_agent = await asyncio.to_thread(tools, mixed, "sync")
    assert no_agent.returncode == 2 and "must be set to sync tools" in no_agent.stderr
    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    emulator.fail_next("POST", "/assistants/*", 400, times=5, message="tools rejected")
    agent = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    refused = await asyncio.to_thread(tools, mixed, "sync", **agent)
    assert refused.returncode == 1 and "tools rejected" in refused.stderr
    for result in (listed, doubled, unknown, ok, failed, no_agent, refused):
        assert "Traceback" not in result.stderr


async def test_check_says_what_an_operator_must_fix_in_one_line_each(make_emulator: Callable) -> None:
    """No `az login`, a bad endpoint with no agent named, tokens of the wrong kind, a refused
    app-level token, a store that cannot be reached: each one line with its fix, all at once."""
    import asyncio

    from bot.emulators.slack import SlackEmulator

    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    slack = SlackEmulator()
    await slack.start()
    agent = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENT_ID": "asst_demo",
        "AGENTS_ACCESS_TOKEN": "cfg-token",
    }
    good_slack = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
    }

    async def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        result = await asyncio.to_thread(run_cli, "check", env=env)
        assert "Traceback" not in result.stderr + result.stdout, result
        return result

    try:
        everything = await check({**agent, **good_slack})
        assert everything.returncode == 0, everything.stdout
        assert all(line.startswith(("ok ", "! ")) for line in everything.stdout.splitlines()), (
            everything.stdout
        )
        assert "ok Socket Mode: SLACK_APP_TOKEN opens a connection" in everything.stdout
        assert "ok store sqlite://:memory:" in everything.stdout

        no_login = await check({k: v for k, v in agent.items() if k != "AGENTS_ACCESS_TOKEN"})
        assert no_login.returncode == 1
        assert (
            "x no Azure credential for the agent service: run `az login`, use a managed identity, "
            "or set AGENTS_ACCESS_TOKEN" in no_login.stdout
        )
        assert len(no_login.stdout.splitlines()) <= 8, no_login.stdout  # not 40 lines of SDK trace

        unreachable = await check(
            {"PROJECT_ENDPOINT": "http://127.0.0.1:9/api/projects/p", "AGENTS_ACCESS_TOKEN": "t"}
        )
        assert "x cannot reach the agent service at http://127.0.0.1:9/api/projects/p" in unreachable.stdout
        assert "x no agent: set AGENT_ID" in unreachable.stdout  # both said, whatever else is set
        not_a_project = await check({**agent, "PROJECT_ENDPOINT": emulator.endpoint.split("/api/")[0]})
        assert (
            "is not a project endpoint" in not_a_project.stdout
            and "fix: use https://" in not_a_project.stdout
        )

        wrong_kinds = await check(
            {**agent, **good_slack, "SLACK_BOT_TOKEN": "xoxp-1-2", "SLACK_APP_TOKEN": "xoxb-3"}
        )
        assert "x SLACK_BOT_TOKEN is a user token, not a bot token (xoxb-...)" in wrong_kinds.stdout
        assert "x SLACK_APP_TOKEN is a bot token, not an app-level token (xapp-...)" in wrong_kinds.stdout
        refused_app = await check({**agent, **good_slack, "SLACK_APP_TOKEN": "xapp-1-A0-revoked"})
        assert "x Slack refused SLACK_APP_TOKEN: invalid_auth" in refused_app.stdout
        http_mode = {**agent, **good_slack, "SLACK_APP_TOKEN": "", "SLACK_SIGNING_SECRET": "not-hex"}
        http_check = await check(http_mode)
        assert "ok HTTP mode: Slack must send events to https://<your host>/slack/events" in http_check.stdout
        assert "! SLACK_SIGNING_SECRET does not look like Slack's" in http_check.stdout
        assert http_check.returncode == 0  # a warning, not a failure

        down = await check({**agent, **good_slack, "BOT_STORE_URL": "redis://:hunter2@127.0.0.1:9/0"})
        assert "x cannot open the store redis://:***@127.0.0.1:9/0" in down.stdout
        assert "hunter2" not in down.stdout and down.returncode == 1
        unknown = await check({**agent, **good_slack, "BOT_STORE_URL": "mysql://db/bot"})
        assert "x BOT_STORE_URL must start with sqlite:/// or redis://" in unknown.stdout
    finally:
        await slack.stop()


async def test_check_reaches_every_agent_of_the_routing_file(make_emulator: Callable, tmp_path: Any) -> None:
    import asyncio

    emulator: AgentServiceEmulator = await make_emulator(token="cfg-token")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "agents:\n"
        "  helpdesk: {backend: classic, id: asst_demo}\n"
        "  support: {backend: foundry, name: demo-agent}\n"
        "  gone: {backend: classic, id: asst_gone}\n"
        "default: helpdesk\n"
        "routes: [{channel: C0SUPPORT, agent: support}, {channel: C0OLD, agent: gone}]\n"
    )
    env = {
        "PROJECT_ENDPOINT": emulator.endpoint,
        "AGENTS_ACCESS_TOKEN": "cfg-token",
        "BOT_ROUTES": str(routes),
    }
    result = await asyncio.to_thread(run_cli, "check", env=env)
    assert "Traceback" not in result.stderr and result.returncode == 1
    out = result.stdout
    assert f"ok routing file {routes}: 3 agent(s), 2 route(s), default helpdesk (asst_demo)" in out
    assert "ok helpdesk classic agent (threads/runs) asst_demo" in out
    assert "ok support new Foundry agent (Responses API) demo-agent" in out
    assert "x gone not found: No assistant found with id 'asst_gone'" in out
    assert out.count("agent service project") == 1  # one project, reached once
    routes.write_text("agents: {a: {id: asst_a}}\nroutes: [{channel: C1, agent: b}]\n")
    broken = await asyncio.to_thread(run_cli, "check", env=env)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert (
        "names agent 'b', which is not under agents: (a)" in broken.stdout
        and "fix: see the README" in broken.stdout
    )


def test_a_store_that_cannot_be_used_is_one_line_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In process, as the store commands call it: no traceback, the password never printed."""
    from bot.cli_store import run_on_store
    from bot.settings import Settings

    async def unreachable() -> None:
        from bot.store import open_store

        await open_store("redis://ops:hunter2@127.0.0.1:9/0")

    async def unreadable() -> None:
        raise ValueError("--since: 'last tuesday' is not a time")

    settings = Settings(BOT_STORE_URL="redis://ops:hunter2@127.0.0.1:9/0", _env_file=None)  # type: ignore[call-arg]
    assert run_on_store(settings, unreachable()) is None
    said = capsys.readouterr().err
    assert "cannot read the store redis://ops:***@127.0.0.1:9/0" in said and "hunter2" not in said
    assert run_on_store(settings, unreadable()) is None
    assert capsys.readouterr().err == "error: --since: 'last tuesday' is not a time\n"


def test_check_names_each_wrong_slack_setting_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.check import Report, check_slack_settings
    from bot.settings import Settings

    def said(**env: str) -> str:
        check_slack_settings(Settings(_env_file=None, **env), Report())  # type: ignore[call-arg]
        return capsys.readouterr().out

    assert "SLACK_BOT_TOKEN is a user token, not a bot token" in said(
        SLACK_BOT_TOKEN="xoxp-1", SLACK_SIGNING_SECRET="0" * 32
    )
    assert "SLACK_APP_TOKEN is a bot token, not an app-level token" in said(
        SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xoxb-2"
    )
    assert "neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET" in said(SLACK_BOT_TOKEN="xoxb-1")
    assert "SLACK_SIGNING_SECRET does not look like Slack's" in said(
        SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="short"
    )
    assert "SLACK_CLIENT_ID does not look like Slack's" in said(
        SLACK_CLIENT_ID="my-app", SLACK_CLIENT_SECRET="s", SLACK_SIGNING_SECRET="0" * 32
    )
