"""Agent Markdown out to Slack: citations resolved, long replies split at clean places.

Slack's ``markdown`` block takes standard Markdown up to 12,000 characters per message, so
the agent's text goes out nearly as written. What needs care: citation markers
(``【3:0†source】``) become numbered links and a Sources footer and never reach a person,
and a reply longer than one message is cut where no code block, link, emoji or
multibyte character is broken.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from ..agents.events import Annotation
from ..mentions import neutralise_mentions

MARKDOWN_LIMIT = 12_000
_MARKER = re.compile(r"【[^】【\n]{0,40}】")
_PARTIAL_MARKER = re.compile(r"【[^】【\n]{0,40}$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)(.*)$")


@dataclass
class Citations:
    """Numbers sources in order of first appearance, across the whole reply."""

    numbers: dict[str, int] = field(default_factory=dict)  # source key -> number
    sources: list[tuple[int, str, str | None]] = field(default_factory=list)  # (n, label, url)
    by_marker: dict[str, Annotation] = field(default_factory=dict)

    def add(self, annotations: tuple[Annotation, ...] | list[Annotation]) -> None:
        for annotation in annotations:
            if annotation.marker:
                self.by_marker[annotation.marker] = annotation

    def _number(self, annotation: Annotation, file_names: dict[str, str]) -> int | None:
        if annotation.kind == "url_citation" and annotation.url:
            url = safe_url(annotation.url)  # None: not an http(s) link, shown as a label only
            key, label = annotation.url, annotation.title or (url and urlsplit(url).netloc) or "source"
        elif annotation.kind in ("file_citation", "file_path") and annotation.file_id:
            key, url = "file:" + annotation.file_id, None
            label = file_names.get(annotation.file_id) or annotation.file_id
        else:
            return None
        if key not in self.numbers:
            self.numbers[key] = len(self.numbers) + 1
            self.sources.append((self.numbers[key], label, url))
        return self.numbers[key]

    def render(self, text: str, *, final: bool, file_names: dict[str, str] | None = None) -> str:
        """Markers -> ``[n](url)`` (or ``[n]``); unknown markers vanish; while streaming a
        marker still arriving is held back."""
        names = file_names or {}

        def replace(match: re.Match[str]) -> str:
            annotation = self.by_marker.get(match.group(0))
            number = self._number(annotation, names) if annotation else None
            if number is None:
                return ""
            url = safe_url(annotation.url) if annotation and annotation.url else None
            return f"[{number}]({url})" if url else f"[{number}]"

        rendered = _MARKER.sub(replace, text)
        if not final:
            rendered = _PARTIAL_MARKER.sub("", rendered)
        return rendered

    def footer(self) -> str:
        if not self.sources:
            return ""
        lines = [
            f"{n}. [{escape_label(label)}]({url}) ({urlsplit(url).netloc})"
            if url
            else f"{n}. {escape_label(label)}"
            for n, label, url in self.sources
        ]
        return "\n\n**Sources**\n" + "\n".join(lines)


def safe_url(url: str) -> str | None:
    """An http(s) link, made safe inside Markdown's ``(...)``; anything else (javascript:,
    data:, slack: ...) None."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(url.strip(), safe=":/?#[]@!$&'*+,;=%~-._")


def escape_label(text: str) -> str:
    """A link label or source title from outside, shown as itself in Markdown: brackets,
    parentheses, emphasis and angle brackets escaped; mass mentions defused."""
    text = neutralise_mentions(" ".join(text.split())[:200])
    return re.sub(r"([\\\[\]()*_`<>~|])", r"\\\1", text)


def open_fence(text: str) -> str | None:
    """The opening line of a code fence left open at the end of ``text`` (or None)."""
    fence: str | None = None
    marker = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        if fence is None:
            fence, marker = line.strip(), match.group(1)
        elif (
            match.group(1)[0] == marker[0]
            and len(match.group(1)) >= len(marker)
            and not match.group(2).strip()
        ):
            fence, marker = None, ""
    return fence


def _inside_link(text: str, cut: int) -> bool:
    """True when ``cut`` falls inside ``[label](url)`` or ``<...>``."""
    line_start = text.rfind("\n", 0, cut) + 1
    before = text[line_start:cut]
    if before.count("[") > before.count("]"):
        return True
    if re.search(r"\]\([^)\s]*$", before):
        return True
    return before.count("<") > before.count(">")


def _safe_char_boundary(text: str, cut: int) -> int:
    """Step back so the cut is not inside a grapheme (ZWJ emoji, flags, accents)."""
    while cut > 1:
        here, prev = text[cut], text[cut - 1]
        joins = (
            here == "\u200d"
            or prev == "\u200d"
            or unicodedata.combining(here)
            or "\ufe00" <= here <= "\ufe0f"
            or "\U0001f3fb" <= here <= "\U0001f3ff"
            or ("\U0001f1e6" <= here <= "\U0001f1ff" and "\U0001f1e6" <= prev <= "\U0001f1ff")
            or "\udc00" <= here <= "\udfff"
        )
        if not joins:
            return cut
        cut -= 1
    return cut


def find_cut(text: str, limit: int) -> int:
    """The best place (<= limit) to end a message: a paragraph break outside code, then a
    line break, then a space, never inside a link or a character."""
    if len(text) <= limit:
        return len(text)
    window = text[:limit]
    for pattern in ("\n\n", "\n", " "):
        position = window.rfind(pattern)
        while position > limit // 3:
            cut = position + len(pattern)
            if not _inside_link(text, cut) and (pattern != "\n\n" or open_fence(text[:cut]) is None):
                return cut
            position = window.rfind(pattern, 0, position)
    return _safe_char_boundary(text, limit)


def split_page(text: str, limit: int = MARKDOWN_LIMIT) -> tuple[str, str, int]:
    """Split into (this message, carry, consumed): the next message is
    ``carry + text[consumed:]``. A code block cut in two is closed here and reopened in the
    next message (``carry`` is its fence line), so both halves render as code."""
    if len(text) <= limit:
        return text, "", len(text)
    cut = find_cut(text, limit - 8)  # room to close a fence
    head = text[:cut]
    fence = open_fence(head)
    if fence is not None:
        return head.rstrip("\n") + "\n```", fence + "\n", cut
    while cut < len(text) and text[cut] == "\n":
        cut += 1
    return head.rstrip("\n"), "", cut


def slack_safe(markdown: str, *, allow_mass_mentions: bool = False) -> tuple[str, str]:
    """The agent's Markdown as it may reach Slack: the ``markdown`` block's text (mass
    mentions defused) and the mrkdwn ``text`` fallback (markup dropped, ``& < >`` escaped so
    no ``<url|label>`` link or ``<!channel>`` forms, defused again after the markup went)."""
    shown = markdown if allow_mass_mentions else neutralise_mentions(markdown)
    text = plain_text(shown).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return shown, text if allow_mass_mentions else neutralise_mentions(text)


def plain_text(markdown: str, limit: int = 3000) -> str:
    """A notification fallback: Markdown markup dropped, short."""
    text = re.sub(r"```[^\n]*\n?", "", markdown)
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1", text)
    text = re.sub(r"(\*\*|__|`)", "", text)
    text = re.sub(r"^#{1,6}\s*", "", text, flags=re.MULTILINE).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
