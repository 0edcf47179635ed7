"""The envelope's format and the one checker every role calls (docs/protocol.md sections 6.2 and 7).

Two levels of the same rules:

- :func:`validate_envelope` checks the structure: every field present with
  its type, names that are names, an id of 32 hex digits, ``0 <= ts < 2**53``,
  the base64 fields strings of bounded length. The server calls it before it
  routes (it forwards what it cannot read, so it decodes nothing);
  :func:`check_envelope` also returns the fields. Its checks of the fields every
  envelope has are :func:`check_common_fields`, which the room envelope's checker
  (:mod:`securechat.rooms.envelope`) calls too.
- :func:`parse_envelope` does that and decodes the base64 fields strictly,
  checking the sizes the construction fixes. The recipient and the pasted
  payload reader call it before any key is touched.

:func:`check_addressing` is the recipient's next step: version, recipient,
sender, in the order of its section 7. Everything raises a subclass of
:class:`~securechat.errors.EnvelopeRejected`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .encoding import b64decode
from .errors import MalformedEnvelope, SenderMismatch, UnsupportedVersion, WrongRecipient
from .names import NAME_PATTERN

ENVELOPE_VERSION: Final = 1
MESSAGE_ID_PATTERN: Final = re.compile(r"[0-9a-f]{32}")
# Times are milliseconds since the epoch, exact in a double (JavaScript clients).
MAX_TS: Final = 1 << 53
GCM_NONCE_SIZE: Final = 12
GCM_TAG_SIZE: Final = 16
# A generous bound on one base64 field; the frame limit bounds the total.
MAX_B64_FIELD: Final = 2 << 20
NAME_FIELDS: Final = ("from", "to")
B64_FIELDS: Final = ("key", "nonce", "ct", "sig")


def is_message_id(value: object) -> bool:
    """True for an envelope id: 32 lowercase hex digits."""
    return isinstance(value, str) and MESSAGE_ID_PATTERN.fullmatch(value) is not None


def is_timestamp(value: object) -> bool:
    """True for a time on the wire: an integer (not a boolean) with ``0 <= value < 2**53``."""
    return type(value) is int and 0 <= value < MAX_TS


@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    """An envelope whose structure is checked; the binary fields are still base64."""

    version: int
    sender: str
    recipient: str
    msg_id: str
    ts: int
    key: str
    nonce: str
    ct: str
    sig: str


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """An envelope's fields, checked and decoded, not yet verified."""

    version: int
    sender: str
    recipient: str
    msg_id: str
    ts: int
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes


_NAME_MATCH: Final = NAME_PATTERN.fullmatch
_ID_MATCH: Final = MESSAGE_ID_PATTERN.fullmatch


def check_common_fields(
    envelope: object, name_fields: tuple[str, ...], b64_fields: tuple[str, ...]
) -> Mapping[str, Any]:
    """The structure checks every envelope shares (one-to-one, section 6.2; room, section 11.5): an
    object, ``v`` an integer, ``name_fields`` names, ``id``, ``ts``, ``b64_fields`` bounded strings."""
    if type(envelope) is not dict and not isinstance(envelope, Mapping):
        raise MalformedEnvelope("envelope is not a JSON object")
    get = envelope.get
    if type(get("v")) is not int:  # a JSON true is not 1
        raise MalformedEnvelope("envelope 'v' must be an integer")
    for key in name_fields:
        name = get(key)
        if not isinstance(name, str) or _NAME_MATCH(name) is None:
            raise MalformedEnvelope(f"envelope '{key}' is not a valid name")
    msg_id = get("id")
    if not isinstance(msg_id, str) or _ID_MATCH(msg_id) is None:
        raise MalformedEnvelope("envelope 'id' must be 32 lowercase hex digits")
    if not is_timestamp(get("ts")):
        raise MalformedEnvelope("envelope 'ts' must be an integer from 0 to 2**53 - 1")
    for key in b64_fields:
        value = get(key)
        if not isinstance(value, str) or len(value) > MAX_B64_FIELD:
            raise MalformedEnvelope(f"envelope '{key}' must be a base64 string")
    return envelope


def validate_envelope(envelope: object) -> None:
    """The structure checks of :func:`check_envelope`, without building its result (the relay's hot path)."""
    check_common_fields(envelope, NAME_FIELDS, B64_FIELDS)


def check_envelope(envelope: object) -> EnvelopeFields:
    """Check the envelope's structure (not its base64 or crypto); raise :class:`MalformedEnvelope`."""
    validate_envelope(envelope)
    assert isinstance(envelope, Mapping)
    return EnvelopeFields(
        envelope["v"],
        envelope["from"],
        envelope["to"],
        envelope["id"],
        envelope["ts"],
        envelope["key"],
        envelope["nonce"],
        envelope["ct"],
        envelope["sig"],
    )


def decode_field(key: str, value: str) -> bytes:
    """A base64 envelope field decoded strictly; raise :class:`MalformedEnvelope` naming it."""
    try:
        return b64decode(value)
    except ValueError:
        raise MalformedEnvelope(f"envelope '{key}' is not valid base64") from None


def parse_envelope(envelope: object) -> ParsedEnvelope:
    """Check the structure and decode the base64 fields; raise :class:`MalformedEnvelope`."""
    fields = check_envelope(envelope)
    nonce = decode_field("nonce", fields.nonce)
    if len(nonce) != GCM_NONCE_SIZE:
        raise MalformedEnvelope(f"envelope 'nonce' must be {GCM_NONCE_SIZE} bytes")
    ciphertext = decode_field("ct", fields.ct)
    if len(ciphertext) < GCM_TAG_SIZE:
        raise MalformedEnvelope("envelope 'ct' is shorter than the GCM tag")
    return ParsedEnvelope(
        fields.version,
        fields.sender,
        fields.recipient,
        fields.msg_id,
        fields.ts,
        decode_field("key", fields.key),
        nonce,
        ciphertext,
        decode_field("sig", fields.sig),
    )


def check_addressing(envelope: ParsedEnvelope, recipient: str, frame_sender: str | None = None) -> None:
    """The recipient's checks that need no key, in the order of docs/protocol.md section 7: ``v``, ``to``, ``from``.

    ``frame_sender`` is the ``from`` of the enclosing ``message`` frame (None
    for a pasted payload, which has no frame).
    """
    if envelope.version != ENVELOPE_VERSION:
        raise UnsupportedVersion(f"envelope version {envelope.version} is not {ENVELOPE_VERSION}")
    if envelope.recipient != recipient:
        raise WrongRecipient(f"envelope is addressed to '{envelope.recipient}', not '{recipient}'")
    if frame_sender is not None and envelope.sender != frame_sender:
        raise SenderMismatch(f"envelope claims '{envelope.sender}' but the server says '{frame_sender}'")
