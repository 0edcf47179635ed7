"""Tests of securechat.protocol: framing, the incremental decoder, schemas (the state table: test_server_connection.py)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from securechat import protocol
from securechat.errors import BadFrame, BadRequest, FrameError, FrameTooLarge, ProtocolError
from securechat.protocol import (
    CLIENT_TYPES,
    DEFAULT_MAX_FRAME,
    FATAL_CODES,
    NONFATAL_CODES,
    FrameDecoder,
    decode_body,
    encode_body,
    encode_frame,
    validate_client_frame,
    validate_envelope_shape,
    validate_server_frame,
)

ENV_ID = "0123456789abcdef0123456789abcdef"


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def good_envelope(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "from": "alice",
        "to": "bob",
        "id": ENV_ID,
        "ts": 1_700_000_000_000,
        "key": "AAAA",
        "nonce": "AAAAAAAAAAAAAAAA",
        "ct": "AAAAAAAAAAAAAAAAAAAAAA==",
        "sig": "AAAA",
    }
    env.update(changes)
    return env


# --- codec: byte-literal round trips ---------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "wire"),
    [
        ({"type": "ping"}, b"\x00\x00\x00\x0f" + b'{"type":"ping"}'),
        ({"type": "pong"}, b"\x00\x00\x00\x0f" + b'{"type":"pong"}'),
        (
            {"type": "lookup", "name": "bob", "rid": "7"},
            b"\x00\x00\x00\x28" + b'{"type":"lookup","name":"bob","rid":"7"}',
        ),
        # Non-ASCII text goes out as UTF-8, not \u escapes; the prefix counts bytes.
        ({"type": "x", "t": "é"}, b"\x00\x00\x00\x15" + b'{"type":"x","t":"\xc3\xa9"}'),
        ({"type": "list"}, b"\x00\x00\x00\x0f" + b'{"type":"list"}'),
    ],
)
def test_encode_frame_bytes_and_back(obj: dict[str, Any], wire: bytes) -> None:
    assert encode_frame(obj) == wire
    assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4
    assert FrameDecoder().feed(wire) == [obj]


def test_decode_body_accepts_whitespace_and_unknown_fields() -> None:
    assert decode_body(b' { "type" : "ping" , "future" : [1, 2.5, null, true] } ') == {
        "type": "ping",
        "future": [1, 2.5, None, True],
    }


def test_encode_body_is_compact_utf8() -> None:
    assert encode_body({"type": "a", "b": [1, 2]}) == b'{"type":"a","b":[1,2]}'


def test_encode_body_refuses_non_finite_numbers() -> None:
    # We must never emit what our own decoder (and any strict peer) rejects.
    with pytest.raises(ValueError):
        encode_body({"type": "x", "n": float("nan")})


def test_several_frames_in_one_feed_come_out_in_order() -> None:
    data = encode_frame({"type": "a"}) + encode_frame({"type": "b"}) + encode_frame({"type": "c"})
    assert [f["type"] for f in FrameDecoder().feed(data)] == ["a", "b", "c"]


# --- FrameDecoder: lengths ------------------------------------------------------------


def test_length_zero_is_bad_frame() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameError) as info:
        dec.feed(b"\x00\x00\x00\x00")
    assert info.value.code == "bad_frame"
    assert info.value.fatal


@pytest.mark.parametrize("size", [DEFAULT_MAX_FRAME + 1, 2**31, 2**32 - 1])
def test_oversized_prefix_fails_on_the_header_alone(size: int) -> None:
    dec = FrameDecoder()
    # The header alone must be enough: nothing of the body has arrived yet.
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(struct.pack(">I", size))
    assert info.value.code == "frame_too_large"
    assert info.value.fatal
    assert info.value.size == size
    assert info.value.max_frame == DEFAULT_MAX_FRAME
    assert dec.buffered == 0


def test_oversized_prefix_split_into_single_bytes() -> None:
    dec = FrameDecoder()
    header = struct.pack(">I", 2**31)
    for byte in header[:3]:
        assert dec.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLarge):
        dec.feed(header[3:])
    assert dec.buffered == 0


def test_max_frame_is_inclusive() -> None:
    body = b'{"type":"x","p":"aa"}'
    dec = FrameDecoder(max_frame=len(body))
    assert dec.feed(frame_of(body)) == [json.loads(body)]
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", len(body) + 1))


def test_custom_max_frame_checked_before_body() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 101) + b"{" * 50)
    assert dec.buffered == 0


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=0)


def test_whole_frame_split_into_single_bytes() -> None:
    wire = encode_frame({"type": "send", "to": "bob", "envelope": good_envelope()})
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i : i + 1])
        assert dec.in_frame == (i != len(wire) - 1)
    assert out == [{"type": "send", "to": "bob", "envelope": good_envelope()}]
    assert dec.buffered == 0


def test_partial_body_is_buffered_then_completed() -> None:
    wire = encode_frame({"type": "ping"})
    dec = FrameDecoder()
    assert dec.feed(wire[:7]) == []
    assert dec.in_frame
    assert dec.feed(wire[7:]) == [{"type": "ping"}]
    assert not dec.in_frame


# --- FrameDecoder / decode_body: bodies ------------------------------------------------

BAD_BODIES = {
    "invalid utf-8": b'{"type":"\xff"}',
    "overlong utf-8": b'{"type":"\xc0\xaf"}',
    "utf-8 encoded surrogate": b'{"type":"\xed\xa0\x80"}',
    "invalid json": b'{"type":"ping"',
    "trailing data": b'{"type":"ping"} {}',
    "top level array": b'[{"type":"ping"}]',
    "top level string": b'"ping"',
    "top level number": b"1",
    "top level null": b"null",
    "missing type": b'{"name":"bob"}',
    "type null": b'{"type":null}',
    "type number": b'{"type":1}',
    "type list": b'{"type":["ping"]}',
    "type object": b'{"type":{}}',
    "duplicate keys": b'{"type":"ping","type":"list"}',
    "duplicate nested keys": b'{"type":"ping","x":{"a":1,"a":2}}',
    "NaN": b'{"type":"ping","x":NaN}',
    "Infinity": b'{"type":"ping","x":Infinity}',
    "-Infinity": b'{"type":"ping","x":-Infinity}',
    "overflowing float": b'{"type":"ping","x":1e400}',
    "overflowing negative float": b'{"type":"ping","x":-1e999}',
    "huge int": b'{"type":"ping","x":' + b"9" * 5000 + b"}",
    "lone high surrogate": b'{"type":"ping","x":"\\ud800"}',
    "lone low surrogate": b'{"type":"ping","x":"\\uDC00"}',
    "lone surrogate in a key": b'{"type":"ping","\\ud83d":1}',
    "lone surrogate in type": b'{"type":"\\ud800"}',
    "surrogate nested in a list": b'{"type":"ping","x":[[["\\udfff"]]]}',
    "reversed surrogate pair": b'{"type":"ping","x":"\\ude00\\ud83d"}',
    "bom": b'\xef\xbb\xbf{"type":"ping"}',
    "single quotes": b"{'type':'ping'}",
    "deep nesting": b"[" * 500_000 + b"]" * 500_000,
    "deep nesting inside object": b'{"type":"ping","x":' + b"[" * 300_000 + b"]" * 300_000 + b"}",
    "deep objects": b'{"type":"ping","x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_body_is_bad_frame(body: bytes) -> None:
    with pytest.raises(BadFrame) as info:
        decode_body(body)
    assert info.value.code == "bad_frame"
    assert info.value.fatal
    # Through the decoder too, with a limit big enough for the body.
    dec = FrameDecoder(max_frame=max(len(body), 1))
    with pytest.raises(BadFrame):
        dec.feed(frame_of(body))


def test_deep_nesting_of_about_one_mebibyte_is_bad_frame() -> None:
    body = b"[" * (DEFAULT_MAX_FRAME // 2) + b"]" * (DEFAULT_MAX_FRAME // 2)
    assert len(body) == DEFAULT_MAX_FRAME
    dec = FrameDecoder()
    with pytest.raises(BadFrame):  # never a RecursionError
        dec.feed(frame_of(body))


def test_valid_surrogate_pair_is_fine() -> None:
    assert decode_body(b'{"type":"ping","x":"\\ud83d\\ude00"}')["x"] == "\U0001f600"


def test_escaped_backslash_before_ud_is_not_a_surrogate() -> None:
    assert decode_body(b'{"type":"ping","x":"\\\\ud800"}')["x"] == "\\ud800"


def test_int_just_under_digit_limit_is_fine() -> None:
    assert decode_body(b'{"type":"ping","x":' + b"9" * 4000 + b"}")["x"] == int("9" * 4000)


def test_decoder_stays_failed_after_an_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(BadFrame):
        dec.feed(frame_of(b"not json"))
    assert dec.buffered == 0
    for _ in range(2):
        with pytest.raises(BadFrame):
            dec.feed(encode_frame({"type": "ping"}))


def test_frames_before_an_error_are_returned_then_the_error_is_raised() -> None:
    dec = FrameDecoder()
    good = encode_frame({"type": "ping"})
    assert dec.feed(good + struct.pack(">I", 2**31)) == [{"type": "ping"}]
    with pytest.raises(FrameTooLarge):
        dec.feed(good)
    with pytest.raises(FrameTooLarge):
        dec.feed(b"")


# --- hypothesis: the codec ---------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
frame_objects = st.builds(
    lambda kind, extra: {**extra, "type": kind},
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


@given(st.lists(frame_objects, min_size=1, max_size=6), st.data())
def test_any_split_of_a_stream_decodes_to_the_same_frames(
    frames: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    dec = FrameDecoder()
    out: list[dict[str, Any]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[start:cut])
        start = cut
    assert out == frames
    assert not dec.in_frame


@given(frame_objects)
def test_encode_then_decode_body_is_identity(frame: dict[str, Any]) -> None:
    assert decode_body(encode_body(frame)) == frame


@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(1, 256))
def test_random_bytes_give_frames_or_protocol_errors_only(chunks: list[bytes], max_frame: int) -> None:
    dec = FrameDecoder(max_frame=max_frame)
    for chunk in chunks:
        try:
            frames = dec.feed(chunk)
        except ProtocolError as exc:
            assert isinstance(exc, FrameError) and exc.fatal
            return
        for frame in frames:
            assert isinstance(frame, dict) and isinstance(frame["type"], str)


# --- schemas ---------------------------------------------------------------------------------

random_frames = st.builds(
    lambda kind, extra: {**extra, "type": kind} if kind is not None else extra,
    st.one_of(
        st.none(),
        st.sampled_from(sorted(CLIENT_TYPES | protocol.SERVER_TYPES)),
        st.text(max_size=8),
        json_values,
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "version", "name", "pubkey", "signature", "to", "envelope", "id", "from", "rid",
                "users", "online", "server_id", "nonce", "fingerprint", "status", "code",
                "message", "fatal", "server_ts", "x",
            ]
        ),
        json_values
        | st.builds(lambda changes: good_envelope(**changes), st.dictionaries(
            st.sampled_from(["v", "from", "to", "id", "ts", "key", "nonce", "ct", "sig"]), json_values
        ))
        | st.lists(st.fixed_dictionaries({"name": json_values, "online": json_values}), max_size=3),
        max_size=6,
    ),
)


@given(random_frames)
def test_validate_client_frame_raises_only_protocol_errors(frame: dict[str, Any]) -> None:
    try:
        validate_client_frame(frame)
    except ProtocolError as exc:
        assert exc.code in FATAL_CODES | NONFATAL_CODES


@given(random_frames)
def test_validate_server_frame_raises_only_protocol_errors(frame: dict[str, Any]) -> None:
    try:
        validate_server_frame(frame)
    except ProtocolError as exc:
        assert exc.code in FATAL_CODES | NONFATAL_CODES


@given(st.one_of(json_values, st.builds(lambda c: good_envelope(**c), st.dictionaries(st.text(max_size=4), json_values))))
def test_validate_envelope_shape_raises_only_bad_request(envelope: Any) -> None:
    try:
        validate_envelope_shape(envelope)
    except BadRequest:
        pass


VALID_CLIENT = [
    {"type": "hello", "version": 1, "name": "alice", "pubkey": "-----BEGIN PUBLIC KEY-----\n"},
    {"type": "auth", "signature": "AAAA"},
    {"type": "lookup", "name": "bob"},
    {"type": "list"},
    {"type": "ping", "rid": "r1"},
    {"type": "send", "to": "bob", "envelope": good_envelope()},
    {"type": "received", "id": ENV_ID, "from": "alice"},
    {"type": "ping", "future_field": {"anything": [1]}},
]


@pytest.mark.parametrize("frame", VALID_CLIENT, ids=lambda f: f["type"])
def test_valid_client_frames_pass(frame: dict[str, Any]) -> None:
    validate_client_frame(frame)


INVALID_CLIENT = [
    ({"type": "hello", "version": 2, "name": "alice", "pubkey": "x"}, "version_unsupported", True),
    ({"type": "hello", "version": "1", "name": "alice", "pubkey": "x"}, "version_unsupported", True),
    ({"type": "hello", "version": True, "name": "alice", "pubkey": "x"}, "version_unsupported", True),
    ({"type": "hello", "version": 1, "name": "Alice", "pubkey": "x"}, "invalid_name", True),
    ({"type": "hello", "version": 1, "name": "a" * 33, "pubkey": "x"}, "invalid_name", True),
    ({"type": "hello", "version": 1, "name": "_alice", "pubkey": "x"}, "invalid_name", True),
    ({"type": "hello", "version": 1, "name": "alice\n", "pubkey": "x"}, "invalid_name", True),
    ({"type": "hello", "version": 1, "name": "alice"}, "bad_key", True),
    ({"type": "hello", "version": 1, "name": "alice", "pubkey": "x" * 20_000}, "bad_key", True),
    ({"type": "auth"}, "auth_failed", True),
    ({"type": "auth", "signature": 5}, "auth_failed", True),
    ({"type": "lookup", "name": "B"}, "invalid_name", True),
    ({"type": "send", "to": "B", "envelope": good_envelope()}, "invalid_name", True),
    ({"type": "send", "to": "bob", "envelope": good_envelope(to="carol")}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": "x"}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(id=ENV_ID.upper())}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(ts=-1)}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(ts=2**53)}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(ts=1.0)}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(v=True)}, "bad_request", False),
    ({"type": "send", "to": "bob", "envelope": good_envelope(ct=None)}, "bad_request", False),
    ({"type": "received", "id": "x", "from": "alice"}, "bad_request", False),
    ({"type": "received", "id": ENV_ID, "from": 7}, "bad_request", False),
    ({"type": "whatever"}, "unknown_type", False),
]


@pytest.mark.parametrize(("frame", "code", "fatal"), INVALID_CLIENT)
def test_invalid_client_frames_raise_the_right_code(frame: dict[str, Any], code: str, fatal: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_client_frame(frame)
    assert (info.value.code, info.value.fatal) == (code, fatal)


def test_envelope_ts_bounds() -> None:
    validate_envelope_shape(good_envelope(ts=0))
    validate_envelope_shape(good_envelope(ts=2**53 - 1))


def test_request_id() -> None:
    assert protocol.request_id({"rid": "a" * 64}) == "a" * 64
    assert protocol.request_id({"rid": "a" * 65}) is None
    assert protocol.request_id({"rid": 5}) is None
    assert protocol.request_id({}) is None


def test_error_frame_copies_rid_and_fatal() -> None:
    exc = FrameTooLarge(2**31, DEFAULT_MAX_FRAME)
    frame = protocol.error_from_exception(exc, rid="r")
    assert frame["code"] == "frame_too_large" and frame["fatal"] is True and frame["rid"] == "r"
    validate_server_frame(frame)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "challenge", "server_id": "AAAA", "nonce": "AAAA"},
        {"type": "welcome", "name": "alice", "fingerprint": "ab" * 32, "new": True},
        {"type": "key", "name": "bob", "pubkey": "PEM", "fingerprint": "ab" * 32},
        {"type": "users", "users": [{"name": "bob", "online": True}]},
        {"type": "presence", "name": "bob", "online": False},
        {"type": "message", "from": "alice", "server_ts": 1, "envelope": good_envelope()},
        {"type": "ack", "id": ENV_ID, "to": "bob", "status": "queued"},
        {"type": "error", "code": "internal", "message": "x", "fatal": False},
        {"type": "pong"},
        {"type": "from-the-future"},
    ],
    ids=lambda f: f["type"],
)
def test_valid_server_frames_pass(frame: dict[str, Any]) -> None:
    validate_server_frame(frame)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "challenge", "server_id": 1, "nonce": "AAAA"},
        {"type": "welcome", "name": "Alice", "fingerprint": "x"},
        {"type": "users", "users": [{"name": "bob", "online": 1}]},
        {"type": "users", "users": {}},
        {"type": "presence", "name": "bob"},
        {"type": "message", "from": "alice", "server_ts": "1", "envelope": good_envelope()},
        {"type": "ack", "id": ENV_ID, "to": "bob", "status": "lost"},
        {"type": "error", "code": "internal", "message": "x", "fatal": "yes"},
    ],
    ids=lambda f: f["type"],
)
def test_invalid_server_frames_raise_bad_request(frame: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        validate_server_frame(frame)


@pytest.mark.parametrize("frame", [{}, {"type": 1}, {"type": None}, {"type": {}}, {"type": [1]}])
def test_validators_reject_a_missing_or_non_string_type(frame: dict[str, Any]) -> None:
    with pytest.raises(BadFrame):
        validate_client_frame(frame)
    with pytest.raises(BadFrame):
        validate_server_frame(frame)
