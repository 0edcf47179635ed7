"""The room envelope's format and the receiver's checks that need no key (docs/protocol.md 11.5, 11.7).

Two levels, like :mod:`securechat.envelope` for one-to-one envelopes:
:func:`check_room_envelope` checks the structure (what the server checks
before routing: it decodes nothing), :func:`parse_room_envelope` also decodes
the base64 fields strictly and checks the sizes the construction fixes. Then
:func:`check_room_addressing` (checks 1 to 3 of section 11.7) and
:func:`check_room_members` (checks 5 to 7, against a verified state). All raise
a subclass of :class:`~securechat.errors.EnvelopeRejected`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..encoding import b64decode_unpadded
from ..envelope import GCM_NONCE_SIZE, GCM_TAG_SIZE, check_common_fields, decode_field
from ..errors import (
    MalformedEnvelope,
    MemberMismatch,
    NotAMember,
    RoomMismatch,
    SenderMismatch,
    UnsupportedVersion,
    WrongRecipient,
)
from ..names import NAME_PATTERN, is_valid_room
from .log import MAX_ROOM_MEMBERS, is_head, is_seq

# A wrapped key is as long as its member's modulus; the frame limit bounds the whole.
MAX_WRAPPED_B64: Final = 4096
# Sealed as version 2 (the wrapped keys signed as text); version 1, the old form, still opens (section 11.5).
ROOM_ENVELOPE_VERSION: Final = 2
ROOM_VERSIONS: Final = (1, 2)
ROOM_NAME_FIELDS: Final = ("from",)
ROOM_B64_FIELDS: Final = ("nonce", "ct", "sig")
_NAME_MATCH: Final = NAME_PATTERN.fullmatch


def is_room_envelope(envelope: object) -> bool:
    """True if ``envelope`` claims to be a room envelope (it has a ``room`` field)."""
    return isinstance(envelope, Mapping) and "room" in envelope


@dataclass(frozen=True, slots=True)
class RoomEnvelopeFields:
    """A room envelope whose structure is checked; the binary fields are still base64."""

    version: int
    room: str
    sender: str
    msg_id: str
    ts: int
    seq: int
    head: str
    keys: dict[str, str]


@dataclass(frozen=True, slots=True)
class ParsedRoomEnvelope:
    """A room envelope's fields, checked and decoded, not yet verified.

    ``keys`` are the wrapped keys' base64 texts as sent; ``wrapped`` their bytes, all
    decoded for the old form (version 1 signs the bytes), None for version 2 (it signs
    the texts: a reader decodes only its own, section 11.5).
    """

    version: int
    room: str
    sender: str
    msg_id: str
    ts: int
    seq: int
    head: bytes
    keys: dict[str, str]
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    wrapped: dict[str, bytes] | None = None

    def wrapped_key(self, name: str) -> bytes | None:
        """``name``'s wrapped key as bytes (strict base64; :class:`MalformedEnvelope`), None if it has none."""
        if self.wrapped is not None:
            return self.wrapped.get(name)
        text = self.keys.get(name)
        return None if text is None else decode_field(f"keys.{name}", text)

    def signed_keys(self) -> dict[str, bytes]:
        """What the signature covers for each member: its wrapped key's bytes (version 1) or text (version 2)."""
        if self.wrapped is not None:
            return self.wrapped
        return {name: text.encode("ascii") for name, text in self.keys.items()}


def _check_keys(keys: object) -> dict[str, str]:
    if not isinstance(keys, Mapping) or not 1 <= len(keys) <= MAX_ROOM_MEMBERS:
        raise MalformedEnvelope(f"envelope 'keys' must be an object of 1 to {MAX_ROOM_MEMBERS} wrapped keys")
    # A plain loop: after an RSA operation every cache is cold, and one call per key of a few
    # builtins costs less than one call over all keys of each of many (docs/performance.md section 7).
    for name, wrapped in keys.items():
        if not isinstance(name, str) or _NAME_MATCH(name) is None:
            raise MalformedEnvelope("every name in envelope 'keys' must be a valid name")
        if type(wrapped) is not str or len(wrapped) > MAX_WRAPPED_B64 or not wrapped.isascii():
            raise MalformedEnvelope(f"the wrapped key for '{name}' must be a base64 string")
    return dict(keys)


def _checked(envelope: object) -> tuple[Mapping[str, Any], dict[str, str]]:
    """The structure checks of :func:`check_room_envelope`: the envelope's fields and its ``keys``, checked."""
    fields = check_common_fields(envelope, ROOM_NAME_FIELDS, ROOM_B64_FIELDS)
    if not is_valid_room(fields.get("room")):
        raise MalformedEnvelope("envelope 'room' is not a room name")
    if not is_seq(fields.get("seq")):
        raise MalformedEnvelope("envelope 'seq' must be an integer from 0 to 2**53 - 1")
    if not is_head(fields.get("head")):
        raise MalformedEnvelope("envelope 'head' must be 64 lowercase hex digits")
    return fields, _check_keys(fields.get("keys"))


def check_room_envelope(envelope: object) -> RoomEnvelopeFields:
    """Check a room envelope's structure (not its base64 or crypto); raise :class:`MalformedEnvelope`.

    The fields it shares with a one-to-one envelope are checked by the one checker of
    :mod:`securechat.envelope`; then ``room``, ``seq``, ``head`` and ``keys``.
    """
    fields, keys = _checked(envelope)
    return RoomEnvelopeFields(
        fields["v"], fields["room"], fields["from"], fields["id"], fields["ts"], fields["seq"], fields["head"], keys
    )


def parse_room_envelope(envelope: object) -> ParsedRoomEnvelope:
    """Check the structure and decode the base64 fields (check 0 of section 11.7)."""
    fields, keys = _checked(envelope)  # the checks of check_room_envelope, without building its result
    nonce = decode_field("nonce", fields["nonce"])
    if len(nonce) != GCM_NONCE_SIZE:
        raise MalformedEnvelope(f"envelope 'nonce' must be {GCM_NONCE_SIZE} bytes")
    ciphertext = decode_field("ct", fields["ct"])
    if len(ciphertext) < GCM_TAG_SIZE:
        raise MalformedEnvelope("envelope 'ct' is shorter than the GCM tag")
    signature = decode_field("sig", fields["sig"])
    version = fields["v"]
    wrapped = _decode_keys(keys) if version == 1 else None  # the old form signs the bytes
    return ParsedRoomEnvelope(
        version, fields["room"], fields["from"], fields["id"], fields["ts"], fields["seq"],
        bytes.fromhex(fields["head"]), keys, nonce, ciphertext, signature, wrapped,
    )


def _decode_keys(keys: Mapping[str, str]) -> dict[str, bytes]:
    """Every wrapped key decoded strictly, as :func:`decode_field` would one by one.

    Base64 without padding (a wrapped key of a multiple of 3 bytes: RSA-3072, the
    default) side by side is one base64 text that decodes to the keys side by side:
    one decode for all such keys instead of one each (docs/performance.md section 7).
    Padded keys, and all of them after a failure, go one by one, which names the bad key.
    """
    whole = [name for name, value in keys.items() if not len(value) % 4 and value[-1:] != "="]
    try:
        joined = b64decode_unpadded("".join([keys[name] for name in whole]))
    except ValueError:
        whole = []  # one of them is bad: one by one below says which
    decoded: dict[str, bytes] = {}
    at = 0
    for name in whole:
        size = len(keys[name]) // 4 * 3
        decoded[name] = joined[at : at + size]
        at += size
    if len(decoded) == len(keys):
        return decoded  # in the envelope's order already
    return {
        name: decoded[name] if name in decoded else decode_field(f"keys.{name}", value)
        for name, value in keys.items()
    }


def check_room_addressing(env: ParsedRoomEnvelope, frame_room: str | None, frame_sender: str | None) -> None:
    """Checks 1 to 3 of section 11.7: ``v``, ``room``, ``from`` (None for a pasted payload: no frame)."""
    if env.version not in ROOM_VERSIONS:
        raise UnsupportedVersion(f"room envelope version {env.version} is not 1 or 2")
    if frame_room is not None and env.room != frame_room:
        raise RoomMismatch(f"envelope is for '{env.room}' but the server says '{frame_room}'")
    if frame_sender is not None and env.sender != frame_sender:
        raise SenderMismatch(f"envelope claims '{env.sender}' but the server says '{frame_sender}'")


def check_room_members(env: ParsedRoomEnvelope, members: Collection[str], me: str) -> None:
    """Checks 5 to 7 of section 11.7, against the members of the state the envelope names."""
    if env.sender not in members:
        raise NotAMember(f"'{env.sender}' is not a member of {env.room} at seq {env.seq}")
    if me not in members:
        raise WrongRecipient(f"we are not a member of {env.room} at seq {env.seq}")
    names = env.keys.keys()
    # A set compares with the keys' view as it is, without a copy of either (the state's members are one).
    if names != (members if isinstance(members, (set, frozenset)) else set(members)):
        extra = sorted(set(env.keys) - set(members))
        missing = sorted(set(members) - set(env.keys))
        detail = "; ".join(
            part
            for part in (
                f"keys for non-members: {', '.join(extra)}" if extra else "",
                f"no key for members: {', '.join(missing)}" if missing else "",
            )
            if part
        )
        raise MemberMismatch(f"the keys are not for the members of {env.room} at seq {env.seq} ({detail})")

