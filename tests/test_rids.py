"""securechat.server.rids: the rid as the nodes store and publish it, read and written without the codec when it can be."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.server.rids import rid_about, rid_text

RIDS = st.one_of(st.text(max_size=40), st.text(alphabet="abcXYZ019\"\\\n é", max_size=8), st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True))


def _about_by_the_codec(text: bytes | str) -> tuple[str | None, str | None]:
    """What rid_about answered before it had a fast path (rooms aside: this test's texts are no lists)."""
    if not text:
        return None, None
    value = json.loads(text)
    if isinstance(value, str):
        return value, None
    raise ValueError("not a rid")


@given(RIDS)
def test_a_rid_is_written_as_the_codec_writes_it_and_read_back(rid: str) -> None:
    text = rid_text(rid)
    assert text == json.dumps(rid, ensure_ascii=False)
    assert rid_about(text) == (rid, None)
    assert rid_about(text.encode()) == (rid, None)


@given(st.one_of(st.binary(max_size=12), st.text(alphabet='"\\abc1é[]', max_size=10).map(lambda t: t.encode())))
def test_any_text_reads_as_the_codec_reads_it_or_is_refused(text: bytes) -> None:
    try:
        expected = _about_by_the_codec(text)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors too
        with pytest.raises(ValueError):
            rid_about(text)
        return
    assert rid_about(text) == expected


@pytest.mark.parametrize(
    "text", [b'"a"b"', b'"ab', b'ab"', b'"', b'"a\\"', b'"\xc3\xa9"', '"é"', b'"a\nb"', b'"12"x', b'x"12"']
)
def test_texts_near_the_fast_path(text: bytes | str) -> None:
    try:
        expected = _about_by_the_codec(text)
    except ValueError:
        with pytest.raises(ValueError):
            rid_about(text)
        return
    assert rid_about(text) == expected


def test_a_room_copy_keeps_its_room() -> None:
    text = rid_text("7", "#general")
    assert text == '["#general", "7"]'
    assert rid_about(text) == ("7", "#general")
    assert rid_about(rid_text(None)) == (None, None)
    assert rid_text("") == '""' and rid_about('""') == ("", None)
