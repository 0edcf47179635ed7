"""The room commands (docs/protocol.md 11): their values, how they are typed, and their ``--json`` form.

:mod:`securechat.commands.grammar` puts these in its tables beside the other
commands, so every front end parses them the same way; each value class is
named after its slash command (``/create`` is :class:`Create`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from securechat.errors import UsageError
from securechat.names import parse_typed_name, parse_typed_room


@dataclass(frozen=True, slots=True)
class Create:
    room: str
    open: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Add:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class Remove:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class Admin:
    room: str
    name: str


@dataclass(frozen=True, slots=True)
class Leave:
    """``/leave [#ROOM]``: None means the current conversation's room."""

    room: str | None


@dataclass(frozen=True, slots=True)
class Members:
    """``/members [#ROOM]``: None means the current conversation's room."""

    room: str | None


@dataclass(frozen=True, slots=True)
class Rooms:
    pass


RoomCommand = Create | Join | Add | Remove | Admin | Leave | Members | Rooms
ROOM_COMMANDS: Final = (Create, Join, Add, Remove, Admin, Leave, Members, Rooms)

# slash name -> (usage, what it does), in /help order.
ROOM_USAGE: Final[dict[str, tuple[str, str]]] = {
    "create": ("/create #ROOM [open]", "create a room (invite-only unless 'open'); you are its first admin"),
    "join": ("/join #ROOM", "join an open room"),
    "add": ("/add #ROOM NAME", "add NAME to a room (admins)"),
    "remove": ("/remove #ROOM NAME", "remove NAME from a room (admins; an admin only leaves)"),
    "admin": ("/admin #ROOM NAME", "make NAME an admin of a room (admins)"),
    "leave": ("/leave [#ROOM]", "leave a room (default: the current room)"),
    "members": ("/members [#ROOM]", "a room's members and admins as verified here (default: the current room)"),
    "rooms": ("/rooms", "your rooms and the open ones"),
}
# Room commands whose first argument is a room, for completion; of these, the ones whose second is a name.
ROOM_FIRST: Final = frozenset({"create", "join", "add", "remove", "admin", "leave", "members"})
NAME_SECOND: Final = frozenset({"add", "remove", "admin"})


@dataclass(frozen=True, slots=True)
class Seats:
    """A held room's members and admins, as verified here (what completion offers after its name)."""

    members: tuple[str, ...]
    admins: tuple[str, ...] = ()


def rooms_for(op: str, room_names: list[str], rooms: Mapping[str, Seats], me: str) -> list[str]:
    """The rooms of ``room_names`` that ``/op #`` may name: those you are in for ``/leave``, those
    you are an admin of for ``/add``, ``/remove`` and ``/admin`` (docs/protocol.md 11.3), those you
    are not in for ``/join``, none for ``/create`` (a new name), those you are in for ``/members`` (a
    room that ``/rooms`` listed and you never joined has no members known here)."""
    if op == "create":
        return []
    if op == "join":
        return [room for room in room_names if room not in rooms]
    if op in NAME_SECOND:
        return [room for room in room_names if room in rooms and me in rooms[room].admins]
    return [room for room in room_names if room in rooms]  # leave, members


def named_by(op: str, seats: Seats, people: list[str], me: str) -> list[str]:
    """Whom ``/add``, ``/remove`` or ``/admin`` (``op``) in a room with ``seats`` may name, by the rules
    of docs/protocol.md 11.3: only an admin signs these, an admin is never removed nor made an admin
    again, nor is yourself (``/leave`` is for that), and ``add`` takes someone of ``people`` who is
    not a member."""
    if me not in seats.admins:
        return []
    if op == "add":
        return [name for name in people if name not in seats.members]
    return sorted(name for name in seats.members if name not in seats.admins)


# --json: each room command's name and the string fields it needs (room_create's 'open' is a boolean).
ROOM_JSON_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "room_create": ("room",),
    "room_join": ("room",),
    "room_add": ("room", "name"),
    "room_remove": ("room", "name"),
    "room_admin": ("room", "name"),
    "room_leave": ("room",),
    "room_members": ("room",),
    "rooms": (),
}
ROOM_JSON_NAMES: Final[dict[type, str]] = {
    Create: "room_create", Join: "room_join", Add: "room_add", Remove: "room_remove", Admin: "room_admin",
    Leave: "room_leave", Members: "room_members", Rooms: "rooms",
}


class RoomUsage(Exception):
    """The arguments do not fit the room command's usage line."""


def _words(rest: str, least: int, most: int) -> list[str]:
    words = rest.split()
    if not least <= len(words) <= most:
        raise RoomUsage
    return words


def _about(op: str, typed_room: str, typed_name: str) -> Add | Remove | Admin:
    room, name = parse_typed_room(typed_room), parse_typed_name(typed_name)
    if op == "add":
        return Add(room, name)
    return Remove(room, name) if op == "remove" else Admin(room, name)


def parse_room_command(name: str, rest: str) -> RoomCommand:
    """The room command ``/name rest`` (``name`` a key of :data:`ROOM_USAGE`); raise :class:`RoomUsage`."""
    if name == "rooms":
        if rest.strip():
            raise UsageError("/rooms takes no arguments")
        return Rooms()
    if name in ("members", "leave"):
        words = _words(rest, 0, 1)
        room = parse_typed_room(words[0]) if words else None
        return Members(room) if name == "members" else Leave(room)
    if name in NAME_SECOND:
        room, who = _words(rest, 2, 2)
        return _about(name, room, who)
    if name == "create":
        words = _words(rest, 1, 2)
        kind = words[1].lower() if len(words) == 2 else "invite"
        if kind not in ("open", "invite"):
            raise RoomUsage
        return Create(parse_typed_room(words[0]), kind == "open")
    (room,) = _words(rest, 1, 1)
    return Join(parse_typed_room(room))


def room_from_json(cmd: str, obj: dict[str, Any]) -> RoomCommand:
    """The room command of a ``--json`` line whose string fields are checked."""
    match cmd:
        case "room_create":
            is_open = obj.get("open", False)
            if type(is_open) is not bool:
                raise UsageError("'room_create' takes a boolean 'open'")
            return Create(parse_typed_room(obj["room"]), is_open)
        case "room_join":
            return Join(parse_typed_room(obj["room"]))
        case "room_add" | "room_remove" | "room_admin":
            return _about(cmd.removeprefix("room_"), obj["room"], obj["name"])
        case "room_leave":
            return Leave(parse_typed_room(obj["room"]))
        case "room_members":
            return Members(parse_typed_room(obj["room"]))
    return Rooms()
