"""Signing entries, sealing and opening room envelopes (docs/protocol.md sections 11.2 and 11.5).

The construction of :mod:`securechat.crypto` with its primitives (RSA-PSS,
RSA-OAEP, AES-256-GCM, ``lp``), applied to a room: one AES key per message,
wrapped for every member of the sender's verified state, one signature over
the header, the wrapped keys (sorted by name), the nonce and the ciphertext.
Randomness and time are injectable (:func:`seal_room_from_parts`) for the
worked example and the tests.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..clock import now_ms
from ..encoding import b64encode, lp, lp_pairs, lp_text_pairs
from ..envelope import GCM_NONCE_SIZE
from ..errors import BadSignature, WrongRecipient
from .envelope import (
    ROOM_ENVELOPE_VERSION,
    ParsedRoomEnvelope,
    check_room_addressing,
    check_room_members,
    parse_room_envelope,
)
from .log import RoomEntry, RoomState, entry_signed_bytes

ROOM_MESSAGE_LABEL: Final = b"securechat-room-msg-v2"
ROOM_MESSAGE_LABEL_V1: Final = b"securechat-room-msg-v1"  # the old form (section 11.5), opened, never sealed


# --- entries (section 11.2) ----------------------------------------------------------


def sign_entry(
    key: rsa.RSAPrivateKey, room: str, seq: int, prev: bytes, op: str, by: str, name: str, kind: str, ts: int
) -> RoomEntry:
    """The entry ``by`` makes: its fields signed with ``by``'s key."""
    sig = crypto.pss_sign(key, entry_signed_bytes(room, seq, prev, op, by, name, kind, ts))
    return RoomEntry(room, seq, prev, op, by, name, kind, ts, sig)


def verify_entry(key: rsa.RSAPublicKey, entry: RoomEntry) -> bool:
    """True only if ``entry.sig`` is ``key``'s signature of the entry's signed bytes."""
    return crypto.pss_verify(key, entry.sig, entry.signed_bytes())


# --- room envelopes (section 11.5) -----------------------------------------------------


def room_header(
    room: str, sender: str, msg_id: str, ts: int, seq: int, head: bytes, version: int = ROOM_ENVELOPE_VERSION
) -> bytes:
    """What is signed first and is GCM's associated data: the room, sender, id, time and state."""
    label = ROOM_MESSAGE_LABEL_V1 if version == 1 else ROOM_MESSAGE_LABEL
    return lp(label, room, sender, msg_id, str(ts), str(seq), head)


def room_signed_bytes(header: bytes, wrapped: Mapping[str, bytes], nonce: bytes, ciphertext: bytes) -> bytes:
    """The header, then each member's name and wrapped key in ascending order of name, the nonce, the ciphertext.

    ``wrapped``: each key's base64 text as ASCII bytes (version 2), or its bytes (version 1).
    """
    # Code point order is UTF-8's byte order: sorted() is the order of the names' bytes.
    pairs = lp_pairs((name, wrapped[name]) for name in sorted(wrapped))
    return b"".join((header, pairs, lp(nonce, ciphertext)))


def room_signed_text(header: bytes, texts: Mapping[str, str], nonce: bytes, ciphertext: bytes) -> bytes:
    """Version 2's signed bytes: as :func:`room_signed_bytes` with each wrapped key's base64 text (ASCII) as sent."""
    return lp_text_pairs(sorted(texts), texts, prefix=header, suffix=lp(nonce, ciphertext))


def signed_bytes_of(env: ParsedRoomEnvelope, header: bytes) -> bytes:
    """What ``env``'s signature covers: the wrapped keys' texts (version 2) or bytes (version 1, the old form)."""
    if env.wrapped is None:
        return room_signed_text(header, env.keys, env.nonce, env.ciphertext)
    return room_signed_bytes(header, env.wrapped, env.nonce, env.ciphertext)


def seal_room_from_parts(
    sender_key: rsa.RSAPrivateKey,
    member_keys: Mapping[str, rsa.RSAPublicKey],
    state: RoomState,
    sender: str,
    text: str,
    *,
    msg_id: str,
    ts: int,
    aes_key: bytes,
    nonce: bytes,
    version: int = ROOM_ENVELOPE_VERSION,
) -> dict[str, Any]:
    """Seal with caller-chosen id, time, AES key and nonce (for known-answer tests only).

    ``member_keys`` must hold exactly the members of ``state`` (the sender too);
    ``version`` 1 makes the old form (tests of what still opens).
    """
    if set(member_keys) != set(state.members) or sender not in state.members:
        raise ValueError("a room message is sealed for exactly the members of the state, the sender among them")
    if len(aes_key) != crypto.AES_KEY_SIZE or len(nonce) != GCM_NONCE_SIZE:
        raise ValueError("AES key must be 32 bytes and the nonce 12 bytes")
    header = room_header(state.room, sender, msg_id, ts, state.seq, state.head, version)
    ciphertext = crypto.gcm_seal(aes_key, nonce, crypto.encode_plaintext(text), header)
    wrapped = {name: crypto.oaep_wrap(key, aes_key) for name, key in member_keys.items()}
    texts = {name: b64encode(wrapped[name]) for name in sorted(wrapped)}
    if version == 1:
        signed = room_signed_bytes(header, wrapped, nonce, ciphertext)
    else:
        signed = room_signed_text(header, texts, nonce, ciphertext)
    signature = crypto.pss_sign(sender_key, signed)
    return {
        "v": version,
        "room": state.room,
        "from": sender,
        "id": msg_id,
        "ts": ts,
        "seq": state.seq,
        "head": state.head.hex(),
        "keys": texts,
        "nonce": b64encode(nonce),
        "ct": b64encode(ciphertext),
        "sig": b64encode(signature),
    }


def seal_room(
    sender_key: rsa.RSAPrivateKey,
    member_keys: Mapping[str, rsa.RSAPublicKey],
    state: RoomState,
    sender: str,
    text: str,
    *,
    msg_id: str | None = None,
    ts: int | None = None,
) -> dict[str, Any]:
    """Encrypt ``text`` for every member of ``state`` under a fresh AES key and nonce, signed by ``sender``."""
    return seal_room_from_parts(
        sender_key,
        member_keys,
        state,
        sender,
        text,
        msg_id=msg_id if msg_id is not None else crypto.new_message_id(),
        ts=ts if ts is not None else now_ms(),
        aes_key=os.urandom(crypto.AES_KEY_SIZE),
        nonce=os.urandom(GCM_NONCE_SIZE),
    )


def open_room_parsed(
    recipient_key: rsa.RSAPrivateKey, recipient: str, sender_key: rsa.RSAPublicKey, env: ParsedRoomEnvelope
) -> crypto.OpenedMessage:
    """Checks 9 to 12 of section 11.7 on an envelope whose state and members are already checked."""
    header = room_header(env.room, env.sender, env.msg_id, env.ts, env.seq, env.head, env.version)
    if not crypto.pss_verify(sender_key, env.signature, signed_bytes_of(env, header)):
        raise BadSignature(f"signature does not verify with the key of '{env.sender}'")
    wrapped = env.wrapped_key(recipient)  # version 2: only our own is decoded (section 11.5)
    if wrapped is None:
        raise WrongRecipient(f"the message to {env.room} has no key for '{recipient}'")
    body = crypto.open_content(recipient_key, wrapped, env.nonce, env.ciphertext, header)
    return crypto.OpenedMessage(env.sender, env.room, env.msg_id, env.ts, body["text"], body)


def open_room_envelope(
    recipient_key: rsa.RSAPrivateKey,
    recipient: str,
    sender_key: rsa.RSAPublicKey,
    envelope: object,
    members: Collection[str],
    frame_room: str | None = None,
    frame_sender: str | None = None,
) -> crypto.OpenedMessage:
    """Every check of section 11.7 but the state lookup, in order; ``members`` are those of the named state.

    The caller has found the envelope's (``seq``, ``head``) in its verified chain
    (check 4) and passes that state's members; ``frame_room`` and ``frame_sender``
    are None for a pasted payload.
    """
    env = parse_room_envelope(envelope)
    check_room_addressing(env, frame_room, frame_sender)
    check_room_members(env, members, recipient)
    return open_room_parsed(recipient_key, recipient, sender_key, env)
