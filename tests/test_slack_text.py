"""Slack text in, Markdown out: mentions, entities, links, citations and clean splits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.agents.events import Annotation
from bot.slack.render import Citations, open_fence, plain_text, split_page
from bot.slack.text import slack_to_agent_text


async def names(user_id: str) -> str:
    return {"U1": "alice", "U2": "bob"}.get(user_id, user_id)


@pytest.mark.parametrize(
    ("slack", "agent"),
    [
        ("<@UBOT> hello", "hello"),
        ("hey <@UBOT>, ask <@U1> and <@U2|bobby>", "hey , ask @alice and @bobby"),
        ("see <#C1|general> and <#C2>", "see #general and #C2"),
        (
            "docs: <https://x.io/a?b=1&amp;c=2|the docs> and <https://y.io>",
            "docs: the docs (https://x.io/a?b=1&c=2) and https://y.io",
        ),
        ("mail <mailto:a@b.c|a@b.c>", "mail a@b.c"),
        ("1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 < 2 && 3 > 2"),
        ("<!here> deploy <!subteam^S1|@oncall>", "@here deploy @oncall"),
        ("&amp;lt; stays literal", "&lt; stays literal"),
    ],
)
async def test_slack_text_becomes_readable(slack: str, agent: str) -> None:
    assert await slack_to_agent_text(slack, bot_user_id="UBOT", names=names) == agent


async def test_files_are_listed_by_name_and_type() -> None:
    files = [
        {"name": "report.pdf", "filetype": "pdf"},
        {"title": "screenshot", "mimetype": "image/png"},
    ]
    text = await slack_to_agent_text("<@UBOT> look", bot_user_id="UBOT", names=names, files=files)
    assert text == "look\n\n[Attached files: report.pdf (pdf), screenshot (image/png)]"


def test_citations_number_sources_and_hide_markers() -> None:
    citations = Citations()
    citations.add(
        [
            Annotation("url_citation", marker="【3:0†source】", url="https://a.io", title="A"),
            Annotation("url_citation", marker="【3:1†source】", url="https://b.io", title="B"),
            Annotation("url_citation", marker="【3:2†source】", url="https://a.io", title="A again"),
            Annotation("file_citation", marker="【4:0†source】", file_id="assistant-f1"),
        ]
    )
    text = "One【3:1†source】 two【3:0†source】 three【3:2†source】 file【4:0†source】 bogus【9:9†source】."
    assert citations.render(text, final=True, file_names={"assistant-f1": "handbook.pdf"}) == (
        "One[1](https://b.io) two[2](https://a.io) three[2](https://a.io) file[3] bogus."
    )
    assert (
        citations.footer()
        == "\n\n**Sources**\n1. [B](https://b.io) (b.io)\n2. [A](https://a.io) (a.io)\n3. handbook.pdf"
    )


def test_a_marker_still_arriving_is_held_back_while_streaming() -> None:
    citations = Citations()
    assert citations.render("Answer 【3:0†sou", final=False) == "Answer "
    assert citations.render("Answer 【3:0†sou", final=True) == "Answer 【3:0†sou"


def test_split_closes_and_reopens_a_code_fence() -> None:
    text = "intro\n\n```python\n" + "".join(f"line_{i} = {i}\n" for i in range(2000)) + "```\n\nafter"
    head, carry, consumed = split_page(text, 5000)
    assert len(head) <= 5000 and head.endswith("\n```") and open_fence(head[:-4]) == "```python"
    assert carry == "```python\n"
    rest = carry + text[consumed:]
    assert open_fence(head) is None and rest.startswith("```python\nline_")


def test_split_prefers_paragraphs_and_never_cuts_a_link() -> None:
    text = "a" * 50 + "\n\n" + "see [the link](https://example.com/" + "x" * 60 + ") " + "b " * 100
    head, _, _ = split_page(text, 100)
    assert head == "a" * 50
    text = "word " * 10 + "[label](https://example.com/very/long/path)" + " tail" * 5
    head, _, consumed = split_page(text, 70)
    assert "](" not in head or head.count("(") == head.count(")")
    assert text[consumed:].startswith("[label]") or head.endswith(")")


@given(
    st.text(alphabet=st.sampled_from(list("ab \n`[]()😀👍🏽é\u0301🇫🇷")), min_size=1, max_size=400),
    st.integers(min_value=40, max_value=200),
)
def test_splitting_loses_nothing_and_respects_the_limit(text: str, limit: int) -> None:
    pages = []
    rest = text
    while rest:
        head, carry, consumed = split_page(rest, limit)
        assert len(head) <= limit
        assert consumed > 0
        pages.append((head, carry))
        rest = carry + rest[consumed:] if rest[consumed:] else ""
    joined = "".join(head for head, _ in pages)
    strip = lambda s: re.sub(r"\s|`", "", s)  # noqa: E731  fences added at cuts, whitespace at joins
    assert strip(joined) == strip(text)


def test_plain_text_fallback() -> None:
    assert plain_text("# Title\n**bold** and `code` and [link](https://x.io)\n```py\nx=1\n```") == (
        "Title\nbold and code and link\nx=1"
    )
    assert len(plain_text("x" * 5000)) == 3000
