"""Room envelopes (securechat/rooms/sealing.py, rooms/envelope.py): sealing, opening, and every tamper.

A member opens what was sealed to its verified state; a ghost member, a
stripped, added or swapped key, a sender outside the state, a changed field
or a flipped bit are each rejected with the reason of docs/protocol.md 11.7.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given

from securechat import crypto
from securechat.encoding import b64decode, b64encode
from securechat.errors import EnvelopeRejected
from securechat.rooms.envelope import check_room_envelope, parse_room_envelope
from securechat.rooms.log import RoomState
from securechat.rooms.sealing import (
    open_room_envelope,
    room_header,
    room_signed_bytes,
    seal_room,
    seal_room_from_parts,
)
from tests.support.rooms import key_of
from tests.support.strategies import anything

MEMBERS = ("alice", "bob", "carol")
STATE = RoomState("#ops", "invite", 4, bytes(range(32)), frozenset(MEMBERS), frozenset({"alice"}))


def sealed(sender: str = "alice", state: RoomState = STATE, text: str = "hi all") -> dict[str, Any]:
    member_keys = {name: key_of(name).public_key() for name in state.members}
    return seal_room(key_of(sender), member_keys, state, sender, text)


def sealed_v1(sender: str = "alice", text: str = "hi all") -> dict[str, Any]:
    """The old form (docs/protocol.md 11.5): the wrapped keys' bytes signed, the label -v1."""
    member_keys = {name: key_of(name).public_key() for name in STATE.members}
    return seal_room_from_parts(
        key_of(sender), member_keys, STATE, sender, text, msg_id=crypto.new_message_id(), ts=1_767_225_600_000,
        aes_key=bytes(range(32)), nonce=bytes(12), version=1,
    )


def open_as(me: str, env: object, members: frozenset[str] = STATE.members, signer: str = "alice",
            **frame: str | None) -> crypto.OpenedMessage:
    """Open as ``me`` with ``signer``'s pinned key; ``room``/``sender`` are the frame's (None: a pasted payload)."""
    return open_room_envelope(
        key_of(me), me, key_of(signer).public_key(), env, members,
        frame.get("room", "#ops"), frame.get("sender", signer),
    )


def reason(me: str, env: object, **kwargs: Any) -> str:
    with pytest.raises(EnvelopeRejected) as info:
        open_as(me, env, **kwargs)
    return info.value.reason


@pytest.mark.parametrize("me", MEMBERS)
def test_every_member_opens_it_the_sender_too(me: str) -> None:
    env = sealed()
    opened = open_as(me, env)
    assert (opened.text, opened.sender, opened.recipient) == ("hi all", "alice", "#ops")
    assert opened.msg_id == env["id"] and opened.ts == env["ts"]
    # Pasted payloads carry no frame: the same checks without checks 2 and 3.
    again = open_as(me, crypto.decode_payload(crypto.encode_payload(env)), room=None, sender=None)
    assert again.text == "hi all"


def test_one_key_one_nonce_per_message_and_keys_for_exactly_the_members() -> None:
    one, two = sealed(), sealed()
    assert sorted(one["keys"]) == sorted(MEMBERS)
    assert one["nonce"] != two["nonce"] and one["id"] != two["id"]
    assert one["keys"]["bob"] != two["keys"]["bob"]
    assert (one["seq"], one["head"]) == (STATE.seq, STATE.head.hex())


def test_a_ghost_key_is_member_mismatch() -> None:
    env = sealed()
    env["keys"]["mallory"] = env["keys"]["carol"]
    assert reason("bob", env) == "member_mismatch"


def test_a_stripped_key_is_member_mismatch() -> None:
    env = sealed()
    del env["keys"]["carol"]
    assert reason("bob", env) == "member_mismatch"


def test_sealed_for_another_member_set_is_member_mismatch() -> None:
    # An honest signature over keys for a state with a ghost: the set, not the signature, catches it.
    ghost = RoomState("#ops", "invite", 4, STATE.head, frozenset({*MEMBERS, "mallory"}), frozenset({"alice"}))
    assert reason("bob", sealed(state=ghost)) == "member_mismatch"


def test_swapped_wrapped_keys_are_bad_signature() -> None:
    env = sealed()
    env["keys"]["bob"], env["keys"]["carol"] = env["keys"]["carol"], env["keys"]["bob"]
    assert reason("bob", env) == "bad_signature"


def test_a_key_replaced_by_one_the_server_wrapped_is_bad_signature() -> None:
    env = sealed()
    env["keys"]["bob"] = b64encode(crypto.oaep_wrap(key_of("bob").public_key(), bytes(32)))
    assert reason("bob", env) == "bad_signature"


def test_a_sender_outside_the_state_is_not_member() -> None:
    outside = RoomState("#ops", "invite", 4, STATE.head, frozenset({*MEMBERS, "mallory"}), frozenset())
    env = sealed(sender="mallory", state=outside)
    for key in list(env["keys"]):
        if key not in MEMBERS:
            del env["keys"][key]
    assert reason("bob", env, signer="mallory") == "not_member"


def test_a_recipient_outside_the_state_is_bad_recipient() -> None:
    env = sealed()
    assert reason("dave", env) == "bad_recipient"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("v", 3, "bad_version"),
        ("v", 1, "bad_signature"),
        ("room", "#dev", "room_mismatch"),
        ("from", "bob", "sender_mismatch"),
        ("id", "0" * 32, "bad_signature"),
        ("ts", 1, "bad_signature"),
        ("seq", 3, "bad_signature"),
        ("head", "ff" * 32, "bad_signature"),
        ("id", "0" * 31, "malformed"),
        ("seq", -1, "malformed"),
        ("head", "FF" * 32, "malformed"),
        ("keys", {}, "malformed"),
        ("keys", [], "malformed"),
        ("v", True, "malformed"),
        ("room", "ops", "malformed"),
    ],
)
def test_replacing_a_field(field: str, value: object, expected: str) -> None:
    env = sealed()
    env[field] = value
    assert reason("bob", env) == expected


def test_the_frame_room_and_sender_are_compared() -> None:
    env = sealed()
    assert reason("bob", env, room="#dev") == "room_mismatch"
    assert reason("bob", env, sender="carol") == "sender_mismatch"


@pytest.mark.parametrize("field", ["nonce", "ct", "sig", "keys.bob", "keys.alice"])
def test_flipping_a_bit_in_a_binary_field_is_bad_signature(field: str) -> None:
    env = sealed()
    holder, key = (env["keys"], field.split(".")[1]) if field.startswith("keys.") else (env, field)
    raw = bytearray(b64decode(holder[key]))
    raw[len(raw) // 2] ^= 0x01
    holder[key] = b64encode(bytes(raw))
    assert reason("bob", env) == "bad_signature"


def test_claiming_another_members_name_is_bad_signature() -> None:
    env = {**sealed(sender="alice"), "from": "carol"}
    assert reason("bob", env, signer="carol") == "bad_signature"


def test_a_one_to_one_signature_is_not_a_room_signature() -> None:
    """Labels keep the constructions apart: a one-to-one envelope's bytes never verify as a room's."""
    env = sealed()
    parsed = parse_room_envelope(env)
    signed = room_signed_bytes(
        crypto.envelope_header("alice", "bob", env["id"], env["ts"]), parsed.signed_keys(), parsed.nonce,
        parsed.ciphertext,
    )
    assert not crypto.pss_verify(key_of("alice").public_key(), parsed.signature, signed)


def test_the_wrapped_key_of_another_member_does_not_unwrap() -> None:
    env = sealed()
    env_for_bob = copy.deepcopy(env)
    assert open_as("bob", env_for_bob).text == "hi all"
    with pytest.raises(EnvelopeRejected) as info:
        crypto.open_content(key_of("bob"), b64decode(env["keys"]["carol"]), b64decode(env["nonce"]),
                            b64decode(env["ct"]), b"")
    assert info.value.reason == "unwrap_failed"


def test_seal_refuses_keys_that_are_not_the_states_members() -> None:
    keys = {name: key_of(name).public_key() for name in ("alice", "bob")}
    with pytest.raises(ValueError, match="exactly the members"):
        seal_room(key_of("alice"), keys, STATE, "alice", "x")


def test_size_of_a_hundred_member_message_under_64_kib() -> None:
    """docs/protocol.md 11.5: 100 members with RSA-3072 keys stay under 64 KiB on the wire."""
    from securechat.protocol import encode_frame

    key3072 = crypto.generate_private_key(3072)
    names = [f"member{i:03d}" for i in range(100)]
    state = RoomState("#ops", "open", 7, bytes(32), frozenset(names), frozenset({names[0]}))
    env = seal_room(key3072, {n: key3072.public_key() for n in names}, state, names[0], "a short line of chat")
    frame = encode_frame({"type": "message", "from": names[0], "room": "#ops", "server_ts": 1, "envelope": env})
    assert 50_000 < len(frame) < 65_536, len(frame)


@given(anything)
def test_check_room_envelope_raises_only_malformed(value: object) -> None:
    try:
        check_room_envelope(value)
    except EnvelopeRejected as exc:
        assert exc.reason == "malformed"


def test_wrapped_keys_decode_the_same_together_or_one_by_one() -> None:
    """parse_room_envelope decodes an old-form envelope's (version 1) unpadded wrapped keys (RSA-3072: 384 bytes) in
    one go (docs/performance.md section 7): the same bytes as one by one, padded ones (RSA-2048 and 4096) beside
    them, a bad key still named."""
    env = sealed_v1()  # RSA-2048 members: padded keys
    env["keys"] |= {"alice": b64encode(bytes(range(128)) * 3), "carol": b64encode(b"\xff" * 384)}
    one_by_one = {name: b64decode(value) for name, value in env["keys"].items()}
    assert parse_room_envelope(env).wrapped == one_by_one
    assert list(parse_room_envelope(env).wrapped or {}) == list(env["keys"])
    for name, broken in (("carol", env["keys"]["carol"][:-4] + "!!!!"), ("bob", env["keys"]["bob"][:-3] + "===")):
        bad = copy.deepcopy(env)
        bad["keys"][name] = broken
        with pytest.raises(EnvelopeRejected, match=f"'keys.{name}' is not valid base64"):
            parse_room_envelope(bad)
    # Three letters and five: together they would decode; apart they are not base64.
    shifted = copy.deepcopy(env)
    shifted["keys"]["alice"] = shifted["keys"]["alice"][:-1]
    shifted["keys"]["carol"] = shifted["keys"]["carol"] + "A"
    with pytest.raises(EnvelopeRejected, match="'keys.alice' is not valid base64"):
        parse_room_envelope(shifted)


# --- version 2 (the wrapped keys signed as text) and the old form (docs/protocol.md 11.5) -------------


@pytest.mark.parametrize("me", MEMBERS)
def test_the_old_form_still_opens(me: str) -> None:
    """Version 1 (sealed before version 2: an outbox resend, a queued copy, a pasted payload) opens, its
    signature over the wrapped keys' bytes."""
    env = sealed_v1()
    assert env["v"] == 1
    parsed = parse_room_envelope(env)
    assert parsed.wrapped is not None and parsed.signed_keys() == parsed.wrapped
    assert open_as(me, env).text == "hi all"


def test_version_2_signs_the_texts_and_the_versions_do_not_cross() -> None:
    env, old = sealed(), sealed_v1()
    assert env["v"] == 2
    parsed = parse_room_envelope(env)
    assert parsed.wrapped is None  # nobody else's key is decoded
    header = room_header("#ops", "alice", env["id"], env["ts"], STATE.seq, STATE.head)
    texts = {name: env["keys"][name].encode("ascii") for name in MEMBERS}
    signed = room_signed_bytes(header, texts, parsed.nonce, parsed.ciphertext)
    assert crypto.pss_verify(key_of("alice").public_key(), parsed.signature, signed)
    # A version 2 envelope presented as the old form, and the reverse: the signature does not verify.
    assert reason("bob", {**env, "v": 1}) == "bad_signature"
    assert reason("bob", {**old, "v": 2}) == "bad_signature"
    assert reason("bob", {**env, "v": 3}) == "bad_version"


def test_version_2_binds_every_members_key_text() -> None:
    """Only our own key is decoded, yet the signature binds every member's: another member's key replaced,
    or re-spelled with other pad bits (the same bytes under a lenient decoder), is bad_signature for us."""
    env = sealed()  # RSA-2048: padded keys, so the last letter before '=' has free bits
    swapped = copy.deepcopy(env)
    swapped["keys"]["carol"] = sealed()["keys"]["carol"]
    assert reason("bob", swapped) == "bad_signature"
    respelled = copy.deepcopy(env)
    text = respelled["keys"]["carol"]
    body = text.rstrip("=")
    respelled["keys"]["carol"] = body[:-1] + ("B" if body[-1] == "A" else "A") + text[len(body):]
    assert reason("bob", respelled) == "bad_signature"
    # Our own key is still decoded strictly: a bad one is malformed, after the signature holds.
    assert open_as("bob", env).text == "hi all"


def test_a_wrapped_key_that_is_not_ascii_is_malformed() -> None:
    """Version 2 signs the key texts as ASCII bytes: a text that is not ASCII is refused with the structure
    (check 0), by the server and by every member, never turned into other bytes."""
    env = sealed()
    env["keys"]["carol"] = env["keys"]["carol"][:-2] + "é="
    assert reason("bob", env) == "malformed"


def test_the_keys_in_any_order_on_the_wire_are_signed_in_the_order_of_their_names() -> None:
    """docs/protocol.md 11.5: the signed bytes take the members in ascending order of their names, whatever order
    the ``keys`` object arrives in (JSON objects have none): the same envelope with its keys reversed opens."""
    env = sealed()
    assert list(env["keys"]) == sorted(MEMBERS)
    env["keys"] = dict(reversed(env["keys"].items()))
    assert open_as("carol", env).text == "hi all"
