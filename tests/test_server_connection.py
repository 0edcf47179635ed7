"""The server's sans-I/O connection: the state table, and bytes in / events and bytes out, with no network."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat.crypto import sign_auth
from securechat.encoding import b64decode, b64encode
from securechat.errors import ProtocolError
from securechat.protocol import CLIENT_TYPES, encode_frame
from securechat.server import ServerConfig
from securechat.server import connection as connection_module
from securechat.server.connection import PREAUTH_BUFFER_LIMIT, ServerConnection
from securechat.server.events import HANDLED, NEED_DATA, ListUsers, Login, Received, Send
from securechat.server.phases import ENDED, SERVER_TRANSITIONS, Phase, check_transition
from tests.support.rawclient import envelope, identity_key, json_frame, msg_id
from tests.support.serverconn import SERVER_ID, Clock, auth_frame, connection, hello_frame, logged_in, sent

# --- the state table (docs/protocol.md section 5) ------------------------------------------

ALL_KINDS = sorted(CLIENT_TYPES | {"welcome", "message", "bogus", ""})


@pytest.mark.parametrize("state", list(Phase), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_state_and_frame_type(state: Phase, kind: str) -> None:
    allowed = SERVER_TRANSITIONS[state]
    if kind in allowed:
        assert check_transition(state, kind) is allowed[kind]
        return
    with pytest.raises(ProtocolError) as info:
        check_transition(state, kind)
    exc = info.value
    if state in ENDED:
        assert exc.fatal
    elif state is not Phase.OPEN:
        assert (exc.code, exc.fatal) == ("not_authenticated", True)
        assert state.value in str(exc) or "before authentication" in str(exc)
    elif kind in ("hello", "auth"):
        assert (exc.code, exc.fatal) == ("bad_request", False)
    else:
        assert (exc.code, exc.fatal) == ("unknown_type", False)


def test_handshake_path() -> None:
    state = Phase.AWAIT_HELLO
    for kind in ("hello", "auth", "ping", "lookup", "list", "send", "received"):
        state = check_transition(state, kind)
    assert state is Phase.OPEN


def test_every_client_type_is_reachable() -> None:
    reachable = {kind for row in SERVER_TRANSITIONS.values() for kind in row}
    assert reachable == CLIENT_TYPES


def test_ended_phases_accept_nothing() -> None:
    assert ENDED == {phase for phase, row in SERVER_TRANSITIONS.items() if not row}


@given(st.text(max_size=50))
def test_state_table_never_raises_anything_but_protocol_errors(kind: str) -> None:
    for state in Phase:
        try:
            check_transition(state, kind)
        except ProtocolError:
            pass


# --- the connection, fed byte strings ------------------------------------------------------


def test_the_handshake_in_bytes() -> None:
    conn = connection()
    conn.receive_data(hello_frame()[:7])  # any split of the bytes is the same frame
    assert conn.next_event() is NEED_DATA and conn.phase is Phase.AWAIT_HELLO
    conn.receive_data(hello_frame()[7:])
    assert conn.next_event() is HANDLED and conn.phase is Phase.AWAIT_AUTH
    conn.receive_data(auth_frame(conn) + json_frame({"type": "ping", "rid": "p"}))
    login = conn.next_event()
    assert isinstance(login, Login) and (login.name, login.rid) == ("alice", "a")
    # Nothing more is handled until the server answered the login.
    assert conn.next_event() is NEED_DATA and conn.data_to_send() == b""
    conn.accept_login(new=True)
    assert conn.phase is Phase.OPEN and conn.name == "alice"
    assert conn.next_event() is HANDLED
    welcome, pong = sent(conn)
    assert welcome == {"type": "welcome", "name": "alice", "fingerprint": login.fingerprint, "new": True, "rid": "a"}
    assert pong == {"type": "pong", "rid": "p"}
    assert conn.next_event() is NEED_DATA


def test_a_fatal_error_is_sent_and_then_everything_is_discarded() -> None:
    conn = connection()
    conn.receive_data(json_frame({"type": "list", "rid": "early"}) + json_frame({"type": "ping"}))
    assert conn.next_event() is HANDLED
    assert conn.phase is Phase.FAILED and conn.reason == "fatal not_authenticated"
    (error,) = sent(conn)
    assert (error["code"], error["fatal"], error["rid"]) == ("not_authenticated", True, "early")
    conn.receive_data(hello_frame())
    conn.send_data(b"anything")
    assert conn.next_event() is NEED_DATA and conn.data_to_send() == b""


def test_a_framing_error_after_good_frames_comes_after_their_answers() -> None:
    conn = logged_in()
    conn.receive_data(json_frame({"type": "ping", "rid": "1"}) + struct.pack(">I", 0))
    assert conn.next_event() is HANDLED
    assert conn.next_event() is NEED_DATA
    pong, error = sent(conn)
    assert pong == {"type": "pong", "rid": "1"} and (error["code"], error["fatal"]) == ("bad_frame", True)


def test_the_preauth_bound() -> None:
    conn = connection()
    conn.receive_data(struct.pack(">I", 1 << 20) + b"x" * PREAUTH_BUFFER_LIMIT)
    assert conn.next_event() is NEED_DATA and conn.phase is Phase.AWAIT_HELLO
    conn.receive_data(b"x" * 8)
    assert conn.next_event() is NEED_DATA and conn.phase is Phase.FAILED
    assert sent(conn)[0]["code"] == "frame_too_large"
    # After welcome the same bytes are only part of a frame.
    conn = logged_in()
    conn.receive_data(struct.pack(">I", 1 << 20) + b"x" * (PREAUTH_BUFFER_LIMIT + 8))
    assert conn.next_event() is NEED_DATA and conn.phase is Phase.OPEN


def test_events_after_login() -> None:
    conn = logged_in()
    frames = [
        {"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(1)), "rid": "s"},
        {"type": "send", "to": "bob", "envelope": envelope("carol", "bob", msg_id(2))},  # not from alice
        {"type": "send", "to": "alice", "envelope": envelope("alice", "alice", msg_id(3))},  # to herself
        {"type": "received", "id": msg_id(4), "from": "bob"},
        {"type": "list", "rid": "l"},
    ]
    conn.receive_data(b"".join(json_frame(f) for f in frames))
    event = conn.next_event()
    assert isinstance(event, Send) and (event.sender, event.to, event.rid) == ("alice", "bob", "s")
    assert conn.next_event() is HANDLED and conn.next_event() is HANDLED
    assert conn.next_event() == Received("bob", msg_id(4), None)
    assert conn.next_event() == ListUsers("", "", "l")
    assert [(f["code"], f["fatal"]) for f in sent(conn)] == [("bad_request", False)] * 2


def test_peeking_at_the_next_frame_leaves_the_usual_send_and_received_to_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """While sends are being stored the server peeks at the next frame's type (transport._pipeline).
    Before, the peek parsed it as JSON, so every usual send but the first of a read took the general
    path (a JSON parse, the checks, the envelope encoded again): a third of a node's CPU on Redis."""
    conn = logged_in()
    frames = [
        {"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(1)), "rid": "s1"},
        {"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(2)), "rid": "s2"},
        {"type": "received", "id": msg_id(3), "from": "bob"},
        {"type": "ping", "rid": "p"},
    ]
    conn.receive_data(b"".join(encode_frame(f) for f in frames))
    parsed: list[bytes] = []
    real = connection_module.decode_body
    monkeypatch.setattr(connection_module, "decode_body", lambda body: parsed.append(body) or real(body))
    kinds, events = [], []
    while (kind := conn.next_kind()) is not None:
        kinds.append(kind)
        events.append(conn.next_event())
    assert kinds == ["send", "send", "received", "ping"]
    assert [type(e).__name__ for e in events[:3]] == ["Send", "Send", "Received"]
    assert [e.rid for e in events[:2]] == ["s1", "s2"]  # type: ignore[union-attr]
    assert len(parsed) == 1 and b'"ping"' in parsed[0], parsed  # only the ping was parsed as JSON


def test_rate_limit_and_the_free_confirmation() -> None:
    conn = logged_in(burst=3, rate=1.0)  # its clock stands still: no refill
    conn.handed = {("bob", msg_id(1))}
    received = json_frame({"type": "received", "id": msg_id(1), "from": "bob"})
    conn.receive_data(json_frame({"type": "ping"}) * 4 + received)
    results = [conn.next_event() for _ in range(5)]
    assert results == [HANDLED] * 4 + [Received("bob", msg_id(1), None)]  # handed here: not charged
    # hello and auth took two of the three tokens.
    assert [f.get("code") for f in sent(conn)] == [None, "rate_limited", "rate_limited", "rate_limited"]
    assert conn.phase is Phase.OPEN


def test_internal_errors_are_generic_and_leave_the_session_open() -> None:
    conn = logged_in()
    conn.report(RuntimeError("secret detail"), "list", "x")
    (error,) = sent(conn)
    assert error == {"type": "error", "code": "internal", "message": "internal server error", "fatal": False, "rid": "x"}
    assert conn.phase is Phase.OPEN


def test_timeouts() -> None:
    clock = Clock()
    conn = connection(clock, handshake_timeout=10.0, idle_timeout=120.0)
    assert conn.overdue(clock.now + 9.9) is None
    assert conn.overdue(clock.now + 10.0) == "the handshake did not finish in time"
    conn = logged_in(idle_timeout=120.0)
    assert conn.overdue(conn.last_frame + 119.0) is None
    assert conn.overdue(conn.last_frame + 120.0) == "no frame for 120 seconds"
    conn.fail("timeout", "no frame for 120 seconds")
    assert conn.overdue(conn.last_frame + 1e6) is None


def test_refused() -> None:
    conn = connection()
    conn.refuse()
    assert conn.phase is Phase.REFUSED
    (error,) = sent(conn)
    assert (error["code"], error["fatal"]) == ("server_busy", True)
    conn.receive_data(hello_frame())
    assert conn.next_event() is NEED_DATA and conn.data_to_send() == b""


# --- over TLS: the auth input is bound to the server identity (docs/protocol.md 6.1) ---------------

IDENTITY = bytes(range(32))


def _auth_over(conn: ServerConnection, identity: bytes | None) -> None:
    (challenge,) = sent(conn)
    nonce, server_id = b64decode(challenge["nonce"]), b64decode(challenge["server_id"])
    signature = sign_auth(identity_key("alice"), server_id, "alice", nonce, identity)
    conn.receive_data(json_frame({"type": "auth", "signature": b64encode(signature)}))


@pytest.mark.parametrize(
    ("signed_for", "accepted"),
    [(IDENTITY, True), (None, False), (bytes(32), False)],
    ids=["this identity", "v1 (no identity)", "another server's identity"],
)
def test_a_tls_connection_accepts_only_auth_bound_to_its_identity(signed_for: bytes | None, accepted: bool) -> None:
    conn = ServerConnection(ServerConfig(db_path=Path("unused.db")), SERVER_ID, Clock(), identity=IDENTITY)
    conn.receive_data(hello_frame())
    assert conn.next_event() is HANDLED
    _auth_over(conn, signed_for)
    event = conn.next_event()
    if accepted:
        assert isinstance(event, Login)
    else:
        assert event is HANDLED and conn.phase is Phase.FAILED
        assert [(f["code"], f["fatal"]) for f in sent(conn)] == [("auth_failed", True)]


def test_a_plaintext_connection_refuses_a_v2_signature() -> None:
    conn = connection()
    conn.receive_data(hello_frame())
    assert conn.next_event() is HANDLED
    _auth_over(conn, IDENTITY)
    assert conn.next_event() is HANDLED and conn.phase is Phase.FAILED


def test_a_tls_client_hello_at_a_plaintext_connection_is_tls_unsupported() -> None:
    conn = connection()
    conn.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
    assert conn.next_event() is NEED_DATA and conn.phase is Phase.FAILED
    (error,) = sent(conn)
    assert (error["code"], error["fatal"]) == ("tls_unsupported", True)
    assert "--plaintext" in error["message"]
    # After a login the same prefix is just a frame that is too large.
    late = logged_in()
    late.receive_data(b"\x16\x03\x01\x02\x00")
    assert late.next_event() is NEED_DATA
    assert sent(late)[0]["code"] == "frame_too_large"
