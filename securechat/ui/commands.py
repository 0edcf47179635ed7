"""The input line's language: slash commands, parsed without side effects.

:func:`parse` turns one submitted line into a :class:`Command` or a
:class:`Hint` (a one-line message for the pane); :func:`completions` gives the
tab-completion candidates for the text before the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from securechat.errors import UsageError
from securechat.names import parse_fingerprint, parse_typed_name


@dataclass(frozen=True, slots=True)
class Say:
    """Plain text for the current conversation."""

    text: str


@dataclass(frozen=True, slots=True)
class Msg:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class To:
    name: str


@dataclass(frozen=True, slots=True)
class Users:
    pass


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
    pass


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
    """The line could not be understood; ``text`` says why, in one line."""

    text: str


Command = Say | Msg | To | Users | Whois | Fingerprint | Trust | Verify | Raw | Clear | Help | Mouse | Quit

# name -> (usage, one-line description); the order is the /help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "msg": ("/msg NAME TEXT", "send TEXT to NAME once, without switching"),
    "to": ("/to NAME", "switch to the conversation with NAME"),
    "users": ("/users", "who is registered and who is online"),
    "whois": ("/whois NAME", "NAME's fingerprint and trust state"),
    "fingerprint": ("/fingerprint", "your own fingerprint"),
    "trust": ("/trust NAME", "accept NAME's changed key (after comparing it)"),
    "verify": ("/verify NAME FINGERPRINT", "mark NAME verified if FINGERPRINT matches"),
    "raw": ("/raw", "toggle showing each message's payload (for securechat-client decrypt)"),
    "clear": ("/clear", "clear this window"),
    "mouse": ("/mouse", "toggle mouse wheel scrolling (off: the terminal selects text)"),
    "help": ("/help", "this list"),
    "quit": ("/quit", "leave (also Ctrl-D on an empty line, or Ctrl-C)"),
}
ALIASES = {"m": "msg", "query": "to", "q": "quit", "exit": "quit", "w": "whois", "who": "users"}
# Commands whose first argument is a user name, for completion.
NAME_FIRST = {"msg", "to", "whois", "trust", "verify", "m", "query", "w"}


def _usage(cmd: str) -> Hint:
    return Hint(f"usage: {COMMANDS[cmd][0]}")


def _name_arg(cmd: str, raw: str) -> str | Hint:
    if not raw:
        return _usage(cmd)
    try:
        return parse_typed_name(raw)
    except UsageError as exc:
        return Hint(str(exc))


def parse(line: str) -> Command | Hint | None:
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
    cmd = ALIASES.get(head.lower(), head.lower())
    text_rest = rest.lstrip(" ")  # a message keeps its own trailing whitespace
    rest = rest.strip()
    match cmd:
        case "msg":
            target, _, text = text_rest.partition(" ")
            name = _name_arg(cmd, target)
            if isinstance(name, Hint):
                return name
            if not text.strip():
                return _usage(cmd)
            return Msg(name, text.lstrip(" "))
        case "to" | "whois" | "trust":
            if len(rest.split()) > 1:
                return _usage(cmd)
            name = _name_arg(cmd, rest)
            if isinstance(name, Hint):
                return name
            if cmd == "to":
                return To(name)
            return Whois(name) if cmd == "whois" else Trust(name)
        case "verify":
            target, _, fp_text = rest.partition(" ")
            name = _name_arg(cmd, target)
            if isinstance(name, Hint):
                return name
            if not fp_text.strip():
                return _usage(cmd)
            try:
                return Verify(name, parse_fingerprint(fp_text))
            except UsageError as exc:
                return Hint(str(exc))
        case "users" | "fingerprint" | "raw" | "clear" | "help" | "mouse" | "quit":
            if rest:
                return Hint(f"{COMMANDS[cmd][0]} takes no arguments")
            simple: dict[str, Command] = {
                "users": Users(),
                "fingerprint": Fingerprint(),
                "raw": Raw(),
                "clear": Clear(),
                "help": Help(),
                "mouse": Mouse(),
                "quit": Quit(),
            }
            return simple[cmd]
    shown = head if len(head) <= 20 else head[:20] + "…"
    return Hint(f"unknown command /{shown}; /help lists the commands (start with // to send a '/')")


def help_lines() -> list[str]:
    width = max(len(usage) for usage, _ in COMMANDS.values())
    lines = [f"{usage.ljust(width)}  {text}" for usage, text in COMMANDS.values()]
    lines.append("plain text goes to the current conversation; Alt-Enter starts a new line;")
    lines.append("PageUp/PageDown scroll; Up/Down recall input; Tab completes commands and names.")
    return lines


def completions(before_cursor: str, names: list[str]) -> list[tuple[str, int]]:
    """Candidates for the word before the cursor as (replacement, start offset <= 0)."""
    words = before_cursor.split(" ")
    word = words[-1]
    if len(words) == 1 and word.startswith("/"):
        prefix = word[1:].lower()
        return [("/" + c, -len(word)) for c in COMMANDS if c.startswith(prefix)]
    first = words[0][1:].lower() if words[0].startswith("/") else None
    wants_name = (first in NAME_FIRST and len(words) == 2) or first is None
    if not wants_name or "\n" in word:
        return []
    low = word.lower()
    return [(n, -len(word)) for n in names if n.startswith(low) and n != low]
