"""What the full-screen UI and ``--plain`` show, worded once so that both say the same.

Each function returns plain text (no colour, no time stamp, no layout); a front
end adds those. :func:`describe` words a command's
:mod:`~securechat.commands.outcomes`; the ``*_line`` functions word the session
events both front ends show. The one filter for text that comes from outside
(peers, the server) before it reaches a terminal is :mod:`securechat.commands.sanitize`;
the front ends apply it to every line they show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from securechat.commands.grammar import COMMANDS, FULL_SCREEN, PLAIN, FrontEnd, Msg, Spec
from securechat.commands.outcomes import (
    ContactShown,
    Failed,
    Level,
    Outcome,
    Said,
    Switched,
    Trusted,
    UsersShown,
    Verified,
)
from securechat.errors import KeyChanged, SecurechatError
from securechat.events import KeyChangedAlert, UserEntry
from securechat.names import format_fingerprint

Shown = tuple[Level, str]

# The key line of /help, the one part of it that differs between front ends.
KEY_TIPS: Final[dict[FrontEnd, tuple[str, ...]]] = {
    FULL_SCREEN: (
        "Alt-Enter starts a new line; PageUp/PageDown scroll;",
        "Up/Down recall input; Tab completes commands and names.",
    ),
    PLAIN: ("Up/Down recall input; Ctrl-D on an empty line leaves.",),
    "json": (),
}
_WHERE: Final[dict[FrontEnd, str]] = {FULL_SCREEN: "the full-screen UI", PLAIN: "--plain", "json": "--json"}
NO_CONVERSATION: Final = "no conversation yet: /to NAME to open one, or /msg NAME TEXT"


def pretty_fingerprint(fp: str | None) -> str:
    """Groups of four hex digits, or "(none)"."""
    return format_fingerprint(fp) if fp else "(none)"


def fingerprint_rows(fp: str | None) -> list[str]:
    """A fingerprint as two rows of eight groups, easy to read out and compare."""
    groups = pretty_fingerprint(fp).split(" ")
    half = (len(groups) + 1) // 2
    return [" ".join(groups[:half]), " ".join(groups[half:])] if len(groups) > 1 else groups


def describe_error(exc: BaseException) -> str:
    """One line for a failed call; never a traceback."""
    if isinstance(exc, KeyChanged):
        return f"the key of {exc.name} changed; compare it (/whois {exc.name}), then /trust {exc.name}"
    if isinstance(exc, SecurechatError):
        # Server-supplied text may hold line breaks; a hint stays one line.
        return " ".join(str(exc).split()) or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}{': ' + text if text else ''}"


def quote(text: str, limit: int = 40) -> str:
    """A message's text, flattened and cut, for a line about it."""
    flat = " ".join(text.split())
    return f'"{flat}"' if len(flat) <= limit else f'"{flat[: limit - 1]}…"'


# --- commands ----------------------------------------------------------------------------


def help_lines(front_end: FrontEnd) -> list[str]:
    width = max(len(spec.usage) for spec in COMMANDS.values())
    lines = [f"{spec.usage.ljust(width)}  {_does(spec)}" for spec in COMMANDS.values()]
    lines.append("plain text goes to the current conversation (start it with // to send a '/');")
    return lines + list(KEY_TIPS[front_end])


def _does(spec: Spec) -> str:
    return f"{spec.only} only: {spec.does}" if spec.only else spec.does


def unavailable(name: str, front_end: FrontEnd) -> str:
    """The answer to a command that belongs to another front end."""
    only = COMMANDS[name].only
    return (
        f"/{name} works only in {_WHERE[only] if only else 'another front end'}, not in {_WHERE[front_end]}"
    )


def own_fingerprint_lines(name: str, fingerprint: str) -> tuple[str, ...]:
    return (f"your fingerprint ({name}):", *("    " + row for row in fingerprint_rows(fingerprint)))


def raw_lines(on: bool) -> list[str]:
    if not on:
        return ["payloads hidden"]
    return [
        "showing payloads under messages; select one with the mouse and pass it to",
        "`securechat-client decrypt` as one quoted argument (line breaks are ignored).",
    ]


def users_line(users: Iterable[UserEntry]) -> str:
    listed = sorted(users, key=lambda user: user.name)
    if not listed:
        return "no users are registered"
    parts = [f"{user.name}{'' if user.online else ' (offline)'}" for user in listed]
    online = sum(1 for user in listed if user.online)
    return f"{len(listed)} registered, {online} online: " + ", ".join(parts)


def describe(outcome: Outcome) -> list[Shown]:
    """The lines for an outcome (none for those a front end shows its own way)."""
    match outcome:
        case Said(lines, level):
            return [(level, line) for line in lines]
        case Switched(name, _history, online, error):
            talking = f"talking to {name}" + (" (offline: messages are queued)" if online is False else "")
            unread: list[Shown] = (
                [("hint", f"could not load the history with {name}: {error}")] if error else []
            )
            return [*unread, ("info", talking)]
        case ContactShown():
            return _contact(outcome)
        case Trusted(before, after):
            return [_trusted(before.trust, after.name, after.fingerprint, after.trust)]
        case Verified(name, ok, pinned):
            if ok:
                return [("info", f"{name} is verified: the fingerprint matches their pinned key")]
            if not pinned:
                return [("warn", f"no key is pinned for {name} yet; /whois {name} fetches it")]
            return [("warn", f"the fingerprint does NOT match the key pinned for {name}; /whois {name}")]
        case UsersShown(users):
            return [("info", users_line(users))]
        case Failed(Msg(to, text), error):
            # The line quotes the text: it has left the input line and would be lost.
            return [("hint", f"not sent to {to} ({quote(text)}): {describe_error(error)}")]
        case Failed(_command, error):
            return [("hint", describe_error(error))]
    return []


def _contact(shown: ContactShown) -> list[Shown]:
    info = shown.info
    name = info.name
    seen = "" if shown.online is None else (" online" if shown.online else " offline")
    key = f"{pretty_fingerprint(info.fingerprint)} ({info.trust or 'unverified'})"
    if info.fingerprint is None:
        key = "no key pinned yet (it is pinned when you first exchange messages)"
    lines: list[Shown] = [("info", f"{name}{seen}: {key}")]
    if info.pending_fingerprint:
        pending = pretty_fingerprint(info.pending_fingerprint)
        lines.append(
            ("warn", f"{name} now presents another key: {pending}; /trust {name} once you have compared it")
        )
    if not shown.asked:
        lines.append(("info", "(offline: that is what is pinned here; the server was not asked)"))
    return lines


def _trusted(before: str | None, name: str, fingerprint: str | None, trust: str | None) -> Shown:
    if fingerprint is None:
        return ("hint", f"no key is pinned for {name}: nothing to trust")
    if before == "changed" and trust != "changed":
        return ("info", f"you now trust the new key of {name}: {pretty_fingerprint(fingerprint)} ({trust})")
    return ("info", f"nothing to trust: the key of {name} has not changed ({trust})")


# --- session events ------------------------------------------------------------------------


def pinned_line(name: str, fingerprint: str, trust: str) -> str:
    return f"pinned the key of {name}: {pretty_fingerprint(fingerprint)} ({trust})"


def presence_line(name: str, online: bool) -> str:
    return f"{name} is {'online' if online else 'offline'}"


def key_changed_line(name: str) -> str:
    return f"the key of {name} changed: nothing is sent to them until you /trust {name}"


def banner_pointer_line(name: str) -> str:
    """Full-screen only, a matter of layout: the key change is told in ``name``'s window and the banner."""
    return f"the key of {name} changed — see the banner above"


def banner_lines(alert: KeyChangedAlert) -> list[str]:
    """The warning about a changed key, with both fingerprints to compare."""
    name = alert.name
    lines = [f"THE KEY OF {name.upper()} CHANGED. Nothing is sent to {name} until you act."]
    for label, fp in (("was", alert.old), ("now", alert.new)):
        first, *rest = fingerprint_rows(fp)
        lines.append(f"{label}  {first}")
        lines += [f"     {row}" for row in rest]
    lines.append(f"Compare 'now' with {name} over another channel, then /trust {name}.")
    return lines


def rejected_line(sender: str, reason: str, detail: str) -> str:
    return f"rejected a message from {sender}: {reason}" + (f" ({detail})" if detail else "")


def error_line(code: str, message: str, fatal: bool) -> str:
    flat = " ".join(f"{code}: {message}".split())  # server text: one line
    return f"{'fatal ' if fatal else ''}error {flat}"


def key_generating_line(name: str, bits: int) -> str:
    return f"generating a {bits}-bit key for {name}…"


def clipped_note(more: int) -> str:
    """The end of a message cut short in the full-screen pane (its whole text stays in the history)."""
    return f"[{more:,} more characters not shown here; the history subcommand prints all of it]"
