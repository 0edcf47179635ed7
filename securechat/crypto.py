"""securechat's cryptographic construction (protocol v1, sections 2, 3, 5, 6).

Pure functions over bytes and key objects, all primitives from
``cryptography``: RSA-OAEP-SHA256 to wrap a fresh AES-256 key, AES-256-GCM
for content, RSA-PSS-SHA256 (salt 32) for signatures. Every signed or
authenticated byte string is a concatenation of length-prefixed fields
(:func:`lp`), so no two different inputs collide.

Randomness and time are injectable (:func:`seal_envelope_from_parts`) so
known-answer vectors can be checked; the public API draws them fresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
    BadKey,
    BadPlaintext,
    BadSignature,
    DecryptFailed,
    MalformedEnvelope,
    SenderMismatch,
    UnsupportedVersion,
    UnwrapFailed,
    WrongRecipient,
)
from .protocol import _JSON_DECODER as _STRICT_JSON
from .protocol import ENVELOPE_ID_PATTERN, _has_lone_surrogate, is_valid_name

AUTH_LABEL: Final = b"securechat-auth-v1"
MESSAGE_LABEL: Final = b"securechat-msg-v1"
ENVELOPE_VERSION: Final = 1
RSA_PUBLIC_EXPONENT: Final = 65537
DEFAULT_KEY_BITS: Final = 3072
MIN_KEY_BITS: Final = 2048
AES_KEY_SIZE: Final = 32
GCM_NONCE_SIZE: Final = 12
GCM_TAG_SIZE: Final = 16
PSS_SALT_LENGTH: Final = 32
SERVER_ID_SIZE: Final = 16
AUTH_NONCE_SIZE: Final = 32
MESSAGE_ID_BYTES: Final = 16

_PEM_BEGIN: Final = "-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = "-----END PUBLIC KEY-----"
_U32: Final = struct.Struct(">I")

_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
_OAEP: Final = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_SHA256: Final = hashes.SHA256()

PrivateKey = rsa.RSAPrivateKey
PublicKey = rsa.RSAPublicKey


# --- encoding helpers ----------------------------------------------------------------


def lp(*fields: bytes | str) -> bytes:
    """``uint32_be(len(x)) || x`` for each field, concatenated; text is UTF-8 first."""
    out = bytearray()
    for field in fields:
        data = field.encode("utf-8") if isinstance(field, str) else field
        out += _U32.pack(len(data))
        out += data
    return bytes(out)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard base64: alphabet and padding checked; raises ``ValueError``."""
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"invalid base64 ({exc})") from None
    # Non-zero pad bits ("AB==" for b"\0") decode fine; requiring the canonical
    # spelling keeps envelopes non-malleable outside what the signature covers.
    if base64.b64encode(data) != raw:
        raise ValueError("non-canonical base64 (pad bits are not zero)")
    return data


# --- keys ------------------------------------------------------------------------------


def generate_private_key(bits: int = DEFAULT_KEY_BITS) -> rsa.RSAPrivateKey:
    """A new RSA identity key (public exponent 65537)."""
    if bits < MIN_KEY_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_KEY_BITS} bits")
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=bits)


def public_key_pem(key: rsa.RSAPublicKey) -> str:
    """The key as PEM SubjectPublicKeyInfo text."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def check_public_key(key: object) -> rsa.RSAPublicKey:
    """Return ``key`` if protocol v1 accepts it as an identity key, else raise :class:`BadKey`."""
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadKey(f"expected an RSA public key, got {type(key).__name__}")
    if key.public_numbers().e != RSA_PUBLIC_EXPONENT:
        raise BadKey(f"RSA public exponent must be {RSA_PUBLIC_EXPONENT}")
    if key.key_size < MIN_KEY_BITS:
        raise BadKey(f"RSA modulus of {key.key_size} bits is below the minimum of {MIN_KEY_BITS}")
    return key


def load_public_key_pem(pem: str) -> rsa.RSAPublicKey:
    """Parse exactly one PEM SubjectPublicKeyInfo block holding an acceptable RSA key.

    ``cryptography`` ignores text after the first block; we do not, so a key
    has one spelling on the wire (surrounding whitespace aside).
    """
    text = pem.strip()
    if (
        not text.startswith(_PEM_BEGIN)
        or not text.endswith(_PEM_END)
        or text.count("-----BEGIN") != 1
        # cryptography stops at the first END line, so "BEGIN..END junk END" would pass.
        or text.count("-----END") != 1
    ):
        raise BadKey("expected exactly one '-----BEGIN PUBLIC KEY-----' PEM block")
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError) as exc:
        raise BadKey(f"cannot parse PEM public key ({exc.__class__.__name__})") from None
    return check_public_key(key)


def public_key_der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, as 64 lowercase hex digits."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def format_fingerprint(hex_fingerprint: str) -> str:
    """The fingerprint as people compare it: groups of four hex digits."""
    return " ".join(hex_fingerprint[i : i + 4] for i in range(0, len(hex_fingerprint), 4))


# --- raw primitives (also run against the Wycheproof vectors) --------------------------


def pss_sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSASSA-PSS, SHA-256, MGF1-SHA-256, salt length 32."""
    return key.sign(message, _PSS, _SHA256)


def pss_verify(key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> bool:
    """True only if ``signature`` is a valid PSS-SHA256 (salt 32) signature of ``message``."""
    try:
        key.verify(signature, message, _PSS, _SHA256)
    except InvalidSignature:
        return False
    return True


def oaep_wrap(key: rsa.RSAPublicKey, plaintext: bytes) -> bytes:
    """RSAES-OAEP, SHA-256, MGF1-SHA-256, empty label."""
    return key.encrypt(plaintext, _OAEP)


def oaep_unwrap(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    """Inverse of :func:`oaep_wrap`; raises :class:`UnwrapFailed`."""
    try:
        return key.decrypt(ciphertext, _OAEP)
    except ValueError:
        raise UnwrapFailed("the AES key does not unwrap with our private key") from None


def gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-GCM; returns ciphertext || 16-byte tag."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def gcm_open(key: bytes, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`gcm_seal`; raises :class:`DecryptFailed` on any tag failure."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext_and_tag, aad)
    except (InvalidTag, ValueError):
        raise DecryptFailed("AES-GCM authentication failed") from None


# --- session start (section 3) -----------------------------------------------------------


def auth_message(server_id: bytes, name: str, nonce: bytes) -> bytes:
    return lp(AUTH_LABEL, server_id, name, nonce)


def sign_auth(key: rsa.RSAPrivateKey, server_id: bytes, name: str, nonce: bytes) -> bytes:
    """The ``auth`` signature proving possession of ``key`` to one server, once."""
    return pss_sign(key, auth_message(server_id, name, nonce))


def verify_auth(key: rsa.RSAPublicKey, signature: bytes, server_id: bytes, name: str, nonce: bytes) -> bool:
    return pss_verify(key, signature, auth_message(server_id, name, nonce))


# --- envelopes (section 5) ----------------------------------------------------------------


def envelope_header(sender: str, recipient: str, msg_id: str, ts: int) -> bytes:
    return lp(MESSAGE_LABEL, sender, recipient, msg_id, str(ts))


def envelope_signed_bytes(header: bytes, wrapped_key: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return header + lp(wrapped_key, nonce, ciphertext)


def new_message_id() -> str:
    return secrets.token_hex(MESSAGE_ID_BYTES)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode_plaintext(text: str) -> bytes:
    return json.dumps({"text": text}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal_envelope_from_parts(
    sender_key: rsa.RSAPrivateKey,
    recipient_key: rsa.RSAPublicKey,
    sender: str,
    recipient: str,
    text: str,
    *,
    msg_id: str,
    ts: int,
    aes_key: bytes,
    nonce: bytes,
) -> dict[str, Any]:
    """Seal with caller-chosen id, time, AES key and nonce (for known-answer tests only)."""
    if len(aes_key) != AES_KEY_SIZE or len(nonce) != GCM_NONCE_SIZE:
        raise ValueError("AES key must be 32 bytes and the nonce 12 bytes")
    header = envelope_header(sender, recipient, msg_id, ts)
    ciphertext = gcm_seal(aes_key, nonce, encode_plaintext(text), header)
    wrapped = oaep_wrap(recipient_key, aes_key)
    signature = pss_sign(sender_key, envelope_signed_bytes(header, wrapped, nonce, ciphertext))
    return {
        "v": ENVELOPE_VERSION,
        "from": sender,
        "to": recipient,
        "id": msg_id,
        "ts": ts,
        "key": b64encode(wrapped),
        "nonce": b64encode(nonce),
        "ct": b64encode(ciphertext),
        "sig": b64encode(signature),
    }


def seal_envelope(
    sender_key: rsa.RSAPrivateKey,
    recipient_key: rsa.RSAPublicKey,
    sender: str,
    recipient: str,
    text: str,
    *,
    msg_id: str | None = None,
    ts: int | None = None,
) -> dict[str, Any]:
    """Encrypt ``text`` for ``recipient`` under a fresh AES key and nonce, signed by ``sender``."""
    return seal_envelope_from_parts(
        sender_key,
        recipient_key,
        sender,
        recipient,
        text,
        msg_id=msg_id if msg_id is not None else new_message_id(),
        ts=ts if ts is not None else now_ms(),
        aes_key=os.urandom(AES_KEY_SIZE),
        nonce=os.urandom(GCM_NONCE_SIZE),
    )


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """An envelope that passed every check."""

    sender: str
    recipient: str
    msg_id: str
    ts: int
    text: str
    plaintext: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """An envelope's fields, type-checked and base64-decoded, not yet verified."""

    version: int
    sender: str
    recipient: str
    msg_id: str
    ts: int
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes


def parse_envelope(envelope: object) -> ParsedEnvelope:
    """Check types and decode base64; raise :class:`MalformedEnvelope`."""
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelope("envelope is not a JSON object")
    version = envelope.get("v")
    if type(version) is not int:
        raise MalformedEnvelope("'v' must be an integer")
    fields: dict[str, str] = {}
    for key in ("from", "to", "id", "key", "nonce", "ct", "sig"):
        value = envelope.get(key)
        if not isinstance(value, str):
            raise MalformedEnvelope(f"'{key}' must be a string")
        fields[key] = value
    ts = envelope.get("ts")
    if type(ts) is not int or ts < 0:
        raise MalformedEnvelope("'ts' must be a non-negative integer")
    if not is_valid_name(fields["from"]) or not is_valid_name(fields["to"]):
        raise MalformedEnvelope("'from' and 'to' must be valid names")
    if ENVELOPE_ID_PATTERN.fullmatch(fields["id"]) is None:
        raise MalformedEnvelope("'id' must be 32 lowercase hex digits")
    decoded: dict[str, bytes] = {}
    for key in ("key", "nonce", "ct", "sig"):
        try:
            decoded[key] = b64decode(fields[key])
        except ValueError:
            raise MalformedEnvelope(f"'{key}' is not valid base64") from None
    if len(decoded["nonce"]) != GCM_NONCE_SIZE:
        raise MalformedEnvelope(f"'nonce' must be {GCM_NONCE_SIZE} bytes")
    if len(decoded["ct"]) < GCM_TAG_SIZE:
        raise MalformedEnvelope("'ct' is shorter than the GCM tag")
    return ParsedEnvelope(
        version=version,
        sender=fields["from"],
        recipient=fields["to"],
        msg_id=fields["id"],
        ts=ts,
        wrapped_key=decoded["key"],
        nonce=decoded["nonce"],
        ciphertext=decoded["ct"],
        signature=decoded["sig"],
    )


def open_envelope(
    recipient_key: rsa.RSAPrivateKey,
    recipient: str,
    sender_key: rsa.RSAPublicKey,
    envelope: object,
    frame_sender: str | None = None,
) -> OpenedMessage:
    """Run the recipient's checks in the order of section 5 and return the message.

    ``frame_sender`` is the ``from`` of the enclosing ``message`` frame (None
    for a pasted payload, which has no frame). ``sender_key`` is the key the
    caller has pinned for the envelope's ``from``. Raises a subclass of
    :class:`~securechat.errors.EnvelopeRejected` naming the failed check.
    """
    env = parse_envelope(envelope)
    if env.version != ENVELOPE_VERSION:
        raise UnsupportedVersion(f"envelope version {env.version} is not 1")
    if env.recipient != recipient:
        raise WrongRecipient(f"envelope is addressed to '{env.recipient}', not '{recipient}'")
    if frame_sender is not None and env.sender != frame_sender:
        raise SenderMismatch(f"envelope claims '{env.sender}' but the server says '{frame_sender}'")
    header = envelope_header(env.sender, env.recipient, env.msg_id, env.ts)
    signed = envelope_signed_bytes(header, env.wrapped_key, env.nonce, env.ciphertext)
    if not pss_verify(sender_key, env.signature, signed):
        raise BadSignature(f"signature does not verify with the key of '{env.sender}'")
    aes_key = oaep_unwrap(recipient_key, env.wrapped_key)
    if len(aes_key) != AES_KEY_SIZE:
        raise UnwrapFailed(f"unwrapped key is {len(aes_key)} bytes, not {AES_KEY_SIZE}")
    plaintext = gcm_open(aes_key, env.nonce, env.ciphertext, header)
    try:
        # The same strict JSON as frames: no duplicate keys, NaN/Infinity.
        body = _STRICT_JSON.decode(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadPlaintext("plaintext is not UTF-8 JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise BadPlaintext("plaintext is not an object with a string 'text'")
    # A lone surrogate escape parses but cannot be printed or re-encoded as UTF-8:
    # a UI would crash on it.
    if _has_lone_surrogate(body):
        raise BadPlaintext("plaintext holds an unpaired surrogate escape")
    return OpenedMessage(
        sender=env.sender,
        recipient=env.recipient,
        msg_id=env.msg_id,
        ts=env.ts,
        text=body["text"],
        plaintext=body,
    )


# --- the pasted payload (section 6) ---------------------------------------------------------


def encode_payload(envelope: Mapping[str, Any]) -> str:
    """base64 of the envelope's JSON text, on one line."""
    return b64encode(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def decode_payload(payload: str) -> dict[str, Any]:
    """The envelope inside a pasted payload; raise :class:`MalformedEnvelope`."""
    try:
        raw = b64decode("".join(payload.split()))
    except ValueError:
        raise MalformedEnvelope("payload is not valid base64 (truncated or mangled when copied?)") from None
    try:
        envelope = _STRICT_JSON.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedEnvelope("payload does not hold an envelope's JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedEnvelope("payload does not hold a JSON object")
    return envelope
