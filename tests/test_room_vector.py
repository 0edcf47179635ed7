"""The worked room example in docs/protocol.md is a real room: a test vector read from the document.

Each check rebuilds a documented byte string from the primitives, following
section 11 of the document, and compares it with what the document shows; the
signatures verify, every member unwraps the message key and the ciphertext
opens. An edit that breaks the example, or a construction change that
breaks the document, fails here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from securechat import crypto
from securechat.encoding import b64decode, lp
from securechat.names import format_fingerprint
from tests.support.docvector import (
    BLOCK,
    blocks,
    doc_text,
    hexblock,
    names_in,
    private_key,
    public_key,
    section,
)

MEMBERS = ("alice", "bob", "carol")
SECTION = ("<!-- BEGIN room-vector", "<!-- END room-vector -->")


def jsonblock(name: str) -> Any:
    return json.loads(blocks()[name])


def inputs() -> dict[str, Any]:
    data: dict[str, Any] = jsonblock("room-inputs")
    return data


def entries() -> list[dict[str, Any]]:
    return [jsonblock(f"room-entry-{seq}") for seq in range(len(inputs()["changes"]))]


def entry_signed(entry: dict[str, Any]) -> bytes:
    """Section 11.2's signed bytes, spelled out field by field."""
    return (
        lp("securechat-room-v1")
        + lp(entry["room"])
        + lp(str(entry["seq"]))
        + lp(bytes.fromhex(entry["prev"]))
        + lp(entry["op"])
        + lp(entry["by"])
        + lp(entry["name"])
        + lp(entry.get("kind", ""))
        + lp(str(entry["ts"]))
    )


def entry_head(entry: dict[str, Any]) -> bytes:
    return hashlib.sha256(lp("securechat-room-head-v1") + entry_signed(entry) + lp(b64decode(entry["sig"]))).digest()


EXPECTED_ROOM_BLOCKS = {
    "carol-private", "carol-public", "carol-fingerprint", "room-inputs",
    "room-entry-0-signed", "room-entry-0", "room-head-0", "room-entry-1-signed", "room-entry-1", "room-head-1",
    "room-entry-2-signed", "room-entry-2", "room-head-2", "room-state", "room-header", "room-plaintext",
    "room-ct", "room-signed-bytes", "room-envelope", "room-message-frame", "room-payload",
}


def test_every_room_block_is_present() -> None:
    assert names_in(section(*SECTION)) == EXPECTED_ROOM_BLOCKS


def test_carols_key_and_fingerprint() -> None:
    pub = public_key("carol")
    assert pub.key_size == 2048 and pub.public_numbers().e == 65537
    assert private_key("carol").public_key().public_numbers() == pub.public_numbers()
    assert crypto.fingerprint(pub) == blocks()["carol-fingerprint"].strip()
    assert format_fingerprint(crypto.fingerprint(pub)) in doc_text()


@pytest.mark.parametrize("seq", [0, 1, 2])
def test_each_entry_is_the_documented_change_signed_by_its_signer(seq: int) -> None:
    entry, change = entries()[seq], inputs()["changes"][seq]
    assert entry["room"] == inputs()["room"] and entry["seq"] == seq
    assert {k: entry[k] for k in change} == change
    assert ("kind" in entry) == (entry["op"] == "create")
    assert hexblock(f"room-entry-{seq}-signed") == entry_signed(entry)
    # Each documented line is one lp() field: its prefix is its own length.
    for line in blocks()[f"room-entry-{seq}-signed"].splitlines():
        prefix, _, field = line.partition(" ")
        assert int(prefix, 16) == len(bytes.fromhex(field))
    assert crypto.pss_verify(public_key(entry["by"]), b64decode(entry["sig"]), entry_signed(entry))
    for other in set(MEMBERS) - {entry["by"]}:
        assert not crypto.pss_verify(public_key(other), b64decode(entry["sig"]), entry_signed(entry))


def test_the_heads_chain_the_entries() -> None:
    prev = bytes(32)
    for seq, entry in enumerate(entries()):
        assert bytes.fromhex(entry["prev"]) == prev
        prev = entry_head(entry)
        assert blocks()[f"room-head-{seq}"].strip() == prev.hex()


def test_the_documented_state() -> None:
    state = jsonblock("room-state")
    last = entries()[-1]
    assert state == {
        "room": "#ops", "kind": "invite", "seq": last["seq"], "head": entry_head(last).hex(),
        "members": ["alice", "bob", "carol"], "admins": ["alice"],
    }


def room_header() -> bytes:
    m, state = inputs()["message"], jsonblock("room-state")
    return lp(
        "securechat-room-msg-v2", state["room"], m["from"], m["id"], str(m["ts"]), str(state["seq"]),
        bytes.fromhex(state["head"]),
    )


def test_header_and_ciphertext() -> None:
    m = inputs()["message"]
    assert hexblock("room-header") == room_header()
    assert hexblock("room-plaintext") == crypto.encode_plaintext(m["text"])
    key, nonce = bytes.fromhex(m["aes_key_hex"]), bytes.fromhex(m["nonce_hex"])
    ct = b64decode(blocks()["room-ct"].strip())
    assert crypto.gcm_seal(key, nonce, hexblock("room-plaintext"), room_header()) == ct
    assert crypto.gcm_open(key, nonce, ct, room_header()) == hexblock("room-plaintext")


def test_envelope_fields_and_signature() -> None:
    env, m, state = jsonblock("room-envelope"), inputs()["message"], jsonblock("room-state")
    assert set(env) == {"v", "room", "from", "id", "ts", "seq", "head", "keys", "nonce", "ct", "sig"}
    assert (env["v"], env["room"], env["from"], env["id"], env["ts"]) == (2, "#ops", m["from"], m["id"], m["ts"])
    assert (env["seq"], env["head"]) == (state["seq"], state["head"])
    assert sorted(env["keys"]) == state["members"]
    assert b64decode(env["nonce"]).hex() == m["nonce_hex"] and env["ct"] == blocks()["room-ct"].strip()
    # Version 2: each wrapped key as the base64 text the envelope carries (section 11.5).
    pairs = b"".join(lp(name, env["keys"][name].encode("ascii")) for name in sorted(env["keys"]))
    signed = room_header() + pairs + lp(b64decode(env["nonce"]), b64decode(env["ct"]))
    assert hexblock("room-signed-bytes") == signed
    assert crypto.pss_verify(public_key(m["from"]), b64decode(env["sig"]), signed)
    assert not crypto.pss_verify(public_key("alice"), b64decode(env["sig"]), signed)


@pytest.mark.parametrize("member", MEMBERS)
def test_every_member_unwraps_the_key_and_reads_the_text(member: str) -> None:
    env, m = jsonblock("room-envelope"), inputs()["message"]
    key = crypto.oaep_unwrap(private_key(member), b64decode(env["keys"][member]))
    assert key.hex() == m["aes_key_hex"]
    plaintext = crypto.gcm_open(key, b64decode(env["nonce"]), b64decode(env["ct"]), room_header())
    assert json.loads(plaintext) == {"text": m["text"]}


def test_message_frame_and_payload() -> None:
    env, frame = jsonblock("room-envelope"), jsonblock("room-message-frame")
    assert frame["type"] == "message" and frame["room"] == env["room"] and frame["from"] == env["from"]
    assert frame["envelope"] == env
    assert crypto.decode_payload(blocks()["room-payload"].strip()) == env
    assert crypto.encode_payload(env) == blocks()["room-payload"].strip()


def test_generator_reproduces_the_deterministic_parts() -> None:
    from tests.support import make_room_vector as gen

    fresh = {name: body.strip("\n") for _lang, name, body in BLOCK.findall(gen.make_section())}
    assert set(fresh) == EXPECTED_ROOM_BLOCKS
    # Only the first entry's signed bytes precede every signature; the rest chain on randomized heads.
    for name in ("carol-private", "carol-public", "carol-fingerprint", "room-inputs", "room-entry-0-signed",
                 "room-plaintext"):
        assert fresh[name] == blocks()[name], f"docs/protocol.md block {name!r} is stale; run make_room_vector --write"


# --- the library agrees with the document (securechat/rooms) ------------------------------------


def test_the_library_parses_and_verifies_each_entry() -> None:
    from securechat.rooms.log import parse_entry
    from securechat.rooms.sealing import verify_entry

    for seq, wire in enumerate(entries()):
        entry = parse_entry(wire)
        assert entry.signed_bytes() == hexblock(f"room-entry-{seq}-signed")
        assert entry.head().hex() == blocks()[f"room-head-{seq}"].strip()
        assert entry.to_json() == wire
        assert verify_entry(public_key(entry.by), entry)


def test_the_library_computes_the_documented_state() -> None:
    from securechat.rooms.log import parse_entry, replay

    state = replay([parse_entry(wire) for wire in entries()])
    doc = jsonblock("room-state")
    assert state is not None
    assert (state.room, state.kind, state.seq, state.head.hex()) == (doc["room"], doc["kind"], doc["seq"], doc["head"])
    assert state.sorted_members() == doc["members"] and sorted(state.admins) == doc["admins"]


def test_the_library_seals_the_documented_header_and_ciphertext() -> None:
    from securechat.rooms.log import parse_entry, replay
    from securechat.rooms.sealing import room_header, seal_room_from_parts

    state = replay([parse_entry(wire) for wire in entries()])
    assert state is not None
    m = inputs()["message"]
    assert room_header("#ops", m["from"], m["id"], m["ts"], state.seq, state.head) == hexblock("room-header")
    env = seal_room_from_parts(
        private_key(m["from"]), {n: public_key(n) for n in MEMBERS}, state, m["from"], m["text"], msg_id=m["id"],
        ts=m["ts"], aes_key=bytes.fromhex(m["aes_key_hex"]), nonce=bytes.fromhex(m["nonce_hex"]),
    )
    documented = jsonblock("room-envelope")
    randomized = {"keys", "sig"}
    assert {k: v for k, v in env.items() if k not in randomized} == {
        k: v for k, v in documented.items() if k not in randomized
    }


@pytest.mark.parametrize("member", MEMBERS)
def test_the_library_opens_the_documented_message(member: str) -> None:
    from securechat.rooms.sealing import open_room_envelope

    frame = jsonblock("room-message-frame")
    opened = open_room_envelope(
        private_key(member), member, public_key("bob"), frame["envelope"], set(MEMBERS), frame["room"], frame["from"]
    )
    assert opened.text == inputs()["message"]["text"] and opened.recipient == "#ops"
    pasted = crypto.decode_payload(blocks()["room-payload"])
    assert open_room_envelope(private_key(member), member, public_key("bob"), pasted, set(MEMBERS)).text == opened.text
