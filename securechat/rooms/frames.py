"""The field checks of the room frames, both directions (docs/protocol.md section 11.4).

:mod:`securechat.protocol` puts these in its tables of client and server frame
checks, beside the one-to-one frames'. A room name that is not a room name in
a client frame is the fatal ``invalid_name`` (section 11.8, like names in
decision 13); every other mistake is non-fatal. Entries are checked field by
field (:func:`securechat.rooms.log.parse_entry`, ``bad_entry``); their rules
and signatures are the server's and the client's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..crypto import MAX_PEM_LENGTH
from ..envelope import is_message_id
from ..errors import BadRequest, MalformedEnvelope, RoomRefused
from ..names import ROOM_PATTERN, is_valid_name, is_valid_room, shown
from .envelope import check_room_envelope
from .log import KINDS, MAX_ROOM_MEMBERS, is_head, is_seq, parse_entry

# Entries per room_update (a page of room_log); keys: at most two names per entry.
ROOM_PAGE: Final = 128
# Rooms per room_list.
ROOM_LIST_PAGE: Final = 200
ROOM_CLIENT_TYPES: Final = frozenset({"room_create", "room_append", "room_log", "room_send", "rooms"})
ROOM_SERVER_TYPES: Final = frozenset({"room_update", "room_sent", "room_list"})
# The rooms' error codes, all non-fatal (docs/protocol.md section 11.8).
ROOM_ERROR_CODES: Final = frozenset(
    {"unknown_room", "not_member", "not_allowed", "room_full", "room_exists", "stale_state", "bad_entry", "too_many_rooms"}
)

Check = Callable[[Mapping[str, Any]], None]


def room_field(frame: Mapping[str, Any], key: str, *, fatal: bool = True) -> str:
    """``frame[key]`` if it is a room name, else ``invalid_name`` (fatal in a client frame)."""
    value = frame.get(key)
    if not is_valid_room(value):
        what = shown(value) if isinstance(value, str) else type(value).__name__
        raise BadRequest(
            f"'{key}' is not a room name ({what}); room names match {ROOM_PATTERN.pattern}",
            code="invalid_name" if fatal else "bad_request",
            fatal=fatal,
        )
    assert isinstance(value, str)
    return value


# --- client -> server -------------------------------------------------------------------


def check_room_create(frame: Mapping[str, Any]) -> None:
    """``room_create``: a ``create`` entry at ``seq`` 0."""
    entry = parse_entry(frame.get("entry"))
    if entry.op != "create" or entry.seq != 0:
        raise RoomRefused("room_create carries the create entry, seq 0", code="bad_entry")


def check_room_append(frame: Mapping[str, Any]) -> None:
    """``room_append``: any other entry (``seq`` >= 1)."""
    entry = parse_entry(frame.get("entry"))
    if entry.op == "create" or entry.seq == 0:
        raise RoomRefused("a room is created with room_create", code="bad_entry")


def check_room_log(frame: Mapping[str, Any]) -> None:
    """``room_log``: a room and, optionally, the first ``seq`` wanted."""
    room_field(frame, "room")
    if "since" in frame and not is_seq(frame["since"]):
        raise BadRequest("'since' must be an integer from 0 to 2**53 - 1")


def check_room_send(frame: Mapping[str, Any]) -> None:
    """``room_send``: a room and a room envelope for it (its structure only)."""
    room = room_field(frame, "room")
    try:
        fields = check_room_envelope(frame.get("envelope"))
    except MalformedEnvelope as exc:
        raise BadRequest(exc.detail) from None
    if fields.room != room:
        raise BadRequest("'room' does not match envelope 'room'")


def check_rooms(frame: Mapping[str, Any]) -> None:
    """``rooms``: optionally the room name to list after."""
    if "after" in frame:
        room_field(frame, "after")


ROOM_CLIENT_CHECKS: Final[dict[str, Check]] = {
    "room_create": check_room_create,
    "room_append": check_room_append,
    "room_log": check_room_log,
    "room_send": check_room_send,
    "rooms": check_rooms,
}


# --- server -> client ----------------------------------------------------------------------


def _boolean(frame: Mapping[str, Any], key: str) -> None:
    if type(frame.get(key)) is not bool:
        raise BadRequest(f"'{key}' must be a boolean")


def _check_room_update(frame: Mapping[str, Any]) -> None:
    room_field(frame, "room", fatal=False)
    entries, keys = frame.get("entries"), frame.get("keys")
    if not isinstance(entries, list) or len(entries) > ROOM_PAGE:
        raise BadRequest(f"'entries' must be a list of at most {ROOM_PAGE}")
    if not all(isinstance(entry, dict) for entry in entries):
        raise BadRequest("every entry must be an object")
    if not isinstance(keys, dict) or len(keys) > 2 * ROOM_PAGE:
        raise BadRequest(f"'keys' must be an object of at most {2 * ROOM_PAGE} keys")
    for name, pem in keys.items():
        if not is_valid_name(name) or not isinstance(pem, str) or len(pem) > MAX_PEM_LENGTH:
            raise BadRequest("'keys' maps names to PEM strings")
    _boolean(frame, "more")


def _check_room_sent(frame: Mapping[str, Any]) -> None:
    room_field(frame, "room", fatal=False)
    if not is_message_id(frame.get("id")):
        raise BadRequest("'id' must be 32 lowercase hex digits")
    members = frame.get("members")
    if not isinstance(members, list) or len(members) > MAX_ROOM_MEMBERS:
        raise BadRequest(f"'members' must be a list of at most {MAX_ROOM_MEMBERS} names")
    full = frame.get("full", [])
    if not isinstance(full, list) or len(members) + len(full) > MAX_ROOM_MEMBERS:
        raise BadRequest(f"'members' and 'full' hold at most {MAX_ROOM_MEMBERS} names")
    if not all(is_valid_name(name) for name in members + full):
        raise BadRequest("'members' and 'full' must hold names")
    if not is_seq(frame.get("seq")):
        raise BadRequest("'seq' must be an integer from 0 to 2**53 - 1")


def _check_listed_room(item: object) -> None:
    if not isinstance(item, dict) or not is_valid_room(item.get("room")) or item.get("kind") not in KINDS:
        raise BadRequest("each listed room needs a room name and a kind")
    if type(item.get("member")) is not bool:
        raise BadRequest("each listed room needs a boolean 'member'")
    count = item.get("members")
    if type(count) is not int or not 0 <= count <= MAX_ROOM_MEMBERS:
        raise BadRequest(f"each listed room needs 'members' from 0 to {MAX_ROOM_MEMBERS}")
    if not is_seq(item.get("seq")) or not is_head(item.get("head")):
        raise BadRequest("each listed room needs its 'seq' and 'head'")


def _check_room_list(frame: Mapping[str, Any]) -> None:
    rooms = frame.get("rooms")
    if not isinstance(rooms, list) or len(rooms) > ROOM_LIST_PAGE:
        raise BadRequest(f"'rooms' must be a list of at most {ROOM_LIST_PAGE}")
    for item in rooms:
        _check_listed_room(item)
    _boolean(frame, "more")


ROOM_SERVER_CHECKS: Final[dict[str, Check]] = {
    "room_update": _check_room_update,
    "room_sent": _check_room_sent,
    "room_list": _check_room_list,
}


def check_message_room(frame: Mapping[str, Any]) -> bool:
    """A ``message``'s optional ``room``: True if the message is a room message (its envelope a room envelope)."""
    if "room" not in frame:
        return False
    room_field(frame, "room", fatal=False)
    try:
        check_room_envelope(frame.get("envelope"))
    except MalformedEnvelope as exc:
        raise BadRequest(exc.detail) from None
    return True


def check_ack_target(frame: Mapping[str, Any]) -> None:
    """An ``ack``'s ``to``: a name, or a room with the ``member`` the ack is about."""
    to = frame.get("to")
    if is_valid_room(to):
        if not is_valid_name(frame.get("member")):
            raise BadRequest("an ack for a room names its 'member'")
    elif not is_valid_name(to):
        raise BadRequest("ack 'to' must be a name or a room name")
