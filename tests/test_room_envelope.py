"""The room envelope's checks of its names (securechat/rooms/envelope.py): every name in ``keys`` is a name,
and the keys are for exactly the members, whatever collection holds them."""

from __future__ import annotations

import copy
from collections.abc import Collection

import pytest

from securechat.errors import MalformedEnvelope, MemberMismatch
from securechat.rooms.envelope import check_room_members, parse_room_envelope
from tests.test_room_sealing import MEMBERS, STATE, sealed


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
