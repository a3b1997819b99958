"""Several agents in one deployment: a routing file maps workspaces, channels and DMs to
agents; each conversation keeps the agent it started with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.agents.routing import AgentRouter, RoutesError, load_routes, make_ref, split_ref
from bot.settings import Settings
from tests.stack import eventually, start_stack, status_lines

BOT = "<@U0BOT>"
ROUTES = """
agents:
  support: {backend: foundry, name: demo-agent}
  helpdesk: {backend: classic, id: asst_demo}
default: helpdesk
routes:
  - {channel: C0SUPPORT, agent: support}
  - {team: T0EMU, channels: [C0VIP], agent: support}
  - {dm: true, agent: support}
  - {team: T0PARTNER, agent: support}
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _router(tmp_path: Path, text: str = ROUTES, **settings: Any) -> AgentRouter:
    base = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    return AgentRouter(base, load_routes(_write(tmp_path, text)), lambda s: s)  # type: ignore[arg-type, return-value]


def test_the_most_specific_route_wins(tmp_path: Path) -> None:
    router = _router(tmp_path)
    assert router.route("T0EMU", "C0SUPPORT") == "support"  # a channel
    assert router.route("T0EMU", "C0VIP") == "support"  # a channel in a workspace
    assert router.route("T0OTHER", "C0VIP") == "helpdesk"  # ... not in another workspace
    assert router.route("T0EMU", "D0ALICE") == "support"  # DMs
    assert router.route("T0PARTNER", "C0ANY") == "support"  # a whole workspace
    assert router.route("T0EMU", "C0GENERAL") == "helpdesk"  # the default
    assert router.label("support") == "support (demo-agent)"
    agent = router.settings_for("support")
    assert (agent.backend, agent.agent_name, agent.project_endpoint) == ("foundry", "demo-agent", None)


def test_a_channel_route_beats_its_workspaces(tmp_path: Path) -> None:
    text = """
agents:
  a: {id: asst_a}
  b: {id: asst_b}
routes:
  - {team: T1, agent: a}
  - {channel: C1, agent: b}
  - {team: T1, dm: true, agent: b}
"""
    router = _router(tmp_path, text, AGENT_ID="asst_default", PROJECT_ENDPOINT="https://x/api/projects/p")
    assert (
        router.route("T1", "C1") == "b"
        and router.route("T1", "C2") == "a"
        and router.route("T1", "D1") == "b"
    )
    assert router.route("T2", "C2") == ""  # no route, no default in the file: the AGENT_* agent
    assert list(router.keys()) == ["", "a", "b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agents: {a: {id: asst_a}}\nroutes: [{channel: C1, agent: zz}]",
            "names agent 'zz', which is not under agents: (a)",
        ),
        ("agents: {a: {id: asst_a}}\ndefault: zz", "default 'zz' is not under agents: (a)"),
        ("agents: {a: {backend: foundry, id: asst_a}}", "a new Foundry agent needs name"),
        ("agents: {a: {}}", "name the agent"),
        ("agents: {a: {id: asst_a}}\nroutes: [{agent: a}]", "say where: team, channel(s) or dm: true"),
        ("agents: {Bad Key: {id: asst_a}}", "agent key 'Bad Key'"),
        ("agents: {a: {id: asst_a, colour: red}}", "colour: Extra inputs are not permitted"),
        ("agents: [unclosed", "is not valid YAML"),
    ],
)
def test_a_routing_file_that_cannot_work_is_refused_with_the_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(RoutesError) as refused:
        load_routes(_write(tmp_path, text))
    assert expected in str(refused.value) and "BOT_ROUTES" in str(refused.value)


def test_no_default_agent_anywhere_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="no default agent"):
        _router(tmp_path, "agents: {a: {id: asst_a}}\nroutes: [{channel: C1, agent: a}]")
    with pytest.raises(RoutesError, match=r"BOT_ROUTES /nope\.yaml"):
        load_routes("/nope.yaml")


def test_a_conversation_of_an_agent_since_removed_is_named_not_guessed(tmp_path: Path) -> None:
    router = _router(tmp_path)
    with pytest.raises(RoutesError, match="no agent 'retired' in the routing file"):
        router.resolve("retired::thread_1")
    backend, ident = router.resolve("support::conv_1")
    assert ident == "conv_1" and backend.agent_name == "demo-agent"  # type: ignore[attr-defined]


def test_references_keep_the_agent_and_bare_ids_stay_the_defaults() -> None:
    assert make_ref("", "thread_1") == "thread_1" and split_ref("thread_1") == ("", "thread_1")
    assert make_ref("support", "conv_1") == "support::conv_1"
    assert split_ref("support::conv_1") == ("support", "conv_1")


async def test_two_channels_answered_by_two_agents(tmp_path: Path) -> None:
    """C0SUPPORT goes to a new Foundry agent (Responses API), C0GENERAL to the default classic
    agent; the status line and /agent-tools name the agent; a channel routed elsewhere later
    starts its threads afresh with the new agent."""
    from bot.emulators.agents import AgentServiceEmulator
    from bot.emulators.slack import SlackEmulator

    agent, slack = AgentServiceEmulator(), SlackEmulator()  # shared by both runs of the bot
    await agent.start()
    await slack.start()
    stack = await start_stack(
        tmp_path=tmp_path, agent=agent, slack=slack, settings_overrides={"routes": _write(tmp_path, ROUTES)}
    )
    try:
        stack.slack.add_channel("C0SUPPORT", "support")
        general = stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} hello general")
        support = stack.slack.user_posts("U0ALICE", "C0SUPPORT", f"{BOT} hello support")
        await stack.settle()
        assert stack.reply_text("C0GENERAL", general) == "You said: hello general"
        assert stack.reply_text("C0SUPPORT", support) == "You said: hello support"
        classic_runs = [b for m, p, b in stack.agent.requests if m == "POST" and p.endswith("/runs")]
        assert [b["assistant_id"] for b in classic_runs] == ["asst_demo"]  # only C0GENERAL's
        responses = [
            b
            for m, p, b in stack.agent.requests
            if m == "POST" and p.endswith("/responses") and b.get("input")
        ]
        assert len(responses) == 1 and responses[0]["agent_reference"]["name"] == "demo-agent"
        assert "support (demo-agent) is answering" in status_lines(stack, "C0SUPPORT", support)
        assert "helpdesk (asst_demo) is answering" in status_lines(stack, "C0GENERAL", general)
        listing = await stack.slack.slash_command("U0ALICE", "C0SUPPORT", "/agent-tools")
        assert listing["text"].startswith("*Agent answering here:* support (demo-agent)")
        # the conversations are stored with their agent: recovery and retention find it again
        from bot.store import ConversationKey

        stored = await stack.bot.store.get_agent_thread(ConversationKey("T0EMU", "C0SUPPORT", support))
        assert stored is not None and stored.startswith("support::")
    finally:
        await stack.close()

    # the operator routes C0GENERAL to the support agent: its thread carries on, afresh, there
    moved = ROUTES.replace("routes:\n", "routes:\n  - {channel: C0GENERAL, agent: support}\n")
    again = await start_stack(
        tmp_path=tmp_path, agent=agent, slack=slack, settings_overrides={"routes": _write(tmp_path, moved)}
    )
    try:
        stack.slack.user_posts("U0ALICE", "C0GENERAL", f"{BOT} still there?", thread_ts=general)
        await eventually(
            lambda: len(stack.slack.bot_replies("C0GENERAL", general)) == 2, "the follow-up answered"
        )
        await again.settle()
        assert stack.slack.bot_replies("C0GENERAL", general)[-1].text.endswith("You said: still there?")
        assert len(stack.agent.responses_api.conversations) == 2  # a new conversation with the new agent
        # the old conversation is left behind: the clean-up deletes it, with its own agent
        [(_, ref)] = await again.bot.store.conversations_due()
        key, old_thread = split_ref(ref)
        assert key == "helpdesk" and old_thread in agent.threads
        await again.bot.recovery.forget_expired()
        assert old_thread not in agent.threads and len(agent.responses_api.conversations) == 2
    finally:
        await again.close()
        await agent.stop()
        await slack.stop()
