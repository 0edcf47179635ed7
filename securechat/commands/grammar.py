"""The front ends' one language: typed lines and ``--json`` command objects, parsed alike.

:func:`parse_line` reads what a person typed in the full-screen UI or ``--plain``
(slash commands, their aliases, the ``//`` escape, multi-line text);
:func:`parse_json` reads one ``--json`` command line. Both return a
:data:`Command` or a :class:`Hint` and have no side effects. A Hint is a local
mistake (a typo, a bad name or fingerprint): it is worded for the user and
never reaches the server, so it is not the server's ``bad_request``.

:data:`COMMANDS` declares every slash command once: its usage, what it does,
and the one front end it is limited to, if any (``/mouse``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from securechat.commands.rooms import (
    NAME_SECOND,
    ROOM_FIRST,
    ROOM_JSON_FIELDS,
    ROOM_JSON_NAMES,
    ROOM_USAGE,
    RoomCommand,
    RoomUsage,
    Seats,
    named_by,
    parse_room_command,
    room_from_json,
    rooms_for,
)
from securechat.errors import UsageError
from securechat.names import ROOM_PREFIX, parse_fingerprint, parse_typed_name, parse_typed_target

FrontEnd = Literal["full-screen", "plain", "json"]
FULL_SCREEN: Final = "full-screen"
PLAIN: Final = "plain"
JSON: Final = "json"


@dataclass(frozen=True, slots=True)
class Say:
    """Plain text for the current conversation."""

    text: str


@dataclass(frozen=True, slots=True)
class Msg:
    """One message to ``to``, without switching conversation (``/msg``; ``send`` in --json)."""

    to: str
    text: str


@dataclass(frozen=True, slots=True)
class To:
    name: str


@dataclass(frozen=True, slots=True)
class Users:
    """A page of the directory: names that start with ``prefix``, after ``after``; ``more``: the next page."""

    prefix: str = ""
    after: str = ""
    more: bool = False


@dataclass(frozen=True, slots=True)
class Whois:
    name: str


@dataclass(frozen=True, slots=True)
class Fingerprint:
    pass


@dataclass(frozen=True, slots=True)
class Trust:
    name: str


@dataclass(frozen=True, slots=True)
class Verify:
    name: str
    fingerprint: str  # 64 lowercase hex digits, no spaces


@dataclass(frozen=True, slots=True)
class Raw:
    """``/raw`` toggles the payloads; ``/raw FILE`` writes this conversation's received ones to ``path``."""

    path: str | None = None


@dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Mouse:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Hint:
    """A line or command that could not be understood; ``text`` says why, in one line.

    ``code`` and ``cmd`` are for ``--json`` error lines: ``bad_command`` for a
    command of the wrong shape, a :class:`~securechat.errors.UsageError`'s code
    (``invalid_name``, ...) for a bad value, and the command it was about.
    """

    text: str
    code: str = "bad_command"
    cmd: str | None = None


Command = Say | Msg | To | Users | Whois | Fingerprint | Trust | Verify | Raw | Clear | Help | Mouse | Quit | RoomCommand


@dataclass(frozen=True, slots=True)
class Spec:
    """One slash command: ``usage``, what it ``does``, and the one front end it is ``only`` for."""

    usage: str
    does: str
    only: FrontEnd | None = None


# The /help order. A command with ``only`` is parsed everywhere and answered
# with "works only in ..." elsewhere, so a habit from one front end gets a clear word.
COMMANDS: Final[dict[str, Spec]] = {
    "msg": Spec("/msg NAME TEXT", "send TEXT to NAME (or a #room) once, without switching"),
    "to": Spec("/to NAME", "switch to the conversation with NAME or a #room (shows its history)"),
    "users": Spec("/users [PREFIX]", "who is registered and online, 200 at a time (/users + shows the next ones); "
                  "with PREFIX, the names that start with it"),
    "whois": Spec("/whois NAME", "NAME's fingerprint and trust state"),
    "fingerprint": Spec("/fingerprint", "your own fingerprint"),
    "trust": Spec("/trust NAME", "accept NAME's changed key (after comparing it)"),
    "verify": Spec("/verify NAME FINGERPRINT", "mark NAME verified if FINGERPRINT matches"),
    **{name: Spec(usage, does) for name, (usage, does) in ROOM_USAGE.items()},
    "raw": Spec(
        "/raw [FILE]",
        "toggle showing each message's payload; with FILE, write the payloads received here to FILE "
        "(for securechat-client decrypt)",
    ),
    "clear": Spec("/clear", "clear this window"),
    "mouse": Spec("/mouse", "toggle mouse wheel scrolling (off: the terminal selects text)", FULL_SCREEN),
    "help": Spec("/help", "this list"),
    "quit": Spec("/quit", "leave (also Ctrl-D on an empty line, or Ctrl-C)"),
}
ALIASES: Final = {"m": "msg", "query": "to", "q": "quit", "exit": "quit", "w": "whois", "who": "users"}
# Commands whose first argument is a user name, for completion.
NAME_FIRST: Final = {"msg", "to", "whois", "trust", "verify", "m", "query", "w"}

# --json: each command's name and the string fields it needs.
JSON_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "send": ("to", "text"),
    "list": (),
    "trust": ("name",),
    "verify": ("name", "fingerprint"),
    "whois": ("name",),
    "quit": (),
    **ROOM_JSON_FIELDS,
}
_JSON_NAMES: Final[dict[type, str]] = {
    Msg: "send",
    Users: "list",
    Whois: "whois",
    Trust: "trust",
    Verify: "verify",
    Quit: "quit",
    **ROOM_JSON_NAMES,
}


class _Usage(Exception):
    """Inside the parser: the arguments do not fit the command's usage line."""


def slash_name(command: Command) -> str:
    """The :data:`COMMANDS` key of ``command`` (each value class is named after its command)."""
    return "say" if isinstance(command, Say) else type(command).__name__.lower()


def json_name(command: Command) -> str:
    """The ``--json`` name of ``command`` (its slash name where --json has none)."""
    return _JSON_NAMES.get(type(command), slash_name(command))


# --- typed lines ----------------------------------------------------------------------


def parse_line(line: str) -> Command | Hint | None:
    """What the submitted ``line`` asks for; None for a blank line.

    A line starting with ``//`` sends the text from its second slash on.
    """
    if not line.strip():
        return None
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    head, _, rest = line[1:].partition(" ")
    if "\n" in head:
        head, _, more = head.partition("\n")
        rest = more + (" " + rest if rest else "")
    name = ALIASES.get(head.lower(), head.lower())
    build = _SLASH.get(name)
    if build is None:
        shown = head if len(head) <= 20 else head[:20] + "…"
        return Hint(f"unknown command /{shown}; /help lists the commands (start with // to send a '/')")
    try:
        return build(rest)
    except (_Usage, RoomUsage):
        return Hint(f"usage: {COMMANDS[name].usage}")
    except UsageError as exc:
        return Hint(str(exc), exc.code)


def _name(typed: str) -> str:
    if not typed:
        raise _Usage
    return parse_typed_name(typed)


def _one_name(rest: str) -> str:
    rest = rest.strip()
    if len(rest.split()) > 1:
        raise _Usage
    return _name(rest)


def _one_target(rest: str) -> str:
    """A name or a room (``/to``)."""
    rest = rest.strip()
    if not rest or len(rest.split()) > 1:
        raise _Usage
    return parse_typed_target(rest)


def _msg(rest: str) -> Command:
    target, _, text = rest.lstrip(" ").partition(" ")  # a message keeps its own trailing whitespace
    if not target:
        raise _Usage
    name = parse_typed_target(target)
    if not text.strip():
        raise _Usage
    return Msg(name, text.lstrip(" "))


def _verify(rest: str) -> Command:
    target, _, typed = rest.strip().partition(" ")
    name = _name(target)
    if not typed.strip():
        raise _Usage
    return Verify(name, parse_fingerprint(typed))


def _users(rest: str) -> Users:
    if rest == "+":
        return Users(more=True)
    return Users(parse_typed_name(rest)) if rest else Users()


def _optional_name(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise UsageError(f"'list' field '{key}' must be a string")
    return parse_typed_name(value) if value else ""


def _bare(name: str, command: Command) -> Callable[[str], Command]:
    def build(rest: str) -> Command:
        if rest.strip():
            raise UsageError(f"{COMMANDS[name].usage} takes no arguments")
        return command

    return build


_SLASH: Final[dict[str, Callable[[str], Command]]] = {
    "msg": _msg,
    "to": lambda rest: To(_one_target(rest)),
    "whois": lambda rest: Whois(_one_name(rest)),
    "trust": lambda rest: Trust(_one_name(rest)),
    "verify": _verify,
    "users": lambda rest: _users(rest.strip()),
    "fingerprint": _bare("fingerprint", Fingerprint()),
    "raw": lambda rest: Raw(rest.strip() or None),
    "clear": _bare("clear", Clear()),
    "mouse": _bare("mouse", Mouse()),
    "help": _bare("help", Help()),
    "quit": _bare("quit", Quit()),
    **{name: functools.partial(parse_room_command, name) for name in ROOM_USAGE},
}


def completions(
    before_cursor: str, names: list[str], rooms: Mapping[str, Seats] | None = None, me: str = ""
) -> list[tuple[str, int]]:
    """Candidates for the word before the cursor as (replacement, start offset <= 0).

    ``names`` holds user names and room names (``#ops``); ``rooms`` each room ``me`` is in, with
    its members and admins, so a room command offers the rooms it may name
    (:func:`~securechat.commands.rooms.rooms_for`), ``/remove #ops`` and ``/admin #ops`` the
    members ``me`` may name and ``/add #ops`` the others (:func:`~securechat.commands.rooms.named_by`).
    A room fits where a room goes, a name where a name goes.
    """
    words = before_cursor.split(" ")
    word = words[-1]
    if len(words) == 1 and word.startswith("/"):
        prefix = word[1:].lower()
        return [("/" + c, -len(word)) for c in COMMANDS if c.startswith(prefix)]
    if "\n" in word:
        return []
    low = word.lower()
    return [(n, -len(word)) for n in _wanted(words, names, rooms or {}, me) if n.startswith(low) and n != low]


def _wanted(words: list[str], names: list[str], rooms: Mapping[str, Seats], me: str) -> list[str]:
    """What fits the last of ``words``: rooms, names, a room's members, or nothing."""
    first = ALIASES.get(words[0][1:].lower(), words[0][1:].lower()) if words[0].startswith("/") else None
    room_names = [n for n in names if n.startswith(ROOM_PREFIX)]
    people = [n for n in names if not n.startswith(ROOM_PREFIX)]
    if first is None or (first in ("to", "msg") and len(words) == 2):
        return names  # a conversation: someone or a room
    if first in ROOM_FIRST and len(words) == 2:
        return rooms_for(first, room_names, rooms, me)
    if first in NAME_SECOND and len(words) == 3:
        seats = rooms.get(words[1].lower())
        return people if seats is None else named_by(first, seats, people, me)
    return people if first in NAME_FIRST and len(words) == 2 else []


# --- --json command lines -------------------------------------------------------------------


def parse_json(line: bytes) -> Command | Hint:
    """One ``--json`` input line (docs in :mod:`securechat.jsonmode`) as a command, or why not."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Hint("not a JSON object on one line")
    if not isinstance(obj, dict):
        return Hint("a command must be a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in JSON_FIELDS:
        return Hint(f"unknown command {cmd!r}; expected one of {', '.join(sorted(JSON_FIELDS))}")
    for key in JSON_FIELDS[cmd]:
        if not isinstance(obj.get(key), str):
            return Hint(f"'{cmd}' needs a string '{key}'")
    try:
        return room_from_json(cmd, obj) if cmd in ROOM_JSON_FIELDS else _from_json(cmd, obj)
    except UsageError as exc:
        return Hint(str(exc), exc.code, cmd)


def _from_json(cmd: str, obj: dict[str, Any]) -> Command:
    match cmd:
        case "send":
            return Msg(parse_typed_target(obj["to"]), obj["text"])
        case "list":
            return Users(_optional_name(obj, "prefix"), _optional_name(obj, "after"))
        case "whois":
            return Whois(parse_typed_name(obj["name"]))
        case "trust":
            return Trust(parse_typed_name(obj["name"]))
        case "verify":
            return Verify(parse_typed_name(obj["name"]), parse_fingerprint(obj["fingerprint"]))
    return Quit()
