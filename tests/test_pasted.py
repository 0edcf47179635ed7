"""Finding payloads in pasted text (securechat/pasted.py): every way of breaking them into lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat import crypto
from securechat.pasted import is_whole, split_pasted

ENVELOPES = [
    {
        "v": 1,
        "from": "alice",
        "to": "bob",
        "id": f"{i:032x}",
        "ts": i,
        "key": "a",
        "nonce": "b",
        "ct": "c" * i,
        "sig": "d",
    }
    for i in range(1, 5)
]
PAYLOADS = [crypto.encode_payload(env) for env in ENVELOPES]


def test_whole_and_not_whole() -> None:
    whole = PAYLOADS[0]
    assert is_whole(whole)
    assert not is_whole(whole[:-4]) and not is_whole(whole[:-1]) and not is_whole(whole + "AAAA")
    assert not is_whole("") and not is_whole("!!!!")


@given(
    st.lists(st.sampled_from(PAYLOADS), min_size=1, max_size=4),
    st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=20),
    st.sampled_from(["", " ", "\t", "  \r"]),
    st.booleans(),
)
def test_any_line_breaking_gives_the_payloads_back(
    payloads: list[str], widths: list[int], pad: str, blank_between: bool
) -> None:
    lines: list[str] = []
    for n, text in enumerate(payloads):
        i = 0
        while i < len(text):
            width = widths[(n + len(lines)) % len(widths)]
            lines.append(text[i : i + width] + pad)
            i += width
        if blank_between:
            lines.append("")
    assert split_pasted(lines) == payloads


def test_what_never_becomes_whole_is_kept_for_the_error() -> None:
    cut = PAYLOADS[1][:40]
    assert split_pasted([cut, "", PAYLOADS[2]]) == [cut, PAYLOADS[2]]
    # A whole payload on its own line starts afresh after a broken one.
    assert split_pasted([cut, PAYLOADS[2]]) == [cut, PAYLOADS[2]]
    with pytest.raises(Exception, match="cut short"):
        crypto.decode_payload(cut)
