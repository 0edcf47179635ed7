"""Tests of securechat.crypto: the envelope construction, every tamper case, keys, payloads."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from securechat import crypto
from securechat.encoding import b64decode, b64decode_unpadded, b64encode, lp_pairs, lp_text_pairs
from securechat.errors import (
    BadKey,
    BadPlaintext,
    BadSignature,
    DecryptFailed,
    EnvelopeRejected,
    MalformedEnvelope,
    SenderMismatch,
    UnsupportedVersion,
    UnwrapFailed,
    WrongRecipient,
)
from securechat.names import format_fingerprint

MSG_ID = "00112233445566778899aabbccddeeff"
TS = 1_700_000_000_123


@functools.cache
def key(name: str) -> rsa.RSAPrivateKey:
    """One RSA-2048 test key per name for the whole run (generation is the slow part)."""
    return crypto.generate_private_key(2048)


@pytest.fixture(scope="module")
def sealed() -> dict[str, Any]:
    return crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", "hi bob", msg_id=MSG_ID, ts=TS)


def open_as_bob(envelope: Any, frame_sender: str | None = "alice") -> crypto.OpenedMessage:
    return crypto.open_envelope(key("bob"), "bob", key("alice").public_key(), envelope, frame_sender)


def build_envelope(
    plaintext: bytes,
    *,
    sender: str = "alice",
    recipient: str = "bob",
    wrap_for: rsa.RSAPublicKey | None = None,
    aes_key: bytes | None = None,
    wrapped_plain: bytes | None = None,
    corrupt_tag: bool = False,
) -> dict[str, Any]:
    """An envelope made from the primitives, correctly signed by alice whatever is inside."""
    aes_key = aes_key if aes_key is not None else os.urandom(32)
    nonce = os.urandom(12)
    header = crypto.envelope_header(sender, recipient, MSG_ID, TS)
    ct = crypto.gcm_seal(aes_key, nonce, plaintext, header)
    if corrupt_tag:
        ct = ct[:-1] + bytes([ct[-1] ^ 0x01])
    wrap_key = wrap_for if wrap_for is not None else key(recipient).public_key()
    wrapped = crypto.oaep_wrap(wrap_key, wrapped_plain if wrapped_plain is not None else aes_key)
    sig = crypto.pss_sign(key(sender), crypto.envelope_signed_bytes(header, wrapped, nonce, ct))
    return {
        "v": 1, "from": sender, "to": recipient, "id": MSG_ID, "ts": TS,
        "key": b64encode(wrapped), "nonce": b64encode(nonce),
        "ct": b64encode(ct), "sig": b64encode(sig),
    }


def flip_b64(text: str, byte: int, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte % len(raw)] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode()


# --- round trips ------------------------------------------------------------------------


def test_round_trip(sealed: dict[str, Any]) -> None:
    opened = open_as_bob(sealed)
    assert (opened.sender, opened.recipient, opened.msg_id, opened.ts, opened.text) == (
        "alice", "bob", MSG_ID, TS, "hi bob",
    )
    assert opened.plaintext == {"text": "hi bob"}


@pytest.mark.parametrize("text", ["", "é ü 漢字 🙂", "line\nbreak\t\"quoted\" \\", "x" * 100_000])
def test_round_trip_texts(text: str) -> None:
    env = crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", text)
    assert open_as_bob(env).text == text


def test_pasted_payload_opens_without_a_frame_sender(sealed: dict[str, Any]) -> None:
    payload = crypto.encode_payload(sealed)
    assert "\n" not in payload
    assert open_as_bob(crypto.decode_payload(payload), frame_sender=None).text == "hi bob"


def test_default_key_size_is_3072_and_round_trips() -> None:
    big = crypto.generate_private_key()
    assert big.key_size == 3072 and big.public_key().public_numbers().e == 65537
    env = crypto.seal_envelope(big, key("bob").public_key(), "dora", "bob", "from 3072")
    assert crypto.open_envelope(key("bob"), "bob", big.public_key(), env, "dora").text == "from 3072"
    env = crypto.seal_envelope(key("alice"), big.public_key(), "alice", "dora", "to 3072")
    assert crypto.open_envelope(big, "dora", key("alice").public_key(), env, "alice").text == "to 3072"


def test_generate_refuses_small_keys() -> None:
    with pytest.raises(ValueError):
        crypto.generate_private_key(1024)


def test_envelope_fields_have_the_documented_shape(sealed: dict[str, Any]) -> None:
    assert set(sealed) == {"v", "from", "to", "id", "ts", "key", "nonce", "ct", "sig"}
    assert len(base64.b64decode(sealed["key"])) == 256
    assert len(base64.b64decode(sealed["sig"])) == 256
    assert len(base64.b64decode(sealed["nonce"])) == 12
    assert len(base64.b64decode(sealed["ct"])) == len(b'{"text":"hi bob"}') + 16


def test_default_id_and_ts() -> None:
    env = crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", "x")
    assert len(env["id"]) == 32 and int(env["id"], 16) >= 0 and env["id"] == env["id"].lower()
    assert abs(env["ts"] - crypto.now_ms()) < 60_000


def test_fresh_aes_key_nonce_and_ct_per_message() -> None:
    a = crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", "same", msg_id=MSG_ID, ts=TS)
    b = crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", "same", msg_id=MSG_ID, ts=TS)
    assert a["key"] != b["key"] and a["nonce"] != b["nonce"] and a["ct"] != b["ct"] and a["sig"] != b["sig"]
    ka = crypto.oaep_unwrap(key("bob"), base64.b64decode(a["key"]))
    kb = crypto.oaep_unwrap(key("bob"), base64.b64decode(b["key"]))
    assert ka != kb and len(ka) == len(kb) == 32


def test_seal_from_parts_is_deterministic_in_header_and_ct() -> None:
    parts: dict[str, Any] = {"msg_id": MSG_ID, "ts": TS, "aes_key": bytes(range(32)), "nonce": bytes(range(12))}
    a = crypto.seal_envelope_from_parts(key("alice"), key("bob").public_key(), "alice", "bob", "kat", **parts)
    b = crypto.seal_envelope_from_parts(key("alice"), key("bob").public_key(), "alice", "bob", "kat", **parts)
    assert a["ct"] == b["ct"] and a["nonce"] == b["nonce"]
    # OAEP and PSS are randomized: same inputs, different bytes, both valid.
    assert a["key"] != b["key"] and a["sig"] != b["sig"]
    assert open_as_bob(a).text == open_as_bob(b).text == "kat"


def test_seal_from_parts_checks_sizes() -> None:
    with pytest.raises(ValueError):
        crypto.seal_envelope_from_parts(
            key("alice"), key("bob").public_key(), "alice", "bob", "x",
            msg_id=MSG_ID, ts=TS, aes_key=bytes(16), nonce=bytes(12),
        )
    with pytest.raises(ValueError):
        crypto.seal_envelope_from_parts(
            key("alice"), key("bob").public_key(), "alice", "bob", "x",
            msg_id=MSG_ID, ts=TS, aes_key=bytes(32), nonce=bytes(16),
        )


# --- tamper cases, in the section-5 order ------------------------------------------------

TAMPER_CASES: list[tuple[str, Any, type[EnvelopeRejected]]] = [
    # v is checked first.
    ("v", 2, UnsupportedVersion),
    ("v", 0, UnsupportedVersion),
    ("v", 1 ^ 2, UnsupportedVersion),
    ("v", "1", MalformedEnvelope),
    ("v", True, MalformedEnvelope),
    # to is ours?
    ("to", "carol", WrongRecipient),
    ("to", "bnb", WrongRecipient),  # one bit flipped in 'o'
    ("to", "bob ", MalformedEnvelope),
    # from must match the frame's from (the server's word) ...
    ("from", "alicd", SenderMismatch),  # one bit flipped in 'e'
    ("from", "carol", SenderMismatch),
    ("from", "Alice", MalformedEnvelope),
    ("to", "Bob", MalformedEnvelope),
    # id, ts, key, nonce, ct, sig are all under the signature.
    ("id", MSG_ID[:-1] + "e", BadSignature),
    ("id", "f" + MSG_ID[1:], BadSignature),
    ("id", MSG_ID.upper(), MalformedEnvelope),
    ("id", MSG_ID[:-1], MalformedEnvelope),
    ("ts", TS + 1, BadSignature),
    ("ts", TS ^ 1 << 20, BadSignature),
    ("ts", 0, BadSignature),
    ("ts", -1, MalformedEnvelope),
    ("ts", float(TS), MalformedEnvelope),
    ("ts", str(TS), MalformedEnvelope),
    ("key", None, MalformedEnvelope),
    ("key", "not base64!", MalformedEnvelope),
    ("nonce", base64.b64encode(bytes(16)).decode(), MalformedEnvelope),
    ("ct", base64.b64encode(bytes(15)).decode(), MalformedEnvelope),
    ("sig", "", BadSignature),
    ("sig", base64.b64encode(bytes(256)).decode(), BadSignature),
]


@pytest.mark.parametrize(("field", "value", "rejection"), TAMPER_CASES, ids=lambda x: repr(x)[:30])
def test_replacing_a_field(
    sealed: dict[str, Any], field: str, value: Any, rejection: type[EnvelopeRejected]
) -> None:
    env = dict(sealed, **{field: value})
    with pytest.raises(rejection) as info:
        open_as_bob(env)
    assert type(info.value) is rejection
    assert info.value.reason == rejection.reason


@pytest.mark.parametrize("field", ["key", "nonce", "ct", "sig"])
@pytest.mark.parametrize("position", [0, 5, -17, -1])
@pytest.mark.parametrize("bit", [0, 7])
def test_flipping_a_bit_in_a_binary_field_is_bad_signature(
    sealed: dict[str, Any], field: str, position: int, bit: int
) -> None:
    env = dict(sealed, **{field: flip_b64(sealed[field], position, bit)})
    with pytest.raises(BadSignature):
        open_as_bob(env)


@pytest.mark.parametrize("field", ["v", "from", "to", "id", "ts", "key", "nonce", "ct", "sig"])
def test_missing_field_is_malformed(sealed: dict[str, Any], field: str) -> None:
    env = {k: v for k, v in sealed.items() if k != field}
    with pytest.raises(MalformedEnvelope):
        open_as_bob(env)


def test_from_differs_from_the_frame_sender(sealed: dict[str, Any]) -> None:
    with pytest.raises(SenderMismatch) as info:
        open_as_bob(sealed, frame_sender="mallory")
    assert info.value.reason == "sender_mismatch"


@pytest.mark.parametrize("frame_sender", ["mallory", None])
def test_changed_from_is_bad_signature(sealed: dict[str, Any], frame_sender: str | None) -> None:
    # The server vouches for mallory, or nobody does (a pasted payload), but the
    # signature still covers alice's name.
    env = dict(sealed, **{"from": "mallory"})
    with pytest.raises(BadSignature):
        open_as_bob(env, frame_sender=frame_sender)


def test_changed_from_with_the_right_key_still_fails() -> None:
    # alice re-labels her own envelope as coming from 'alicia' and gets her key
    # checked: the header bound 'alice', so the signature does not cover it.
    env = crypto.seal_envelope(key("alice"), key("bob").public_key(), "alice", "bob", "x")
    env["from"] = "alicia"
    with pytest.raises(BadSignature):
        crypto.open_envelope(key("bob"), "bob", key("alice").public_key(), env, "alicia")


def test_check_order_v_before_to_before_from_before_sig(sealed: dict[str, Any]) -> None:
    everything_wrong = dict(sealed, v=2, to="carol", sig=flip_b64(sealed["sig"], 0))
    with pytest.raises(UnsupportedVersion):
        open_as_bob(everything_wrong, frame_sender="mallory")
    everything_wrong["v"] = 1
    with pytest.raises(WrongRecipient):
        open_as_bob(everything_wrong, frame_sender="mallory")
    everything_wrong["to"] = "bob"
    with pytest.raises(SenderMismatch):
        open_as_bob(everything_wrong, frame_sender="mallory")
    with pytest.raises(BadSignature):
        open_as_bob(everything_wrong, frame_sender="alice")


def test_signature_by_another_key_is_bad_signature() -> None:
    # mallory signs an envelope claiming to be alice; bob checks with alice's pinned key.
    env = crypto.seal_envelope(key("mallory"), key("bob").public_key(), "alice", "bob", "trust me")
    with pytest.raises(BadSignature):
        open_as_bob(env)


def test_signature_checked_with_the_wrong_pinned_key_is_bad_signature(sealed: dict[str, Any]) -> None:
    with pytest.raises(BadSignature):
        crypto.open_envelope(key("bob"), "bob", key("mallory").public_key(), sealed, "alice")


def test_key_wrapped_for_another_recipient_is_unwrap_failed() -> None:
    env = build_envelope(b'{"text":"x"}', wrap_for=key("carol").public_key())
    with pytest.raises(UnwrapFailed) as info:
        open_as_bob(env)
    assert info.value.reason == "unwrap_failed"


def test_wrapped_key_of_the_wrong_length_is_unwrap_failed() -> None:
    env = build_envelope(b'{"text":"x"}', wrapped_plain=bytes(16))
    with pytest.raises(UnwrapFailed):
        open_as_bob(env)


def test_corrupted_gcm_tag_is_decrypt_failed() -> None:
    env = build_envelope(b'{"text":"x"}', corrupt_tag=True)
    with pytest.raises(DecryptFailed) as info:
        open_as_bob(env)
    assert info.value.reason == "decrypt_failed"


def test_aad_mismatch_is_decrypt_failed() -> None:
    # Encrypted under a header for carol, but signed and labelled for bob.
    aes_key, nonce = os.urandom(32), os.urandom(12)
    ct = crypto.gcm_seal(aes_key, nonce, b'{"text":"x"}', crypto.envelope_header("alice", "carol", MSG_ID, TS))
    header = crypto.envelope_header("alice", "bob", MSG_ID, TS)
    wrapped = crypto.oaep_wrap(key("bob").public_key(), aes_key)
    sig = crypto.pss_sign(key("alice"), crypto.envelope_signed_bytes(header, wrapped, nonce, ct))
    env = {
        "v": 1, "from": "alice", "to": "bob", "id": MSG_ID, "ts": TS, "key": b64encode(wrapped),
        "nonce": b64encode(nonce), "ct": b64encode(ct), "sig": b64encode(sig),
    }
    with pytest.raises(DecryptFailed):
        open_as_bob(env)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"hello",
        b"\xff\xfe",
        b'["text"]',
        b'"text"',
        b"{}",
        b'{"text":5}',
        b'{"text":null}',
        b'{"txt":"x"}',
        b'{"text":"a","text":"b"}',
        b'{"text":"x","n":NaN}',
        b'{"text":"x","n":1e400}',
        b'{"text":"\\ud800"}',
        b'{"text":"ok","x":["\\udfff"]}',
        b"[" * 100_000 + b"]" * 100_000,
        b"",
    ],
    ids=lambda p: repr(p)[:30],
)
def test_signed_and_encrypted_garbage_is_bad_plaintext(plaintext: bytes) -> None:
    with pytest.raises(BadPlaintext) as info:
        open_as_bob(build_envelope(plaintext))
    assert info.value.reason == "bad_plaintext"


def test_reserved_plaintext_fields_are_kept() -> None:
    opened = open_as_bob(build_envelope(b'{"text":"x","kind":"later"}'))
    assert opened.text == "x" and opened.plaintext["kind"] == "later"


def test_surreptitious_forwarding_is_bad_recipient() -> None:
    # alice writes to carol; carol (or the server) re-sends it to bob.
    for_carol = crypto.seal_envelope(key("alice"), key("carol").public_key(), "alice", "carol", "for carol only")
    with pytest.raises(WrongRecipient):
        open_as_bob(for_carol)
    # Re-addressing it to bob breaks the signature (the header binds 'carol').
    readdressed = dict(for_carol, to="bob")
    with pytest.raises(BadSignature):
        open_as_bob(readdressed)


def test_non_canonical_base64_is_malformed(sealed: dict[str, Any]) -> None:
    # The signature is 256 bytes: "==" padding, so the last data character has
    # four unused low bits. Setting them gives a second spelling of the same
    # bytes that a lenient decoder accepts and the signature cannot notice.
    sig = sealed["sig"]
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    mangled = sig[:-3] + alphabet[last | 0b1111] + "=="
    assert mangled != sig and base64.b64decode(mangled) == base64.b64decode(sig)
    with pytest.raises(MalformedEnvelope):
        open_as_bob(dict(sealed, sig=mangled))


def test_envelope_not_an_object_is_malformed() -> None:
    things: list[Any] = [None, [], "x", 1]
    for thing in things:
        with pytest.raises(MalformedEnvelope):
            open_as_bob(thing)


# --- lp and the signed byte strings ---------------------------------------------------------


def test_lp_examples() -> None:
    assert crypto.lp(b"") == b"\x00\x00\x00\x00"
    assert crypto.lp("ab") == b"\x00\x00\x00\x02ab"
    assert crypto.lp("é") == b"\x00\x00\x00\x02\xc3\xa9"
    assert crypto.lp(b"a", b"bc") == b"\x00\x00\x00\x01a\x00\x00\x00\x02bc"
    assert crypto.lp() == b""


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ab", "c"), ("a", "bc")),
        (("abc", ""), ("", "abc")),
        (("a", "b", "c"), ("ab", "c")),
        ((b"\x00\x00\x00\x01a",), (b"a", b"")),
        (("alice", "bob"), ("alicebob",)),
    ],
)
def test_lp_is_injective_where_concatenation_is_not(left: tuple[str | bytes, ...], right: tuple[str | bytes, ...]) -> None:
    assert crypto.lp(*left) != crypto.lp(*right)


@given(st.lists(st.binary(max_size=6), max_size=4), st.lists(st.binary(max_size=6), max_size=4))
def test_lp_is_injective(left: list[bytes], right: list[bytes]) -> None:
    assert (crypto.lp(*left) == crypto.lp(*right)) == (left == right)


def test_envelope_header_bytes() -> None:
    header = crypto.envelope_header("alice", "bob", MSG_ID, 42)
    assert header == (
        b"\x00\x00\x00\x11securechat-msg-v1"
        b"\x00\x00\x00\x05alice"
        b"\x00\x00\x00\x03bob"
        b"\x00\x00\x00\x20" + MSG_ID.encode() + b"\x00\x00\x00\x0242"
    )


def test_signed_bytes_append_lp_of_key_nonce_ct() -> None:
    assert crypto.envelope_signed_bytes(b"H", b"k", b"nn", b"") == b"H\x00\x00\x00\x01k\x00\x00\x00\x02nn\x00\x00\x00\x00"


# --- auth signature -----------------------------------------------------------------------------


def test_auth_message_bytes() -> None:
    sid, nonce = bytes(range(16)), bytes(range(32))
    assert crypto.auth_message(sid, "alice", nonce) == (
        b"\x00\x00\x00\x12securechat-auth-v1\x00\x00\x00\x10" + sid + b"\x00\x00\x00\x05alice\x00\x00\x00\x20" + nonce
    )


def test_auth_signature_is_bound_to_server_id_name_and_nonce() -> None:
    sid, nonce = os.urandom(16), os.urandom(32)
    sig = crypto.sign_auth(key("alice"), sid, "alice", nonce)
    pub = key("alice").public_key()
    assert crypto.verify_auth(pub, sig, sid, "alice", nonce)
    assert not crypto.verify_auth(pub, sig, os.urandom(16), "alice", nonce)  # another server
    assert not crypto.verify_auth(pub, sig, sid, "alicia", nonce)  # another name
    assert not crypto.verify_auth(pub, sig, sid, "alice", os.urandom(32))  # a replayed challenge
    assert not crypto.verify_auth(key("mallory").public_key(), sig, sid, "alice", nonce)
    # The auth and message constructions cannot be confused: different labels.
    assert not crypto.pss_verify(pub, sig, crypto.lp(crypto.MESSAGE_LABEL, sid, "alice", nonce))


# --- keys -----------------------------------------------------------------------------------------


def pem_of(public: Any) -> str:
    pem: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def test_load_public_key_pem_accepts_a_good_key() -> None:
    pem = crypto.public_key_pem(key("alice").public_key())
    loaded = crypto.load_public_key_pem(pem)
    assert loaded.public_numbers() == key("alice").public_key().public_numbers()
    assert crypto.load_public_key_pem("\n  " + pem + "\n\n").public_numbers() == loaded.public_numbers()


@functools.cache
def bad_pems() -> dict[str, str]:
    good = crypto.public_key_pem(key("alice").public_key())
    lines = good.strip().splitlines()
    return {
        "rsa-1024": pem_of(rsa.generate_private_key(65537, 1024).public_key()),
        "rsa-e3": pem_of(rsa.generate_private_key(3, 2048).public_key()),
        "ec-p256": pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()),
        "ed25519": pem_of(ed25519.Ed25519PrivateKey.generate().public_key()),
        "pkcs1-rsa-public-key": key("alice").public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ).decode(),
        "private-key": key("alice").private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "certificate-label": good.replace("PUBLIC KEY", "CERTIFICATE"),
        "not-pem": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ alice@host",
        "empty": "",
        "trailing-garbage": good + "garbage\n",
        "leading-garbage": "garbage\n" + good,
        "two-blocks": good + good,
        "two-end-lines": "\n".join(lines[:-1]) + "\n" + lines[-1] + "\njunk\n" + lines[-1],
        "corrupted-body": "\n".join([lines[0], lines[1][:10] + "!!!!" + lines[1][14:], *lines[2:]]),
        "truncated-body": "\n".join([lines[0], *lines[1:-2], lines[-1]]),
        "non-ascii": good.replace("A", "Ä", 1),
    }


@pytest.mark.parametrize(
    "case",
    [
        "rsa-1024", "rsa-e3", "ec-p256", "ed25519", "pkcs1-rsa-public-key", "private-key",
        "certificate-label", "not-pem", "empty", "trailing-garbage", "leading-garbage", "two-blocks",
        "two-end-lines", "corrupted-body", "truncated-body", "non-ascii",
    ],
)
def test_load_public_key_pem_rejects(case: str) -> None:
    with pytest.raises(BadKey):
        crypto.load_public_key_pem(bad_pems()[case])


def test_check_public_key_rejects_non_rsa_objects() -> None:
    with pytest.raises(BadKey):
        crypto.check_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(BadKey):
        crypto.check_public_key("-----BEGIN PUBLIC KEY-----")


def test_fingerprint_is_sha256_of_der_spki() -> None:
    pub = key("alice").public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fp = crypto.fingerprint(pub)
    assert fp == hashlib.sha256(der).hexdigest()
    assert len(fp) == 64 and fp == fp.lower()
    assert crypto.fingerprint(crypto.load_public_key_pem(crypto.public_key_pem(pub))) == fp
    assert crypto.fingerprint(key("bob").public_key()) != fp


def test_format_fingerprint_groups_of_four() -> None:
    fp = "0123456789abcdef" * 4
    shown = format_fingerprint(fp)
    assert shown.split(" ") == [fp[i : i + 4] for i in range(0, 64, 4)]
    assert len(shown.split(" ")) == 16


# --- the pasted payload -------------------------------------------------------------------------


def test_payload_is_base64_of_the_envelope_json(sealed: dict[str, Any]) -> None:
    payload = crypto.encode_payload(sealed)
    assert json.loads(base64.b64decode(payload, validate=True)) == sealed
    assert crypto.decode_payload(payload) == sealed


def test_payload_survives_line_wrapping_and_spaces(sealed: dict[str, Any]) -> None:
    payload = crypto.encode_payload(sealed)
    wrapped = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    assert crypto.decode_payload("  " + wrapped + "\r\n") == sealed


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 10])
def test_truncated_payload_is_malformed(sealed: dict[str, Any], cut: int) -> None:
    payload = crypto.encode_payload(sealed)
    with pytest.raises(MalformedEnvelope):
        crypto.decode_payload(payload[:-cut])


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"[1,2]").decode(),
        base64.b64encode(b'{"v":1,"v":2}').decode(),
        base64.b64encode(b"{").decode(),
        "é",
    ],
)
def test_bad_payload_is_malformed(payload: str) -> None:
    with pytest.raises(MalformedEnvelope):
        crypto.decode_payload(payload)


def test_payload_round_trip_keeps_every_tamper_check(sealed: dict[str, Any]) -> None:
    env = copy.deepcopy(sealed)
    env["ts"] += 1
    with pytest.raises(BadSignature):
        open_as_bob(crypto.decode_payload(crypto.encode_payload(env)), frame_sender=None)


# --- primitives' failure modes ----------------------------------------------------------------------


def test_gcm_open_wrong_sizes_are_decrypt_failed() -> None:
    with pytest.raises(DecryptFailed):
        crypto.gcm_open(bytes(32), bytes(12), b"short", b"")
    with pytest.raises(DecryptFailed):
        crypto.gcm_open(bytes(7), bytes(12), bytes(32), b"")


def test_oaep_unwrap_garbage_is_unwrap_failed() -> None:
    for junk in (b"", bytes(256), b"\xff" * 256, bytes(300)):
        with pytest.raises(UnwrapFailed):
            crypto.oaep_unwrap(key("bob"), junk)


def test_pss_verify_wrong_length_signature_is_false() -> None:
    pub = key("alice").public_key()
    for junk in (b"", b"\x00", bytes(255), bytes(257), b"\xff" * 256):
        assert crypto.pss_verify(pub, junk, b"m") is False


def test_b64decode_is_strict() -> None:
    assert b64decode("AAEC") == b"\x00\x01\x02"
    for bad in ("AAE", "AA=C", "AA C", "AAE\n", "AB==", "-_-_", "é"):
        with pytest.raises(ValueError):
            b64decode(bad)


def _reference_b64decode(text: str) -> bytes | None:
    """The rule b64decode keeps, spelled the slow way: RFC 4648's alphabet and padding, canonical pad bits."""
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw, validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    return data if base64.b64encode(data) == raw else None


def _last_letter_changed(data: bytes, letter: str) -> str:
    """``data`` in base64 with the letter before the padding replaced: other pad bits, mostly."""
    text = base64.b64encode(data).decode()
    body = text.rstrip("=")
    return body[:-1] + letter + text[len(body):]


@given(st.one_of(
    st.text(alphabet="AQgw+/9z=\n é-_", max_size=14),
    st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
    st.builds(_last_letter_changed, st.binary(min_size=1, max_size=8),
              st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/")),
))
def test_b64decode_accepts_exactly_the_strict_canonical_texts(text: str) -> None:
    """b64decode decodes in one strict C pass and re-encodes only a padded text (docs/performance.md
    section 7): it accepts and refuses exactly what the slow rule does."""
    expected = _reference_b64decode(text)
    if expected is None:
        with pytest.raises(ValueError):
            b64decode(text)
    else:
        assert b64decode(text) == expected


@given(st.one_of(
    st.text(alphabet="AQgw+/9z=\n é-_\x00", max_size=16),
    st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
    st.lists(st.binary(min_size=3, max_size=3), max_size=5).map(lambda bs: base64.b64encode(b"".join(bs)).decode()),
))
def test_b64decode_unpadded_accepts_exactly_the_unpadded_strict_texts(text: str) -> None:
    """b64decode_unpadded (the room keys' joined decode, docs/performance.md section 7) accepts exactly the
    texts b64decode accepts that have no padding and a length a multiple of 4, with the same bytes."""
    expected = _reference_b64decode(text)
    if expected is None or "=" in text or len(text) % 4:
        with pytest.raises(ValueError):
            b64decode_unpadded(text)
    else:
        assert b64decode_unpadded(text) == expected


@given(st.dictionaries(st.text(alphabet="abc-_09", max_size=40), st.text(alphabet="AZaz09+/=", max_size=700),
                      max_size=6), st.binary(max_size=300), st.binary(max_size=300))
def test_lp_text_pairs_is_lp_pairs_of_the_ascii(texts: dict[str, str], prefix: bytes, suffix: bytes) -> None:
    """A version 2 room message's signed bytes, built as one string (docs/performance.md section 7): the same
    bytes as the prefix, lp() of each name and text in the order given (lengths past 127 and 255 included), the
    suffix (any bytes); anything not ASCII is refused."""
    names = sorted(texts, reverse=True)
    expected = prefix + lp_pairs((name, texts[name].encode("ascii")) for name in names) + suffix
    assert lp_text_pairs(names, texts, prefix=prefix, suffix=suffix) == expected
    with pytest.raises(ValueError, match="ASCII"):
        lp_text_pairs([*names, "é"], {**texts, "é": "A"})
    with pytest.raises(ValueError, match="ASCII"):
        lp_text_pairs([*names, "a"], {**texts, "a": "\xff"})  # Latin-1 would give one byte, UTF-8 two
