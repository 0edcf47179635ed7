"""What the full-screen UI and ``--plain`` show, worded once so that both say the same.

Each function returns plain text (no colour, no time stamp, no layout); a front
end adds those. :func:`describe` words a command's
:mod:`~securechat.commands.outcomes`; the ``*_line`` functions word the session
events both front ends show. The one filter for text that comes from outside
(peers, the server) before it reaches a terminal is :mod:`securechat.commands.sanitize`;
the front ends apply it to every line they show.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Final

from securechat.commands.grammar import COMMANDS, FULL_SCREEN, PLAIN, FrontEnd, Msg, Spec, To, Users, Whois
from securechat.commands.outcomes import (
    ContactShown,
    Failed,
    Level,
    MembersShown,
    Outcome,
    Said,
    Switched,
    Trusted,
    UsersShown,
    Verified,
)
from securechat.commands.rooms import Add, Admin
from securechat.commands.roomwording import members_line
from securechat.errors import KeyChanged, ProtocolError, RequestUnanswered, SecurechatError, ServerErrorReply
from securechat.events import KeyChangedAlert, ServerRefusedAlert, UserEntry
from securechat.names import format_fingerprint

Shown = tuple[Level, str]

# The key line of /help, the one part of it that differs between front ends.
KEY_TIPS: Final[dict[FrontEnd, tuple[str, ...]]] = {
    FULL_SCREEN: (
        "Alt-Enter starts a new line; PageUp/PageDown scroll;",
        "Up/Down recall input; Tab completes commands, names and rooms.",
    ),
    PLAIN: ("Up/Down recall input; Ctrl-D on an empty line leaves.",),
    "json": (),
}
_WHERE: Final[dict[FrontEnd, str]] = {FULL_SCREEN: "the full-screen UI", PLAIN: "--plain", "json": "--json"}
NO_CONVERSATION: Final = "no conversation yet: /to NAME to open one, or /msg NAME TEXT"
OFFLINE_USERS: Final = "offline: the server cannot be asked who is registered now (it reconnects by itself)"
NO_MORE_USERS: Final = "no more names to show: /users starts again, /users PREFIX lists the names that start with it"
BACK_ONLINE: Final = "connected to the server again"
# After the server's fatal error, which the line before says: "closed the connection (CODE)" again adds nothing.
RECONNECTING: Final = "reconnecting until a server answers"
SESSION_OVER: Final = "nothing more is sent or received in this window; /quit to leave"
# What a fatal error from the server means, in words a user can act on (the server's own text is
# shown only for codes not listed here).
FATAL_WORDS: Final = {
    "replaced": "another securechat-client signed in with your name (from another home or machine), "
    "so the server signed this one out",
    "name_taken": "this name is registered on the server with another key",
}
REFUSAL_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")  # every code in docs/protocol.md sections 9, 11.8
PLAINTEXT_WARNING: Final = "PLAINTEXT: no TLS, the network sees names, keys and who writes to whom"


def pretty_fingerprint(fp: str | None) -> str:
    """Groups of four hex digits, or "(none)"."""
    return format_fingerprint(fp) if fp else "(none)"


def fingerprint_rows(fp: str | None) -> list[str]:
    """A fingerprint as two rows of eight groups, easy to read out and compare."""
    groups = pretty_fingerprint(fp).split(" ")
    half = (len(groups) + 1) // 2
    return [" ".join(groups[:half]), " ".join(groups[half:])] if len(groups) > 1 else groups


def refusal(exc: BaseException) -> tuple[str | None, str]:
    """A failure's code and its text alone. A refusal (the server's error frame, or the rules of
    docs/protocol.md that the client checks first) has a code; other failures None and their text.

    The one rule for every front end: the terminals show a refusal as ``code: text``
    (:func:`describe_error`), ``--json`` puts the two in its error line's fields."""
    if isinstance(exc, ServerErrorReply):
        return exc.code, exc.message
    if isinstance(exc, ProtocolError):
        return exc.code, exc.detail
    return None, str(exc)


def refusal_line(code: str | None, text: str) -> str:
    """A refusal as the terminals show it, ``code: text``, on one line (server text may hold breaks).

    A code is a word of docs/protocol.md's shape (``not_allowed``); one that is not (a hostile
    server's ``the key of bob changed``) is shown quoted, so that no refusal reads like one of
    the client's own lines."""
    if code is not None and REFUSAL_CODE.fullmatch(code) is None:
        code = f"'{code}'"
    return " ".join((f"{code}: {text}" if code else text).split())


def describe_error(exc: BaseException) -> str:
    """One line for a failed call; never a traceback."""
    if isinstance(exc, KeyChanged):
        return f"the key of {exc.name} changed; compare it (/whois {exc.name}), then /trust {exc.name}"
    if isinstance(exc, SecurechatError):
        return refusal_line(*refusal(exc)) or type(exc).__name__
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
        "showing payloads under messages: select one with the mouse (line breaks do not",
        "matter) and paste it into `securechat-client decrypt`; /raw FILE writes them whole.",
    ]


def offline_first_message(name: str) -> str:
    return f"offline: the first message to {name} needs their key from the server; send it again once connected"


def no_such_user(name: str) -> str:
    return f"no such user: {name} (/users lists who is registered)"


def yourself(command: str) -> str:
    return f"that is you: /{command} is for someone else (/fingerprint shows your own key)"


def connection_lost_line(detail: str) -> str:
    return f"{detail}; retrying until it answers"


def no_payloads(peer: str) -> str:
    return f"no message from {peer} arrived in this session: no payload to write"


def payloads_not_written(path: str, exc: OSError) -> str:
    if isinstance(exc, FileExistsError):
        return f"{path} exists already: give a new file name"
    return f"could not write {path}: {exc.strerror or exc}"


def payloads_written(count: int, peer: str, path: str, own: str) -> tuple[str, ...]:
    plural = "payload" if count == 1 else "payloads"
    return (
        f"wrote {count} {plural} from {peer} to {path}; open them with:",
        f"    securechat-client --name {own} decrypt < {shlex.quote(path)}",
    )


def unsent_line(count: int, name: str) -> str:
    """Said when the user leaves with own messages the server has not confirmed."""
    what = "1 message is" if count == 1 else f"{count} messages are"
    return (
        f"{what} not confirmed by the server yet: kept in the outbox, sent the next time "
        f"you start securechat-client --name {name}"
    )


def users_line(users: Iterable[UserEntry], more: bool = False, prefix: str = "", continued: bool = False) -> str:
    """One page of the directory; the names are checked names (docs/protocol.md section 3), shown as they are."""
    listed, which = sorted(users, key=lambda user: user.name), f" starting with '{prefix}'" if prefix else ""
    parts, online = [f"{u.name}{'' if u.online else ' (offline)'}" for u in listed], sum(u.online for u in listed)
    if more or continued:
        return f"{len(listed)} users{which} ({online} online){', and more (/users + for the next)' if more else ', the last ones'}: " + ", ".join(parts)
    return f"{len(listed)} registered{which}, {online} online: " + ", ".join(parts) if listed else f"no users{which} are registered"


def describe(outcome: Outcome) -> list[Shown]:  # noqa: C901 - a match dispatcher over outcomes
    """The lines for an outcome (none for those a front end shows its own way)."""
    match outcome:
        case Said(lines, level):
            return [(level, line) for line in lines]
        case Switched(name, _history, online, error, checked):
            talking = f"talking to {name}" + (" (offline: messages are queued)" if online is False else "")
            unread: list[Shown] = (
                [("hint", f"could not load the history with {name}: {error}")] if error else []
            )
            if not checked:
                unread.append(("hint", f"offline: the server could not be asked whether {name} exists"))
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
        case UsersShown(users, more, prefix, continued):
            return [("info", users_line(users, more, prefix, continued))]
        case MembersShown(state):
            return [("info", members_line(state))]
        case Failed(Msg(to, text), error):
            # The line quotes the text: it has left the input line and would be lost.
            why = no_such_user(to) if _unknown(error) else describe_error(error)
            return [("hint", f"not sent to {to} ({quote(text)}): {why}")]
        case Failed(To(name) | Whois(name) | Add(name=name) | Admin(name=name), error) if _unknown(error):
            return [("hint", no_such_user(name))]
        case Failed(Users(), RequestUnanswered() | ServerErrorReply() as error):  # the server's part: say what failed
            return [("hint", f"the list of users failed: {describe_error(error)}")]
        case Failed(_command, error):
            return [("hint", describe_error(error))]
    return []


def _unknown(error: Exception) -> bool:
    return isinstance(error, ServerErrorReply) and error.code == "unknown_user"


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


def server_pinned_line(server: str, fingerprint: str) -> str:
    return (
        f"first connection to the server at {server}: pinned its identity {pretty_fingerprint(fingerprint)} "
        "(its operator can confirm it)"
    )


def server_refused_lines(alert: ServerRefusedAlert) -> list[str]:
    """Why the client will not talk to a server; for a changed identity, ssh's loud warning and the way out."""
    server = alert.server
    if alert.reason not in ("identity_changed", "identity_mismatch") or not alert.presented:
        return [alert.detail]
    changed = alert.reason == "identity_changed"
    lines = [
        f"THE IDENTITY OF THE SERVER AT {server} CHANGED. Nothing was sent to it."
        if changed
        else f"THE SERVER AT {server} IS NOT THE ONE --server-fingerprint NAMES. Nothing was sent to it."
    ]
    for label, fp in (("pinned   " if changed else "expected ", alert.wanted), ("presented", alert.presented)):
        first, *rest = fingerprint_rows(fp)
        lines += [f"{label}  {first}", *(f"{' ' * len(label)}  {row}" for row in rest)]
    lines.append("Someone may be impersonating the server (a man in the middle), or its operator gave it a new key.")
    if changed:
        lines.append("Check 'presented' with the server's operator over another channel; if it matches, accept it:")
        lines.append(f"  {alert.accept}")
    else:
        lines.append("Check 'presented' with the server's operator; if it matches, start again with")
        lines.append(f"  --server-fingerprint {alert.presented}")
    return lines


def rejected_line(sender: str, reason: str, detail: str) -> str:
    return f"rejected a message from {sender}: {reason}" + (f" ({detail})" if detail else "")


def error_line(code: str, message: str, fatal: bool) -> str:
    """An error the server sent of itself (a send it refused, ...): a refusal like a command's."""
    flat = refusal_line(code, message)
    if not fatal:
        return flat
    return FATAL_WORDS.get(code) or f"the server closed the connection: {flat}"


def key_generating_line(name: str, bits: int) -> str:
    return f"generating a {bits}-bit key for {name}…"


def clipped_note(more: int) -> str:
    """The end of a message cut short in the full-screen pane (its whole text stays in the history)."""
    return f"[{more:,} more characters not shown here; the history subcommand prints all of it]"
# --- rooms (docs/protocol.md 11) -------------------------------------------------------------








def undeliverable_line(to: str, room: str | None = None) -> str:
    """An own message the server set aside (ack ``undeliverable``, docs/protocol.md "Delivery")."""
    where = f" in {room}" if room else ""
    return (
        f"your message{where} was not delivered to {to}: their client failed on it again and again, "
        "so the server set it aside; it will not be resent"
    )
