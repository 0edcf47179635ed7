"""The room frames' field checks (securechat/rooms/frames.py, docs/protocol.md 11.4 and 11.8).

Hypothesis drives random frames of every room type, both directions, through
the checks: they raise nothing but protocol errors with the codes the spec
gives (a bad room name is the fatal ``invalid_name`` in a client frame, every
other mistake non-fatal), and a valid frame passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given

from securechat.errors import ProtocolError
from securechat.rooms.frames import (
    ROOM_CLIENT_CHECKS,
    ROOM_PAGE,
    ROOM_SERVER_CHECKS,
    check_ack_target,
    check_message_room,
)
from securechat.rooms.log import MAX_ROOM_MEMBERS
from tests.support.rooms import chain, key_of
from tests.support.strategies import room_frames, room_server_frames

CLIENT_CODES = {"invalid_name", "bad_request", "bad_entry"}


def client_check(frame: Mapping[str, Any]) -> None:
    ROOM_CLIENT_CHECKS[frame["type"]](frame)


def server_check(frame: Mapping[str, Any]) -> None:
    kind = frame["type"]
    if kind == "message":
        check_message_room(frame)
    elif kind == "ack":
        check_ack_target(frame)
    else:
        ROOM_SERVER_CHECKS[kind](frame)


def code_of(check: Any, frame: Mapping[str, Any]) -> tuple[str, bool]:
    with pytest.raises(ProtocolError) as info:
        check(frame)
    return info.value.code, info.value.fatal


@given(room_frames)
def test_random_room_frames_raise_only_their_codes(frame: dict[str, Any]) -> None:
    try:
        client_check(frame)
    except ProtocolError as exc:
        assert exc.code in CLIENT_CODES
        assert exc.fatal == (exc.code == "invalid_name")


@given(room_server_frames)
def test_random_server_room_frames_raise_only_bad_request(frame: dict[str, Any]) -> None:
    try:
        server_check(frame)
    except ProtocolError as exc:
        assert (exc.code, exc.fatal) == ("bad_request", False)


def entry_json(seq: int = 1) -> dict[str, Any]:
    c = chain(("add", "alice", "bob"))
    return c.entries[seq].to_json()


def test_valid_client_frames_pass() -> None:
    from securechat.rooms.sealing import seal_room

    c = chain(("add", "alice", "bob"))
    assert c.state is not None
    env = seal_room(key_of("alice"), {n: key_of(n).public_key() for n in c.state.members}, c.state, "alice", "x")
    for frame in (
        {"type": "room_create", "entry": c.entries[0].to_json()},
        {"type": "room_append", "entry": c.entries[1].to_json()},
        {"type": "room_log", "room": "#ops"},
        {"type": "room_log", "room": "#ops", "since": 5},
        {"type": "room_send", "room": "#ops", "envelope": env},
        {"type": "rooms"},
        {"type": "rooms", "after": "#dev"},
    ):
        client_check(frame)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "room_log", "room": "ops"}, ("invalid_name", True)),
        ({"type": "room_log", "room": "#" + "a" * 33}, ("invalid_name", True)),
        ({"type": "room_log", "room": "#ops", "since": -1}, ("bad_request", False)),
        ({"type": "room_log", "room": "#ops", "since": True}, ("bad_request", False)),
        ({"type": "rooms", "after": "bob"}, ("invalid_name", True)),
        ({"type": "room_send", "room": "#Ops", "envelope": {}}, ("invalid_name", True)),
        ({"type": "room_send", "room": "#ops", "envelope": {}}, ("bad_request", False)),
        ({"type": "room_create", "entry": None}, ("bad_entry", False)),
        ({"type": "room_append"}, ("bad_entry", False)),
    ],
)
def test_client_frame_mistakes(frame: dict[str, Any], expected: tuple[str, bool]) -> None:
    assert code_of(client_check, frame) == expected


def test_create_and_append_carry_the_right_entries() -> None:
    assert code_of(client_check, {"type": "room_create", "entry": entry_json(1)}) == ("bad_entry", False)
    assert code_of(client_check, {"type": "room_append", "entry": entry_json(0)}) == ("bad_entry", False)


def test_room_send_envelope_must_name_the_frames_room() -> None:
    from securechat.rooms.sealing import seal_room

    c = chain()
    assert c.state is not None
    env = seal_room(key_of("alice"), {"alice": key_of("alice").public_key()}, c.state, "alice", "x")
    assert code_of(client_check, {"type": "room_send", "room": "#dev", "envelope": env}) == ("bad_request", False)


def test_server_frames_bounds() -> None:
    big = {"type": "room_update", "room": "#ops", "entries": [{}] * (ROOM_PAGE + 1), "keys": {}, "more": False}
    assert code_of(server_check, big) == ("bad_request", False)
    server_check({**big, "entries": [{}] * ROOM_PAGE})  # the entries themselves are the client's to reject
    sent = {"type": "room_sent", "room": "#ops", "id": "0" * 32, "members": ["bob"] * (MAX_ROOM_MEMBERS + 1),
            "seq": 3}
    assert code_of(server_check, sent) == ("bad_request", False)
    server_check({**sent, "members": ["bob", "carol"]})


def test_acks_for_rooms_name_their_member() -> None:
    check_ack_target({"to": "bob"})
    check_ack_target({"to": "#ops", "member": "bob"})
    for frame in ({"to": "#ops"}, {"to": "#ops", "member": "#dev"}, {"to": "BOB"}):
        assert code_of(check_ack_target, frame) == ("bad_request", False)


def test_a_message_with_a_room_needs_a_room_envelope() -> None:
    assert not check_message_room({"type": "message", "from": "bob", "envelope": {}})
    assert code_of(check_message_room, {"type": "message", "room": "#ops", "envelope": {}}) == ("bad_request", False)
    assert code_of(check_message_room, {"type": "message", "room": "ops", "envelope": {}}) == ("bad_request", False)
