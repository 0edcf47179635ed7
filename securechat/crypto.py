"""securechat's cryptographic construction (docs/protocol.md sections 3 and 6).

Pure functions over bytes and key objects, all primitives from
``cryptography``: RSA-OAEP-SHA256 to wrap a fresh AES-256 key, AES-256-GCM
for content, RSA-PSS-SHA256 (salt 32) for signatures. Every signed or
authenticated byte string is a concatenation of length-prefixed fields
(:func:`lp`), so no two different inputs collide.

Randomness and time are injectable (:func:`seal_envelope_from_parts`) so
known-answer vectors can be checked; the public API draws them fresh.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import jsoncodec
from .clock import now_ms
from .encoding import b64decode, b64encode, lp
from .envelope import (
    ENVELOPE_VERSION,
    GCM_NONCE_SIZE,
    ParsedEnvelope,
    check_addressing,
    parse_envelope,
)
from .errors import (
    BadKey,
    BadPlaintext,
    BadSignature,
    DecryptFailed,
    MalformedEnvelope,
    UnwrapFailed,
)

AUTH_LABEL: Final = b"securechat-auth-v1"
# Over TLS the auth input also covers the server identity (docs/protocol.md 6.1).
AUTH_LABEL_V2: Final = b"securechat-auth-v2"
SERVER_IDENTITY_SIZE: Final = 32
MESSAGE_LABEL: Final = b"securechat-msg-v1"
RSA_PUBLIC_EXPONENT: Final = 65537
DEFAULT_KEY_BITS: Final = 3072
MIN_KEY_BITS: Final = 2048
AES_KEY_SIZE: Final = 32
PSS_SALT_LENGTH: Final = 32
SERVER_ID_SIZE: Final = 16
AUTH_NONCE_SIZE: Final = 32
MESSAGE_ID_BYTES: Final = 16
# A generous bound on a PEM public key or a signature string on the wire (hello, key, room_update).
MAX_PEM_LENGTH: Final = 16_384

_PEM_BEGIN: Final = "-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = "-----END PUBLIC KEY-----"

_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
_OAEP: Final = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_SHA256: Final = hashes.SHA256()

PrivateKey = rsa.RSAPrivateKey
PublicKey = rsa.RSAPublicKey


# --- keys -----------------------------------------------------------------------------


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


# --- raw primitives (also run against the Wycheproof vectors) -------------------------


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


# --- session start (docs/protocol.md 6.1) ---------------------------------------------


def auth_message(server_id: bytes, name: str, nonce: bytes, server_identity: bytes | None = None) -> bytes:
    """The signed bytes of ``auth``: v1 over plaintext, v2 (bound to ``server_identity``) over TLS."""
    if server_identity is None:
        return lp(AUTH_LABEL, server_id, name, nonce)
    if len(server_identity) != SERVER_IDENTITY_SIZE:
        raise ValueError(f"a server identity is {SERVER_IDENTITY_SIZE} bytes, got {len(server_identity)}")
    return lp(AUTH_LABEL_V2, server_id, server_identity, name, nonce)


def sign_auth(
    key: rsa.RSAPrivateKey, server_id: bytes, name: str, nonce: bytes, server_identity: bytes | None = None
) -> bytes:
    """The ``auth`` signature proving possession of ``key`` to one server (the one with ``server_identity``), once."""
    return pss_sign(key, auth_message(server_id, name, nonce, server_identity))


def verify_auth(
    key: rsa.RSAPublicKey,
    signature: bytes,
    server_id: bytes,
    name: str,
    nonce: bytes,
    server_identity: bytes | None = None,
) -> bool:
    return pss_verify(key, signature, auth_message(server_id, name, nonce, server_identity))


# --- envelopes (docs/protocol.md 6.2) -------------------------------------------------


def envelope_header(sender: str, recipient: str, msg_id: str, ts: int) -> bytes:
    return lp(MESSAGE_LABEL, sender, recipient, msg_id, str(ts))


def envelope_signed_bytes(header: bytes, wrapped_key: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return header + lp(wrapped_key, nonce, ciphertext)


def new_message_id() -> str:
    return secrets.token_hex(MESSAGE_ID_BYTES)


def encode_plaintext(text: str) -> bytes:
    return jsoncodec.dumps({"text": text})


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


def open_envelope(
    recipient_key: rsa.RSAPrivateKey,
    recipient: str,
    sender_key: rsa.RSAPublicKey,
    envelope: object,
    frame_sender: str | None = None,
) -> OpenedMessage:
    """Run every recipient check of docs/protocol.md section 7 in order and return the message.

    ``frame_sender`` is the ``from`` of the enclosing ``message`` frame (None
    for a pasted payload, which has no frame). ``sender_key`` is the key the
    caller has pinned for the envelope's ``from``. Raises a subclass of
    :class:`~securechat.errors.EnvelopeRejected` naming the failed check.
    """
    parsed = parse_envelope(envelope)
    check_addressing(parsed, recipient, frame_sender)
    return open_parsed(recipient_key, sender_key, parsed)


def open_parsed(
    recipient_key: rsa.RSAPrivateKey, sender_key: rsa.RSAPublicKey, env: ParsedEnvelope
) -> OpenedMessage:
    """Checks 5 to 8 of docs/protocol.md section 7 on an envelope already parsed and addressed to us."""
    header = envelope_header(env.sender, env.recipient, env.msg_id, env.ts)
    signed = envelope_signed_bytes(header, env.wrapped_key, env.nonce, env.ciphertext)
    if not pss_verify(sender_key, env.signature, signed):
        raise BadSignature(f"signature does not verify with the key of '{env.sender}'")
    body = open_content(recipient_key, env.wrapped_key, env.nonce, env.ciphertext, header)
    return OpenedMessage(
        sender=env.sender,
        recipient=env.recipient,
        msg_id=env.msg_id,
        ts=env.ts,
        text=body["text"],
        plaintext=body,
    )


def open_content(
    recipient_key: rsa.RSAPrivateKey, wrapped_key: bytes, nonce: bytes, ciphertext: bytes, header: bytes
) -> dict[str, Any]:
    """Unwrap the AES key, open the ciphertext under ``header``, parse the plaintext object.

    Checks 6 to 8 of docs/protocol.md section 7 (and 10 to 12 of section 11.7).
    """
    aes_key = oaep_unwrap(recipient_key, wrapped_key)
    if len(aes_key) != AES_KEY_SIZE:
        raise UnwrapFailed(f"unwrapped key is {len(aes_key)} bytes, not {AES_KEY_SIZE}")
    plaintext = gcm_open(aes_key, nonce, ciphertext, header)
    try:
        # The same strict JSON as frames; a lone surrogate escape would crash a UI.
        body = jsoncodec.loads(plaintext)
    except jsoncodec.JSONRejected as exc:
        raise BadPlaintext(f"plaintext is not strict UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise BadPlaintext("plaintext is not an object with a string 'text'")
    return body


# --- the pasted payload (docs/protocol.md section 8) ----------------------------------


def encode_payload(envelope: Mapping[str, Any]) -> str:
    """base64 of the envelope's compact JSON text, on one line."""
    return b64encode(jsoncodec.dumps(envelope))


CUT_SHORT: Final = (
    "the payload is cut short: copy all of it (every row that /raw shows under the message), "
    "or write it whole with /raw FILE"
)


def decode_payload(payload: str) -> dict[str, Any]:
    """The envelope inside a pasted payload; raise :class:`MalformedEnvelope` that says what went wrong."""
    text = "".join(payload.split())
    if not text:
        raise MalformedEnvelope("the payload is empty")
    try:
        raw = b64decode(text)
    except ValueError:
        if _BASE64_TEXT.fullmatch(text) and len(text) % 4:
            raise MalformedEnvelope(CUT_SHORT) from None
        raise MalformedEnvelope(
            "the payload is not valid base64 (was something other than the payload copied with it?)"
        ) from None
    try:
        envelope = jsoncodec.loads(raw)
    except jsoncodec.JSONRejected:
        if raw.startswith(b"{") and not raw.endswith(b"}"):
            raise MalformedEnvelope(CUT_SHORT) from None
        raise MalformedEnvelope("the payload is damaged: it does not hold an envelope's JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedEnvelope("the payload is damaged: it does not hold a JSON object")
    return envelope


_BASE64_TEXT: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
