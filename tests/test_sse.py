"""The SSE decoder against the WHATWG event-stream rules, and chunking invariance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.agents.sse import ServerSentEvent, SSEDecoder, SSEError, iter_sse


def decode(data: bytes, sizes: list[int] | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    if sizes is None:
        events += decoder.feed(data)
    else:
        position = 0
        for size in sizes:
            events += decoder.feed(data[position : position + size])
            position += size
        events += decoder.feed(data[position:])
    return events + decoder.close()


def test_basic_event_with_name_and_json() -> None:
    events = decode(b'event: thread.run.created\ndata: {"id":"run_1"}\n\n')
    assert events == [ServerSentEvent("thread.run.created", '{"id":"run_1"}')]
    assert events[0].json() == {"id": "run_1"}


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(newline: bytes) -> None:
    stream = newline.join([b"event: a", b"data: 1", b"", b"event: b", b"data: 2", b"", b""])
    assert decode(stream) == [ServerSentEvent("a", "1"), ServerSentEvent("b", "2")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    stream = b"data: x\r\n\r\ndata: y\r\n\r\n"
    for cut in range(1, len(stream)):
        assert decode(stream, [cut]) == [ServerSentEvent(data="x"), ServerSentEvent(data="y")], cut


def test_lone_cr_then_lf_in_next_chunk_is_not_a_blank_line() -> None:
    # "data: a\r" + "\n" is one line end; a blank line needs a second one.
    assert decode(b"data: a\r\ndata: b\r\n\r\n", [8]) == [ServerSentEvent(data="a\nb")]


def test_comments_are_ignored() -> None:
    stream = b": keep-alive\n\n:another\nevent: e\n: inside\ndata: d\n\n"
    assert decode(stream) == [ServerSentEvent("e", "d")]


def test_several_data_lines_join_with_newline() -> None:
    assert decode(b"data: a\ndata:b\ndata\ndata:  c\n\n") == [ServerSentEvent(data="a\nb\n\n c")]


def test_field_without_colon_and_only_one_leading_space_stripped() -> None:
    assert decode(b"data\n\n") == [ServerSentEvent(data="")]
    assert decode(b"event\ndata: x\n\n") == [ServerSentEvent("message", "x")]
    assert decode(b"data:   spaced  \n\n") == [ServerSentEvent(data="  spaced  ")]


def test_block_without_data_is_not_dispatched() -> None:
    assert decode(b"event: nothing\n\nid: 7\n\n") == []


def test_id_persists_and_null_id_is_ignored() -> None:
    events = decode(b"id: 1\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", ""]


def test_retry_only_with_digits() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 1500\ndata: a\n\nretry: 12x\ndata: b\n\nretry: \xd9\xa3\ndata: c\n\n")
    assert [e.retry for e in events] == [1500, None, None]
    assert decoder.retry == 1500


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_leading_bom_is_stripped_once_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n"
    for cut in range(0, 5):
        assert decode(stream, [cut]) == [ServerSentEvent(data="a")]
    # a second BOM is content (the field name is then "\ufeffdata": ignored)
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n") == []


def test_utf8_split_across_chunks() -> None:
    text = "Grüße, 東京 😀 【3:0†source】"
    stream = f"data: {text}\n\n".encode()
    for size in range(1, 6):
        assert decode(stream, [size] * (len(stream) // size)) == [ServerSentEvent(data=text)]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode(b"data: a\xffb\n\n") == [ServerSentEvent(data="a\ufffdb")]


def test_incomplete_event_at_end_is_dropped() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: partial\n") == [ServerSentEvent(data="complete")]
    assert decoder.has_partial_event
    assert decoder.close() == []


def test_line_past_the_limit_is_an_error_not_a_memory_leak() -> None:
    decoder = SSEDecoder(max_line_bytes=1024)
    with pytest.raises(SSEError, match="longer than 1024"):
        for _ in range(100):
            decoder.feed(b"x" * 100)


def test_iter_sse_over_chunks() -> None:
    assert list(iter_sse([b"data: 1\n", b"\ndata: 2\n\n"])) == [
        ServerSentEvent(data="1"),
        ServerSentEvent(data="2"),
    ]


# -- any chunking of the same bytes gives the same events ----------------------------

_field_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
_line = st.one_of(
    st.builds(lambda v: f"data:{v}", _field_value),
    st.builds(lambda v: f"data: {v}", _field_value),
    st.builds(lambda v: f"event: {v}", _field_value),
    st.builds(lambda v: f"id: {v}", _field_value),
    st.builds(lambda v: f"retry: {v}", st.sampled_from(["10", "x", "", "3000"])),
    st.builds(lambda v: f":{v}", _field_value),
    st.just("data"),
    st.just(""),
)


@st.composite
def streams_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    lines = draw(st.lists(_line, max_size=30))
    endings = draw(st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=len(lines), max_size=len(lines)))
    body = "".join(line + end for line, end in zip(lines, endings, strict=True))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    data = (bom + body).encode()
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=12))
    return data, sorted(cuts)


@given(streams_and_cuts())
def test_any_chunking_gives_the_same_events(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    whole = decode(data)
    sizes = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert decode(data, sizes) == whole
    assert decode(data, [1] * len(data)) == whole


@given(
    st.lists(st.tuples(st.sampled_from(["a", "thread.message.delta"]), _field_value), max_size=10),
    st.sampled_from(["\n", "\r", "\r\n"]),
)
def test_round_trip_of_well_formed_events(items: list[tuple[str, str]], newline: str) -> None:
    stream = "".join(f"event: {name}{newline}data: {value}{newline}{newline}" for name, value in items)
    assert decode(stream.encode()) == [ServerSentEvent(name, value) for name, value in items]
