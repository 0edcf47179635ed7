"""The relay's bytes-level fast path against the general path, and what the server forwards.

Two properties, over ``send`` and ``received`` bodies of every shape (the
usual compact one, other key orders, whitespace, escapes, extra fields, bad
values, random mutations):

* ``read_send`` / ``read_received`` either decline (None) or give exactly what
  the general path gives: :func:`decode_body`, the field checks, ``request_id``
  and, for ``send``, the envelope's value;
* whatever a logged-in server connection turns into a ``Send`` event, the
  ``message`` frame built from it passes the recipient's strict decoder, the
  client's frame checks and the envelope's structure check, and carries the
  envelope the sender wrote.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat import jsoncodec
from securechat.envelope import MAX_B64_FIELD, check_envelope
from securechat.errors import ProtocolError
from securechat.protocol import (
    check_received,
    check_send,
    decode_body,
    encode_body,
    message_frame,
    request_id,
    validate_server_frame,
)
from securechat.relayframes import read_received, read_send, send_fields
from securechat.server.events import NEED_DATA, Send
from tests.support.serverconn import logged_in
from tests.support.values import same

b64 = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
names = st.sampled_from(["alice", "bob", "carol", "a-b_c", "0", "z" * 32]) | st.text(max_size=5)
ids = st.sampled_from(["0" * 32, "f" * 32, "0123456789abcdef" * 2]) | st.text(max_size=33)
rids = (
    st.none()
    | st.text(max_size=3)
    | st.text(string.ascii_letters, min_size=64, max_size=65)  # at the 64-character bound
    | st.sampled_from(["f" * 32, 'a"b', "\\", "é", "\x00", "\x7f"])
)
hex_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
valid_names = st.sampled_from(["alice", "bob", "carol", "a-b_c", "0", "z" * 32])
# Every field right (the fast path's case), or each field anything (the general path's).
good_envelopes = st.fixed_dictionaries(
    {
        "v": st.just(1) | st.integers(-5, 5),
        "from": st.just("alice") | valid_names,
        "to": st.just("bob") | valid_names,
        "id": hex_ids,
        "ts": st.integers(0, 2**53 - 1),
        "key": b64,
        "nonce": b64,
        "ct": b64,
        "sig": b64,
    }
)
wild_envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 2, True, "1"]),
        "from": st.sampled_from(["alice"]) | names,
        "to": st.sampled_from(["bob"]) | names,
        "id": ids,
        "ts": st.sampled_from([0, 1, 2**53 - 1, 2**53, -1, 1.5]) | st.integers(0, 2**60),
        "key": b64,
        "nonce": b64 | st.text(max_size=4),
        "ct": b64,
        "sig": b64 | st.integers(),
    },
    optional={"extra": st.none() | st.text(max_size=4) | st.lists(st.integers(), max_size=2)},
)
envelopes = good_envelopes | good_envelopes | wild_envelopes
# Put into the envelope right after its brace: what a lenient parser would let through.
ENVELOPE_TAMPERING = [b'"v":1,', b'"id":"x",', b'"x":NaN,', b'"x":1e400,', b'"x":"\\ud800",', b'"x":' + b"[" * 300 + b"]" * 300 + b","]


@st.composite
def send_bodies(draw: st.DrawFn) -> bytes:
    """Half the time the usual shape (only the values vary), else any shape, tampered with or mutated."""
    envelope = draw(envelopes)
    to = draw(st.sampled_from([envelope["to"], envelope["to"], "bob"]) | names)
    frame: dict[str, Any] = {"type": "send", "to": to, "envelope": envelope}
    rid = draw(rids)
    if rid is not None:
        frame["rid"] = rid
    if draw(st.booleans()):
        return tamper(draw, encode_body(frame), chance=3)
    if draw(st.booleans()):
        frame["x"] = draw(st.integers())
    if draw(st.booleans()):
        frame = dict(draw(st.permutations(list(frame.items()))))
    style = draw(st.sampled_from(["compact", "spaced", "ascii"]))
    if style == "compact":
        body = encode_body(frame)
    else:
        body = json.dumps(frame, ensure_ascii=style == "ascii").encode()
    return mutate(draw, tamper(draw, body, chance=2))


def tamper(draw: st.DrawFn, body: bytes, chance: int) -> bytes:
    """One time in ``chance``, what a lenient parser would let through, at the start of the envelope."""
    if draw(st.integers(1, chance)) > 1:
        return body
    return body.replace(b'"envelope":{', b'"envelope":{' + draw(st.sampled_from(ENVELOPE_TAMPERING)), 1)


def mutate(draw: st.DrawFn, body: bytes) -> bytes:
    """Sometimes a few bytes changed, or a piece of JSON put in (a duplicate key, an escape, a brace)."""
    data = bytearray(body)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.sampled_from([b"}", b"{", b'"', b"\\", b",", b'"to":"bob",', b'"id":"x",', b"\\u0061", b" ", b"\xff", b"1e400"]))
        data[at : at + draw(st.integers(0, 2))] = piece
    return bytes(data)


def general_send(body: bytes) -> tuple[Any, ...]:
    frame = decode_body(body)
    if frame["type"] != "send":
        raise ProtocolError("not a send")
    check_send(frame)
    fields = send_fields(frame, request_id(frame))
    envelope = frame["envelope"]
    assert (fields.sender, fields.msg_id) == (envelope["from"], envelope["id"])
    return fields.to, envelope, fields.rid


@given(send_bodies())
def test_read_send_declines_or_agrees_with_the_general_path(body: bytes) -> None:
    fast = read_send(body)
    if fast is None:
        return
    to, envelope, rid = general_send(body)  # must not raise: the fast path accepted
    assert (fast.to, fast.rid, fast.sender, fast.msg_id) == (to, rid, envelope["from"], envelope["id"])
    assert same(jsoncodec.loads(fast.envelope_json), envelope)


def test_the_usual_send_takes_the_fast_path() -> None:
    envelope = {"v": 1, "from": "alice", "to": "bob", "id": "f" * 32, "ts": 5, "key": "AA==", "nonce": "", "ct": "", "sig": ""}
    for rid in (None, "f" * 32, "x y!", "r" * 64):
        frame = {"type": "send", "to": "bob", "envelope": envelope} | ({} if rid is None else {"rid": rid})
        fast = read_send(encode_body(frame))
        assert fast is not None and (fast.to, fast.rid, fast.sender, fast.msg_id) == ("bob", rid, "alice", "f" * 32)
        assert fast.envelope_json == encode_body(envelope)
    # A longer rid is ignored (docs/protocol.md section 2): the general path says so.
    for rid in ("r" * 65, 'a"b', "é"):
        body = encode_body({"type": "send", "to": "bob", "envelope": envelope, "rid": rid})
        assert read_send(body) is None or read_send(body) == send_fields(decode_body(body), request_id(decode_body(body)))
    assert request_id({"rid": "r" * 65}) is None


def test_the_fast_path_declines_at_each_bound_of_the_usual_shape() -> None:
    """Values the general path refuses, in the usual shape: the fast path must leave each to it."""
    good = {"v": 1, "from": "alice", "to": "bob", "id": "f" * 32, "ts": 2**53 - 1, "key": "AA==", "nonce": "", "ct": "", "sig": ""}
    assert read_send(encode_body({"type": "send", "to": "bob", "envelope": good})) is not None
    for change in ({"ts": 2**53}, {"to": "carol"}, {"id": "F" * 32}, {"from": "Alice"}, {"v": True}, {"key": "A" * (MAX_B64_FIELD + 1)}):
        body = encode_body({"type": "send", "to": "bob", "envelope": good | change})
        assert read_send(body) is None, change
        with pytest.raises(ProtocolError):
            general_send(body)


@st.composite
def received_bodies(draw: st.DrawFn) -> bytes:
    frame: dict[str, Any] = {"type": "received", "id": draw(ids), "from": draw(names)}
    rid = draw(rids)
    if rid is not None:
        frame["rid"] = rid
    if draw(st.booleans()):
        frame = dict(draw(st.permutations(list(frame.items()))))
    return mutate(draw, encode_body(frame) if draw(st.booleans()) else json.dumps(frame).encode())


@given(received_bodies())
def test_read_received_declines_or_agrees_with_the_general_path(body: bytes) -> None:
    fast = read_received(body)
    if fast is None:
        return
    frame = decode_body(body)
    assert frame["type"] == "received"
    check_received(frame)
    assert fast == (frame["from"], frame["id"], request_id(frame))


def client_reads(wire: bytes) -> dict[str, Any]:
    """What a recipient does with a ``message`` frame before it opens the envelope."""
    frame = decode_body(wire[4:])
    assert int.from_bytes(wire[:4], "big") == len(wire) - 4
    validate_server_frame(frame)
    check_envelope(frame["envelope"])
    return frame


@given(st.lists(send_bodies(), min_size=1, max_size=4))
def test_what_the_server_forwards_passes_the_recipients_checks(bodies: list[bytes]) -> None:
    conn = logged_in("alice", rate=1e9, burst=10**9)
    conn.receive_data(b"".join(len(b).to_bytes(4, "big") + b for b in bodies))
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, Send):
            events.append(event)
    for event in events:
        frame = client_reads(message_frame(event.sender, 1795600000000, event.envelope))
        assert frame["from"] == "alice" == frame["envelope"]["from"]
        # The envelope the sender wrote (by the general path's reading of its frame).
        sent = [b for b in bodies if _sends(b, event.msg_id)]
        assert any(same(frame["envelope"], general_send(b)[1]) for b in sent)


def _sends(body: bytes, msg_id: str) -> bool:
    try:
        return general_send(body)[1]["id"] == msg_id
    except (ProtocolError, KeyError, TypeError):
        return False
