"""Fuzzing what arrives from outside: Slack event payloads and the agent's text.

No crash, no mass mention that can notify anyone, no link label from outside that renders
as a link to somewhere else (security review, issue 13).
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.agents.events import Annotation
from bot.slack.filters import turn_from_event
from bot.slack.render import Citations, slack_safe
from bot.slack.text import slack_to_agent_text

# what can notify people in Slack: the special mentions and group pings, and their plain
# forms (which Slack turns into notifications in some clients) at a word boundary
MASS = re.compile(r"<!(?:here|channel|everyone|subteam)|(?<![\w`\u200b])@(?:here|channel|everyone)\b")

SLACKY = st.sampled_from(
    ["<!channel>", "<!here|here>", "<!everyone>", "@here", "@channel", "<!subteam^S123|@team>",
     "<", ">", "&", "**", "`", "```", "[", "](", ")", "<https://evil.example|click>", "\n", " ",
     "|", "!", "@", "\u200b", "*"]
)  # fmt: skip
TEXT = st.lists(st.one_of(SLACKY, st.text(max_size=8)), max_size=30).map("".join)

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_agent_text_reaching_slack_never_pings_and_its_fallback_has_no_links(text: str) -> None:
    markdown, fallback = slack_safe(text)
    assert not MASS.search(markdown)
    assert not MASS.search(fallback)
    assert "<" not in fallback and ">" not in fallback  # no <url|label> or <!...> forms at all


@settings(max_examples=300)
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=4))
def test_citation_titles_and_urls_never_become_foreign_links_or_pings(sources: list[tuple[str, str]]) -> None:
    citations = Citations()
    annotations = [
        Annotation("url_citation", marker=f"【{i}】", url=url, title=title)
        for i, (title, url) in enumerate(sources)
    ]
    citations.add(annotations)
    body = citations.render("".join(a.marker for a in annotations), final=True) + citations.footer()
    markdown, _ = slack_safe(body)
    assert not MASS.search(markdown)
    for line in citations.footer().splitlines()[2:]:
        linked = re.fullmatch(r"\d+\. \[(?P<label>.*)\]\((?P<url>[^\s()]+)\) \((?P<host>[^\s()]*)\)", line)
        if linked:
            assert linked["url"].lower().startswith(("http://", "https://"))
            assert not re.search(r"(?<!\\)[\[\]()]", linked["label"])  # every bracket escaped
        else:
            assert "](" not in line.replace("\\](", "")


@settings(max_examples=300)
@given(JSONISH, JSONISH)
def test_any_slack_event_payload_is_a_turn_or_ignored_never_a_crash(body: Any, event: Any) -> None:
    turn = turn_from_event(body, event)
    if turn is not None:
        assert turn.channel and turn.ts and isinstance(turn.text, str)


@settings(max_examples=200)
@given(
    text=TEXT,
    files=st.lists(
        st.dictionaries(st.sampled_from(["name", "title", "filetype", "id"]), JSONISH), max_size=3
    ),
)
async def test_any_message_text_reads_for_the_agent_without_a_crash(
    text: str, files: list[dict[str, Any]]
) -> None:
    async def names(user_id: str) -> str:
        return "someone"

    readable = await slack_to_agent_text(text, bot_user_id="U0BOT", names=names, files=files)
    assert isinstance(readable, str) and "<@U0BOT>" not in readable
