"""The worked example in docs/protocol.md is a real test vector, and the document covers the code.

Reads the fenced blocks tagged ``vector=<name>`` from the document itself, so
an edit that breaks the example (or a code change that breaks the document)
fails here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from securechat import crypto, errors, protocol, tls
from securechat.encoding import b64encode
from securechat.names import format_fingerprint
from securechat.server.phases import SERVER_TRANSITIONS
from tests.support.docvector import (
    BLOCK,
    b64block,
    blocks,
    doc_text,
    hexblock,
    names_in,
    private_key,
    public_key,
    section,
)

SECTION = ("<!-- BEGIN doc-vector", "<!-- END doc-vector -->")


def inputs() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(blocks()["inputs"])
    return data


EXPECTED_BLOCKS = {
    "alice-private", "alice-public", "alice-fingerprint", "bob-private", "bob-public", "bob-fingerprint",
    "inputs", "plaintext", "header", "ct", "wrapped-key", "signed-bytes", "signature", "envelope",
    "payload", "auth-message", "auth-signature", "server-spki", "server-identity", "auth-v2-message",
    "auth-v2-signature", "padding-write", "padding-padded",
}


def test_every_vector_block_is_present() -> None:
    assert names_in(section(*SECTION)) == EXPECTED_BLOCKS


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_keys_and_fingerprints(who: str) -> None:
    pub = public_key(who)
    assert pub.key_size == 2048 and pub.public_numbers().e == 65537
    assert private_key(who).public_key().public_numbers() == pub.public_numbers()
    assert crypto.fingerprint(pub) == blocks()[f"{who}-fingerprint"].strip()
    # The grouped form shown to people is in the document too.
    assert format_fingerprint(crypto.fingerprint(pub)) in doc_text()


def test_header_bytes() -> None:
    i = inputs()
    header = hexblock("header")
    assert header == crypto.envelope_header(i["from"], i["to"], i["id"], i["ts"])
    # Each documented line is one lp() field: its prefix is its own length.
    for line in blocks()["header"].splitlines():
        prefix, field = line.split(" ")
        assert int(prefix, 16) == len(bytes.fromhex(field))


def test_plaintext_bytes() -> None:
    assert hexblock("plaintext") == crypto.encode_plaintext(inputs()["text"])
    assert json.loads(hexblock("plaintext")) == {"text": inputs()["text"]}


def test_gcm_gives_the_documented_ct() -> None:
    i = inputs()
    key, nonce = bytes.fromhex(i["aes_key_hex"]), bytes.fromhex(i["nonce_hex"])
    assert crypto.gcm_seal(key, nonce, hexblock("plaintext"), hexblock("header")) == b64block("ct")
    assert crypto.gcm_open(key, nonce, b64block("ct"), hexblock("header")) == hexblock("plaintext")


def test_bob_unwraps_the_documented_key() -> None:
    assert crypto.oaep_unwrap(private_key("bob"), b64block("wrapped-key")) == bytes.fromhex(inputs()["aes_key_hex"])


def test_signed_bytes_and_alices_signature() -> None:
    i = inputs()
    signed = hexblock("signed-bytes")
    assert signed == crypto.envelope_signed_bytes(
        hexblock("header"), b64block("wrapped-key"), bytes.fromhex(i["nonce_hex"]), b64block("ct")
    )
    assert crypto.pss_verify(public_key("alice"), b64block("signature"), signed)
    assert not crypto.pss_verify(public_key("bob"), b64block("signature"), signed)


def test_envelope_holds_the_documented_parts() -> None:
    env = json.loads(blocks()["envelope"])
    i = inputs()
    assert env == {
        "v": 1, "from": i["from"], "to": i["to"], "id": i["id"], "ts": i["ts"],
        "key": blocks()["wrapped-key"].strip(), "nonce": b64encode(bytes.fromhex(i["nonce_hex"])),
        "ct": blocks()["ct"].strip(), "sig": blocks()["signature"].strip(),
    }
    protocol.validate_envelope_shape(env)


def test_open_envelope_gives_the_plaintext() -> None:
    env = json.loads(blocks()["envelope"])
    opened = crypto.open_envelope(private_key("bob"), "bob", public_key("alice"), env, "alice")
    assert opened.text == inputs()["text"]
    assert opened.msg_id == inputs()["id"] and opened.ts == inputs()["ts"]


def test_payload_decodes_to_the_envelope() -> None:
    env = json.loads(blocks()["envelope"])
    payload = blocks()["payload"].strip()
    assert crypto.decode_payload(payload) == env
    assert crypto.encode_payload(env) == payload
    opened = crypto.open_envelope(private_key("bob"), "bob", public_key("alice"), crypto.decode_payload(payload))
    assert opened.text == inputs()["text"]


def test_auth_example() -> None:
    server_id, nonce = bytes(range(0x10, 0x20)), bytes(range(0x40, 0x60))
    assert hexblock("auth-message") == crypto.auth_message(server_id, "alice", nonce)
    assert crypto.verify_auth(public_key("alice"), b64block("auth-signature"), server_id, "alice", nonce)


def test_server_identity_is_the_hash_of_the_spki() -> None:
    der = serialization.load_pem_public_key(blocks()["server-spki"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert hashlib.sha256(der).hexdigest() == blocks()["server-identity"].strip()
    assert format_fingerprint(blocks()["server-identity"].strip()) in doc_text()


def test_auth_v2_example() -> None:
    server_id, nonce = bytes(range(0x10, 0x20)), bytes(range(0x40, 0x60))
    identity = bytes.fromhex(blocks()["server-identity"].strip())
    assert hexblock("auth-v2-message") == crypto.auth_message(server_id, "alice", nonce, identity)
    signature = b64block("auth-v2-signature")
    assert crypto.verify_auth(public_key("alice"), signature, server_id, "alice", nonce, identity)
    # Bound to the identity: useless as v1, or at a server with another key.
    assert not crypto.verify_auth(public_key("alice"), signature, server_id, "alice", nonce)
    other = hashlib.sha256(identity).digest()
    assert not crypto.verify_auth(public_key("alice"), signature, server_id, "alice", nonce, other)


def test_padding_example() -> None:
    write, padded = hexblock("padding-write"), hexblock("padding-padded")
    assert tls.pad_write(write) == padded
    assert len(padded) == tls.padded_size(len(write)) == 256
    # The strict decoder reads the padded write as the same frames: padding is JSON whitespace.
    assert protocol.FrameDecoder().feed(padded) == protocol.FrameDecoder().feed(write)
    assert padded.endswith(b" " * (len(padded) - len(write)))


def test_generator_reproduces_the_deterministic_parts() -> None:
    from .support import make_doc_vector as gen

    section = gen.make_section()
    fresh = {name: body.strip("\n") for _lang, name, body in BLOCK.findall(section)}
    # OAEP and PSS are randomized: those blocks (and what embeds them) legitimately differ.
    randomized = {
        "wrapped-key", "signature", "signed-bytes", "envelope", "payload", "auth-signature", "auth-v2-signature",
    }
    for name in EXPECTED_BLOCKS - randomized:
        assert fresh[name] == blocks()[name], f"docs/protocol.md block {name!r} is stale; run make_doc_vector.py --write"


# --- the document covers the code -------------------------------------------------------------


def all_reasons() -> set[str]:
    found = set()
    stack: list[type[errors.EnvelopeRejected]] = [errors.EnvelopeRejected]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls is not errors.EnvelopeRejected:
            found.add(cls.reason)
    return found


@pytest.mark.parametrize(
    "code", sorted(protocol.FATAL_CODES | protocol.NONFATAL_CODES | protocol.EXTRA_FATAL_CODES)
)
def test_every_error_code_is_in_the_error_table(code: str) -> None:
    assert re.search(rf"^\| `{code}` \| (yes|no)", doc_text(), re.MULTILINE), code


@pytest.mark.parametrize("reason", sorted(all_reasons()))
def test_every_rejection_reason_is_documented(reason: str) -> None:
    assert f"`{reason}`" in doc_text()


@pytest.mark.parametrize("kind", sorted(protocol.CLIENT_TYPES | protocol.SERVER_TYPES))
def test_every_frame_type_has_a_row(kind: str) -> None:
    assert re.search(rf"^\| `{kind}` \|", doc_text(), re.MULTILINE), kind


def test_state_table_matches_the_code() -> None:
    for state, row in SERVER_TRANSITIONS.items():
        kinds = ", ".join(f"`{k}`" for k in row) if row else "none"
        line = re.search(rf"^\| `{state.name}` \| ([^|]*) \|", doc_text(), re.MULTILINE)
        assert line is not None, state
        assert line.group(1).strip() == kinds


def test_placeholder_for_the_server_section_is_marked() -> None:
    assert "## Server behaviour details" in doc_text()
    assert "<!-- BEGIN server-behaviour -->" in doc_text()


def test_constants_in_the_document() -> None:
    text = doc_text()
    assert f"{protocol.DEFAULT_MAX_FRAME:,}" in text
    assert f"{protocol.MAX_PEM_LENGTH:,}" in text
    assert protocol.NAME_PATTERN.pattern in text
    assert crypto.AUTH_LABEL.decode() in text and crypto.MESSAGE_LABEL.decode() in text
    assert crypto.AUTH_LABEL_V2.decode() in text
    assert f"{tls.PAD_STEP:,}" in text and f"{tls.PAD_MIN}" in text
