"""The client's sans-I/O connection: byte literals in, events and bytes out, no network."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from securechat import crypto
from securechat.client.connection import (
    TRANSITIONS,
    AckFrame,
    ClientConnection,
    ConnectionEvent,
    Dropped,
    KeyAnswer,
    MessageFrame,
    Notice,
    Phase,
    PresencePush,
    ServerError,
    State,
    UsersAnswer,
    Welcomed,
)
from securechat.encoding import b64decode, b64encode
from securechat.protocol import SERVER_TYPES, FrameDecoder, encode_frame

SERVER_ID = bytes(range(0x10, 0x20))
NONCE = bytes(range(0x40, 0x60))
CHALLENGE = encode_frame({"type": "challenge", "server_id": b64encode(SERVER_ID), "nonce": b64encode(NONCE)})


@pytest.fixture(scope="module")
def key() -> crypto.PrivateKey:
    return crypto.generate_private_key(2048)


def sent(conn: ClientConnection) -> list[dict[str, Any]]:
    return FrameDecoder().feed(conn.data_to_send())


def welcome(key: crypto.PrivateKey, **fields: Any) -> bytes:
    frame = {"type": "welcome", "name": "alice", "fingerprint": crypto.fingerprint(key.public_key()), "new": True}
    return encode_frame({**frame, **fields})


def opened(key: crypto.PrivateKey) -> ClientConnection:
    conn = ClientConnection("alice", key)
    assert conn.receive_data(CHALLENGE + welcome(key)) == [Welcomed(True)]
    conn.data_to_send()
    return conn


def test_hello_then_a_signed_auth_then_welcome(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    (hello,) = sent(conn)
    assert hello == {"type": "hello", "version": 1, "name": "alice", "pubkey": crypto.public_key_pem(key.public_key())}
    assert conn.data_to_send() == b""
    assert (conn.state, conn.phase) == (State.AWAIT_CHALLENGE, Phase.HANDSHAKE)
    assert conn.receive_data(CHALLENGE) == []
    (auth,) = sent(conn)
    assert auth["type"] == "auth" and conn.server_id == SERVER_ID
    assert crypto.verify_auth(key.public_key(), b64decode(auth["signature"]), SERVER_ID, "alice", NONCE)
    assert conn.state is State.AWAIT_WELCOME
    assert conn.receive_data(welcome(key, new=False)) == [Welcomed(False)]
    assert (conn.state, conn.phase) == (State.OPEN, Phase.OPEN)


def test_byte_by_byte_gives_the_same_events(key: crypto.PrivateKey) -> None:
    stream = CHALLENGE + welcome(key) + encode_frame({"type": "presence", "name": "bob", "online": True})
    conn = ClientConnection("alice", key)
    events: list[ConnectionEvent] = []
    for i in range(len(stream)):
        events += conn.receive_data(stream[i : i + 1])
    assert events == [Welcomed(True), PresencePush("bob", True)]


def test_frames_of_other_types_before_welcome_are_ignored(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    early = {"type": "message", "from": "bob", "envelope": {"id": "a" * 32}}
    assert conn.receive_data(encode_frame({"type": "pong"}) + encode_frame({"type": "ack"})) == [
        Notice("bad_server_frame", "ack: ack 'id' must be 32 lowercase hex digits")
    ]
    assert conn.receive_data(encode_frame({"type": "users", "users": []}) + CHALLENGE) == []
    events = conn.receive_data(encode_frame(early) + encode_frame({"type": "from-the-future"}))
    assert [type(e) for e in events] == [Notice]  # a message before welcome is only validated
    assert conn.state is State.AWAIT_WELCOME


def test_challenge_that_is_not_base64_fails_the_connection(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    conn.data_to_send()
    bad = encode_frame({"type": "challenge", "server_id": "AAAAAAAAAAAAAAAAAAAAAA=", "nonce": "AAA"})
    assert conn.receive_data(bad + welcome(key)) == [
        Notice("bad_server_frame", "the server's challenge is not valid base64"),
        Dropped("bad challenge from the server"),
    ]
    assert conn.phase is Phase.FAILED and conn.data_to_send() == b""
    assert conn.receive_data(welcome(key)) == [] and conn.receive_eof() == []


def test_welcome_for_another_name_fails_and_another_fingerprint_is_reported(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    assert conn.receive_data(CHALLENGE + welcome(key, name="mallory")) == [
        Notice("bad_server_frame", "the server welcomed 'mallory', not us"),
        Dropped("welcome for another name"),
    ]
    other = ClientConnection("alice", key)
    assert other.receive_data(CHALLENGE + welcome(key, fingerprint="0" * 64)) == [
        Notice("bad_server_frame", "the server reports a different fingerprint for our key"),
        Welcomed(True),
    ]


def test_fatal_error_before_welcome_fails_at_once(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    error = encode_frame({"type": "error", "code": "name_taken", "message": "taken", "fatal": True})
    events = conn.receive_data(CHALLENGE + error + welcome(key))
    assert [type(e) for e in events] == [ServerError, Dropped]
    assert events[1] == Dropped("the server refused us: server error name_taken: taken")
    assert conn.fatal is not None and conn.fatal.code == "name_taken" and conn.phase is Phase.FAILED


def test_nonfatal_error_before_welcome_does_not(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    error = encode_frame({"type": "error", "code": "rate_limited", "message": "slow", "fatal": False, "rid": "r"})
    events = conn.receive_data(error + CHALLENGE + welcome(key))
    assert isinstance(events[0], ServerError) and events[0].error.rid == "r" and not events[0].error.fatal
    assert events[1:] == [Welcomed(True)]


def test_fatal_error_after_welcome_waits_for_the_close(key: crypto.PrivateKey) -> None:
    conn = opened(key)
    error = encode_frame({"type": "error", "code": "replaced", "message": "bye", "fatal": True})
    events = conn.receive_data(error + encode_frame({"type": "presence", "name": "bob", "online": False}))
    assert [type(e) for e in events] == [ServerError, PresencePush]
    assert conn.phase is Phase.OPEN
    assert conn.receive_eof() == [Dropped("the server closed the connection (replaced)")]
    assert conn.phase is Phase.CLOSED


def test_good_frames_before_a_framing_error_are_kept(key: crypto.PrivateKey) -> None:
    conn = opened(key)
    data = encode_frame({"type": "pong"}) + encode_frame({"type": "presence", "name": "bob", "online": True})
    events = conn.receive_data(data + struct.pack(">I", 9) + b"not json!")
    assert events[0] == PresencePush("bob", True)
    assert isinstance(events[1], Notice) and events[1].code == "bad_frame" and events[1].fatal
    assert events[2] == Dropped("bad frame from the server (bad_frame)")
    assert conn.phase is Phase.FAILED and conn.receive_data(data) == []


@pytest.mark.parametrize("prefix", [0, 2**31])
def test_length_prefix_alone_fails_the_connection(key: crypto.PrivateKey, prefix: int) -> None:
    conn = ClientConnection("alice", key)
    events = conn.receive_data(struct.pack(">I", prefix))
    code = "bad_frame" if prefix == 0 else "frame_too_large"
    assert [type(e) for e in events] == [Notice, Dropped] and events[1] == Dropped(f"bad frame from the server ({code})")


def test_frames_after_welcome(key: crypto.PrivateKey) -> None:
    conn = opened(key)
    pem = crypto.public_key_pem(key.public_key())
    frames = [
        {"type": "key", "name": "bob", "pubkey": pem, "fingerprint": "x", "rid": "lookup-1"},
        {"type": "users", "users": [{"name": "bob", "online": False}]},
        {"type": "ack", "id": "b" * 32, "to": "bob", "status": "delivered"},
        {"type": "message", "from": "bob", "server_ts": 5, "envelope": {"id": "c" * 32, "v": 9}},
        {"type": "message", "from": "bob", "server_ts": True, "envelope": {"id": "d" * 32}},
        {"type": "message", "from": "BOB", "envelope": {"id": "e" * 32}},
        {"type": "welcome", "name": "alice", "fingerprint": "x"},
        {"type": "pong"},
    ]
    events = conn.receive_data(b"".join(encode_frame(f) for f in frames))
    assert events[:5] == [
        KeyAnswer("bob", pem, "lookup-1"),
        UsersAnswer((("bob", False),), False, None),  # no "more": a server from before paging
        AckFrame("b" * 32, "bob", "delivered"),
        # answerable messages go to the inbox unvalidated: it rejects (and confirms) them
        MessageFrame("bob", {"id": "c" * 32, "v": 9}, 5),
        MessageFrame("bob", {"id": "d" * 32}, None),
    ]
    assert isinstance(events[5], Notice) and events[5].message.startswith("message: ")
    assert len(events) == 6  # a second welcome and pongs change nothing


def test_sending(key: crypto.PrivateKey) -> None:
    conn = ClientConnection("alice", key)
    conn.data_to_send()
    with pytest.raises(RuntimeError, match="before welcome"):
        conn.send({"type": "ping"})
    conn = opened(key)
    conn.send({"type": "ping"})
    assert sent(conn) == [{"type": "ping"}]
    conn.receive_eof()
    conn.send({"type": "ping"})  # the connection is gone: nowhere to go
    assert conn.data_to_send() == b""


def test_the_state_table_names_only_server_frames() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, allowed in TRANSITIONS.items():
        assert set(allowed) <= SERVER_TYPES, state
        assert "error" in allowed, state  # errors are heard in every state
