"""How names, room names and fingerprints are spelled: the one place for these rules.

A **name** (docs/protocol.md section 3) matches ``[a-z0-9][a-z0-9_-]{0,31}``.
The server never normalises; a client strips and lowercases what a person
typed (:func:`parse_typed_name`) and refuses anything else locally, before it
reaches the wire.

A **room name** (docs/protocol.md section 11.1) is ``#`` and a name; the ``#``
is part of it everywhere, so a room is never read as a user
(:func:`is_valid_room`, :func:`parse_typed_room`; :func:`parse_typed_target`
for what a person addresses: a room if it starts with ``#``, else a user).

A **fingerprint** is the SHA-256 of a key's DER SubjectPublicKeyInfo as 64
lowercase hex digits. People paste it with spaces, colons or dashes and in
either case (:func:`parse_fingerprint`); it is shown in groups of four
(:func:`format_fingerprint`).
"""

from __future__ import annotations

import re
from typing import Final

from .errors import InvalidFingerprint, InvalidName, InvalidRoomName

MAX_NAME_LENGTH: Final = 32
NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NAME_RULE: Final = "a-z, 0-9, '_' and '-', starting with a letter or digit, 1 to 32 characters"
ROOM_PREFIX: Final = "#"
ROOM_PATTERN: Final = re.compile(r"#[a-z0-9][a-z0-9_-]{0,31}")
ROOM_RULE: Final = "'#' and a name: " + NAME_RULE

FINGERPRINT_HEX_LENGTH: Final = 64
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")
# What people put between the hex digits when they copy a fingerprint.
_FINGERPRINT_SEPARATORS: Final = re.compile(r"[\s:-]+")
_SHOWN_LIMIT: Final = 40


def is_valid_name(value: object) -> bool:
    """True if ``value`` is a name as it appears on the wire."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def shown(value: str, limit: int = _SHOWN_LIMIT) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def parse_typed_name(typed: str) -> str:
    """The wire form of a name a person typed (stripped, lowercased); raise :class:`InvalidName`."""
    name = typed.strip().lower()
    if NAME_PATTERN.fullmatch(name) is None:
        raise InvalidName(typed)
    return name


def is_valid_room(value: object) -> bool:
    """True if ``value`` is a room name as it appears on the wire (``#ops``)."""
    return isinstance(value, str) and ROOM_PATTERN.fullmatch(value) is not None


def parse_typed_room(typed: str) -> str:
    """The wire form of a room name a person typed (stripped, lowercased); raise :class:`InvalidRoomName`."""
    room = typed.strip().lower()
    if ROOM_PATTERN.fullmatch(room) is None:
        raise InvalidRoomName(typed)
    return room


def parse_typed_target(typed: str) -> str:
    """What a person addresses: a room (it starts with ``#``) or a user, in wire form."""
    return parse_typed_room(typed) if typed.strip().startswith(ROOM_PREFIX) else parse_typed_name(typed)


def is_room(target: str) -> bool:
    """True if a valid target (a name or a room name) is a room."""
    return target.startswith(ROOM_PREFIX)


def parse_fingerprint(typed: str) -> str:
    """64 lowercase hex digits from a fingerprint as people copy it; raise :class:`InvalidFingerprint`."""
    digits = _FINGERPRINT_SEPARATORS.sub("", typed).lower()
    if _FINGERPRINT.fullmatch(digits) is None:
        raise InvalidFingerprint(typed)
    return digits


def format_fingerprint(hex_fingerprint: str) -> str:
    """The fingerprint as people compare it: groups of four hex digits."""
    return " ".join(hex_fingerprint[i : i + 4] for i in range(0, len(hex_fingerprint), 4))


def short_fingerprint(hex_fingerprint: str | None) -> str:
    """The first eight hex digits (two groups), enough to recognise a key at a glance."""
    return format_fingerprint(hex_fingerprint[:8]) if hex_fingerprint else "?"
