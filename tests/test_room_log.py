"""The membership log (securechat/rooms/log.py): entries, heads, and every rule of docs/protocol.md 11.3.

The server and the client call the same ``apply``; each refusal here is the
error code the server answers with and the reason a client shows.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.encoding import b64encode
from securechat.errors import RoomRefused
from securechat.rooms.log import (
    MAX_ROOM_LOG,
    MAX_ROOM_MEMBERS,
    ZERO_HEAD,
    RoomState,
    apply,
    check_change,
    parse_entry,
    replay,
)
from securechat.rooms.sealing import verify_entry
from tests.support.rooms import Chain, chain, key_of
from tests.support.strategies import anything


def refused(code: str) -> pytest.RaisesExc[RoomRefused]:
    return pytest.raises(RoomRefused, check=lambda exc: exc.code == code)


def test_create_makes_the_creator_the_only_member_and_admin() -> None:
    c = chain()
    assert c.state == RoomState("#ops", "invite", 0, c.entries[0].head(), frozenset({"alice"}), frozenset({"alice"}))


def test_entries_round_trip_through_json_and_keep_their_head() -> None:
    c = chain(("add", "alice", "bob"), ("admin", "alice", "bob"))
    for entry in c.entries:
        wire = json.loads(json.dumps(entry.to_json()))
        again = parse_entry(wire)
        assert again == entry and again.head() == entry.head()
        assert ("kind" in wire) == (entry.op == "create")
        assert verify_entry(key_of(entry.by).public_key(), again)


def test_heads_chain_and_differ_with_the_signature() -> None:
    c = chain(("add", "alice", "bob"))
    assert c.entries[0].prev == ZERO_HEAD and c.entries[1].prev == c.entries[0].head()
    # The same fields signed again (PSS is randomized) make another head: the chain pins exact entries.
    twin = c.make("add", "alice", "bob", seq=1, prev=c.entries[0].head())
    assert twin.signed_bytes() == c.entries[1].signed_bytes() and twin.head() != c.entries[1].head()


@pytest.mark.parametrize(
    ("changes", "op", "by", "name", "code"),
    [
        ((), "add", "bob", "carol", "not_allowed"),  # a non-member, non-admin adds
        ((("add", "alice", "bob"),), "add", "bob", "carol", "not_allowed"),  # a member who is not an admin
        ((("add", "alice", "bob"),), "remove", "bob", "alice", "not_allowed"),
        ((("add", "alice", "bob"),), "admin", "bob", "bob", "not_allowed"),
        ((("add", "alice", "bob"), ("admin", "alice", "bob")), "remove", "alice", "bob", "not_allowed"),  # an admin
        ((), "remove", "alice", "alice", "not_allowed"),  # the creator is an admin: leave, not remove
        ((), "join", "bob", "bob", "not_allowed"),  # an invite room
        ((), "join", "bob", "carol", "not_allowed"),  # a join for someone else
        ((("add", "alice", "bob"),), "leave", "alice", "bob", "not_allowed"),  # a leave for someone else
        ((), "remove", "alice", "bob", "not_member"),
        ((), "leave", "bob", "bob", "not_member"),
        ((), "admin", "alice", "bob", "not_member"),
        ((("add", "alice", "bob"),), "add", "alice", "bob", "bad_entry"),  # twice
        ((("add", "alice", "bob"),), "join", "bob", "bob", "bad_entry"),  # a member of an invite room joins
        ((("add", "alice", "bob"), ("admin", "alice", "bob")), "admin", "alice", "bob", "bad_entry"),
        ((), "create", "alice", "alice", "room_exists"),
    ],
)
def test_every_rule_refuses_with_its_code(
    changes: tuple[tuple[str, ...], ...], op: str, by: str, name: str, code: str
) -> None:
    c = chain(*changes)
    with refused(code):
        apply(c.state, c.make(op, by, name))


def test_what_each_op_does() -> None:
    c = chain(("add", "alice", "bob"), ("add", "alice", "carol"), ("admin", "alice", "bob"))
    assert c.state is not None and c.state.admins == {"alice", "bob"}
    c.add("remove", "bob", "carol")  # the new admin may remove
    c.add("leave", "alice")  # an admin leaves by themselves, and is no admin any more
    assert c.state.members == {"bob"} and c.state.admins == {"bob"}
    c.add("add", "bob", "carol")  # a former member may be added again
    c.add("leave", "bob")  # the last admin leaves: an invite room is frozen
    assert c.state.members == {"carol"} and not c.state.admins
    with refused("not_allowed"):
        apply(c.state, c.make("add", "carol", "dave"))
    c.add("leave", "carol")  # nobody left; the name stays taken
    assert not c.state.members


def test_open_rooms_let_anyone_join_and_admins_still_add() -> None:
    c = chain(kind="open")
    c.add("join", "bob")
    c.add("add", "alice", "carol")
    c.add("leave", "bob")
    c.add("join", "bob")
    assert c.state is not None and c.state.kind == "open" and c.state.members == {"alice", "bob", "carol"}


def test_the_member_cap_is_checked_and_a_server_may_only_lower_it() -> None:
    c = chain(kind="open")
    with refused("room_full"):
        apply(c.state, c.make("join", "bob"), max_members=1)
    assert apply(c.state, c.make("join", "bob"), max_members=2).members == {"alice", "bob"}
    members = frozenset(f"m{i}" for i in range(MAX_ROOM_MEMBERS))
    full = RoomState("#ops", "open", 5, bytes(32), members, frozenset({"m0"}))
    for cap in (MAX_ROOM_MEMBERS, MAX_ROOM_MEMBERS + 100):  # a higher cap never lifts the protocol's
        with refused("room_full"):
            check_change(full, "join", "zed", "zed", max_members=cap)
        with refused("room_full"):
            check_change(full, "add", "m0", "zed", max_members=cap)


def test_the_log_cap() -> None:
    state = RoomState("#ops", "open", MAX_ROOM_LOG - 1, bytes(range(32)), frozenset({"alice"}), frozenset({"alice"}))
    c = Chain("#ops", state=state)
    with refused("room_full"):
        apply(state, c.make("join", "bob"))


def test_the_chain_fields_are_checked() -> None:
    c = chain(("add", "alice", "bob"))
    head = c.state.head if c.state else ZERO_HEAD
    with refused("stale_state"):
        apply(c.state, c.make("add", "alice", "carol", seq=1, prev=c.entries[0].head()))  # an old seq
    with refused("stale_state"):
        apply(c.state, c.make("add", "alice", "carol", seq=2, prev=bytes(32)))  # a wrong prev
    with refused("stale_state"):
        apply(c.state, c.make("add", "alice", "carol", seq=3, prev=head))  # a gap
    with refused("bad_entry"):
        apply(c.state, Chain("#dev").make("add", "alice", "carol", seq=2, prev=head))  # another room
    with refused("unknown_room"):
        apply(None, c.make("add", "alice", "carol", seq=0, prev=ZERO_HEAD))
    with refused("bad_entry"):
        apply(None, Chain().make("create", "alice", kind="invite", seq=1))
    with refused("bad_entry"):
        apply(None, Chain().make("create", "alice", "bob", kind="invite"))  # create names its signer
    with refused("bad_entry"):
        apply(None, Chain().make("create", "alice", kind="public"))


def test_replay_gives_every_intermediate_state() -> None:
    c = chain(("add", "alice", "bob"), ("add", "alice", "carol"), ("remove", "alice", "bob"))
    assert replay(c.entries) == c.state
    one = replay(c.entries, upto=1)
    assert one is not None and one.members == {"alice", "bob"} and one.head == c.entries[1].head()


GOOD = {
    "room": "#ops", "seq": 1, "prev": "ab" * 32, "op": "add", "by": "alice", "name": "bob", "ts": 5,
    "sig": b64encode(b"x" * 256),
}


@pytest.mark.parametrize(
    "change",
    [
        {"room": "ops"}, {"room": "#Ops"}, {"seq": -1}, {"seq": True}, {"seq": 2**53}, {"seq": 1.0},
        {"prev": "AB" * 32}, {"prev": "ab" * 31}, {"op": "ban"}, {"by": "Alice"}, {"name": None},
        {"kind": "invite"}, {"kind": ""}, {"ts": "5"}, {"sig": "not base64!"}, {"sig": "QQ=="[:-1]},
        {"sig": "A" * 5000}, {"sig": 7},
    ],
)
def test_malformed_entries_are_bad_entry(change: dict[str, object]) -> None:
    parse_entry(GOOD)
    with refused("bad_entry"):
        parse_entry({**GOOD, **change})


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_an_entry_missing_a_field_is_bad_entry(missing: str) -> None:
    with refused("bad_entry"):
        parse_entry({k: v for k, v in GOOD.items() if k != missing})


def test_a_create_needs_its_kind() -> None:
    create = {**GOOD, "seq": 0, "op": "create", "name": "alice"}
    with refused("bad_entry"):
        parse_entry(create)
    assert parse_entry({**create, "kind": "open"}).kind == "open"


def test_unknown_fields_are_ignored_and_dropped_from_the_canonical_form() -> None:
    entry = parse_entry({**GOOD, "extra": "x" * 1000})
    assert "extra" not in entry.to_json()


@given(anything)
def test_parse_entry_raises_only_bad_entry(value: object) -> None:
    try:
        parse_entry(value)
    except RoomRefused as exc:
        assert exc.code == "bad_entry"


@given(st.dictionaries(st.sampled_from(sorted(GOOD) + ["kind", "x"]), anything, max_size=10))
def test_parse_entry_on_entry_shaped_garbage(obj: dict[str, object]) -> None:
    mixed = {**GOOD, **obj}
    try:
        entry = parse_entry(mixed)
    except RoomRefused as exc:
        assert exc.code == "bad_entry"
    else:
        assert parse_entry(entry.to_json()) == entry


OPS = st.sampled_from(["add", "remove", "join", "leave", "admin"])
PEOPLE = st.sampled_from(["alice", "bob", "carol", "dave"])


@given(st.lists(st.tuples(OPS, PEOPLE, PEOPLE), max_size=25), st.sampled_from(["invite", "open"]),
       st.integers(min_value=1, max_value=4))
def test_the_state_invariants_hold_whatever_is_tried(
    attempts: list[tuple[str, str, str]], kind: str, cap: int
) -> None:
    """Random changes: each is applied or refused with a code; admins stay members; the cap holds."""
    state = check_state = apply(None, _unsigned("create", "alice", "alice", kind, 0, ZERO_HEAD))
    for op, by, name in attempts:
        try:
            members, admins = check_change(state, op, by, name, max_members=cap)
        except RoomRefused as exc:
            assert exc.code in {"not_allowed", "not_member", "bad_entry", "room_full"}
            continue
        assert admins <= members and len(members) <= max(cap, 1)
        if op in ("add", "remove", "admin"):
            assert by in state.admins
        state = RoomState(state.room, state.kind, state.seq + 1, state.head, members, admins)
    assert check_state.members == {"alice"}


def _unsigned(op: str, by: str, name: str, kind: str, seq: int, prev: bytes):  # type: ignore[no-untyped-def]
    from securechat.rooms.log import RoomEntry

    return RoomEntry("#ops", seq, prev, op, by, name, kind, 0, b"")
