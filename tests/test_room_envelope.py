"""The room envelope's structure checks (securechat/rooms/envelope.py): the one-call checks of every wrapped
key give exactly the verdicts, and the messages, of the check per key they stand in for.

Opening a 100-member room's message checks 100 names and keys; since the checks run all
keys at once (docs/performance.md section 7), these tests hold them to the plain loop
below: the same entries accepted, the same first bad entry named, on the server (which
routes with :func:`check_room_envelope`) and on every member.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from securechat.errors import MalformedEnvelope, MemberMismatch
from securechat.names import NAME_PATTERN
from securechat.rooms.envelope import (
    MAX_WRAPPED_B64,
    _all_keys_valid,
    check_room_envelope,
    check_room_members,
    parse_room_envelope,
)
from tests.test_room_sealing import MEMBERS, STATE, sealed


def loop_verdict(keys: Mapping[Any, Any]) -> str | None:
    """The check per key, entry by entry in the object's order: the message of the first bad one, or None."""
    for name, wrapped in keys.items():
        if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
            return "every name in envelope 'keys' must be a valid name"
        if type(wrapped) is not str or len(wrapped) > MAX_WRAPPED_B64 or not wrapped.isascii():
            return f"the wrapped key for '{name}' must be a base64 string"
    return None


# Names a line feed could smuggle past a check of all names joined by line feeds, beside good and bad ones.
key_names = st.one_of(
    st.sampled_from(["alice", "bob", "m001", "z" * 32, "a\nb", "a\n", "\nb", "\n", "", "A", "z" * 33, "é", "a b"]),
    st.text(alphabet="ab\n-_A", max_size=6),
    st.integers(),
)
key_texts = st.one_of(
    st.sampled_from(["QUJD", "", "A" * MAX_WRAPPED_B64, "A" * (MAX_WRAPPED_B64 + 1), "QUJ\u00e9", "QUJ\U0001f600"]),
    st.text(alphabet="AB=\n\u00e9", max_size=8),
    st.none(),
    st.integers(),
    st.binary(max_size=4),
)


@given(st.dictionaries(key_names, key_texts, min_size=1, max_size=6))
@example({"alice": "A" * MAX_WRAPPED_B64, "bob": "QUJD"})  # at the bound: valid
@example({"alice": "QUJD", "bob\ncarol": "QUJD"})
def test_all_keys_at_once_gives_the_verdict_and_message_of_the_check_per_key(keys: dict[Any, Any]) -> None:
    expected = loop_verdict(keys)
    assert _all_keys_valid(keys) is (expected is None)  # the one-call path is taken exactly when all are valid
    envelope = {**sealed(), "keys": keys}
    if expected is None:
        assert check_room_envelope(envelope).keys == keys
    else:
        with pytest.raises(MalformedEnvelope) as info:
            check_room_envelope(envelope)
        assert info.value.detail == expected


@pytest.mark.parametrize("name", ["bob\ncarol", "bob\n", "\nbob"])
def test_a_name_holding_a_line_feed_is_malformed_though_its_parts_are_names(name: str) -> None:
    envelope = sealed()
    envelope["keys"][name] = envelope["keys"].pop("bob")
    with pytest.raises(MalformedEnvelope, match="every name in envelope 'keys' must be a valid name"):
        parse_room_envelope(envelope)


@pytest.mark.parametrize("kind", [frozenset, set, list, tuple])
@pytest.mark.parametrize("members", [MEMBERS, MEMBERS[:2], (*MEMBERS, "dave"), ("alice", "bob", "dave")])
def test_the_member_check_is_the_same_whatever_collection_holds_the_members(
    kind: type[Collection[str]], members: tuple[str, ...]
) -> None:
    """Keys for exactly the members pass; any other set of names is member_mismatch naming the difference."""
    env = parse_room_envelope(copy.deepcopy(sealed()))
    held = kind(members)  # type: ignore[call-arg]
    if set(members) == STATE.members:
        check_room_members(env, held, "bob")
    else:
        with pytest.raises(MemberMismatch, match="the keys are not for the members"):
            check_room_members(env, held, "bob")
