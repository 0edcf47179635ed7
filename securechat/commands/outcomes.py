"""What running a command (or noticing a session event) produced, for a front end to render.

The :class:`~securechat.commands.executor.Executor` returns these values; the
full-screen UI and ``--plain`` turn them into lines with
:func:`securechat.commands.wording.describe` (so both say the same thing), and
``--json`` turns the few it has lines for into JSON objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from securechat.commands.grammar import Clear, Command, Mouse, Quit, Raw
from securechat.events import UserEntry
from securechat.records import ContactInfo, HistoryEntry
from securechat.rooms.log import RoomState

Level = Literal["info", "hint", "warn"]


@dataclass(frozen=True, slots=True)
class Said:
    """Lines to show as they are (help, the own fingerprint, a hint)."""

    lines: tuple[str, ...]
    level: Level = "info"


@dataclass(frozen=True, slots=True)
class Sent:
    """The session took an own message (its :class:`~securechat.events.MessageSent` says more)."""

    msg_id: str
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Switched:
    """``/to``: the conversation is now ``name``; ``history`` the first time it is opened."""

    name: str
    history: tuple[HistoryEntry, ...]
    online: bool | None
    history_error: str | None = None
    checked: bool = True  # the server said the name exists (False: offline, not asked)


@dataclass(frozen=True, slots=True)
class Opened:
    """A first message arrived while no conversation was open: it opened the sender's."""

    name: str


@dataclass(frozen=True, slots=True)
class ContactShown:
    """``/whois``: ``asked`` is False when the server could not be asked (offline: the local pin)."""

    info: ContactInfo
    online: bool | None
    asked: bool


@dataclass(frozen=True, slots=True)
class Trusted:
    """``/trust``: the contact before and after."""

    before: ContactInfo
    after: ContactInfo


@dataclass(frozen=True, slots=True)
class Verified:
    name: str
    ok: bool
    pinned: bool


@dataclass(frozen=True, slots=True)
class UsersShown:
    """The page of the directory that ``/users`` asked for arrived; ``more``: ``/users +`` shows the next."""

    users: tuple[UserEntry, ...]
    more: bool = False
    prefix: str = ""
    continued: bool = False  # a later page (``/users +``): not the start of the directory


@dataclass(frozen=True, slots=True)
class Failed:
    """``command`` failed; ``error`` is what the session raised."""

    command: Command
    error: Exception


@dataclass(frozen=True, slots=True)
class Local:
    """A command only the front end can carry out (its screen, its mouse, leaving)."""

    command: Raw | Clear | Mouse | Quit


@dataclass(frozen=True, slots=True)
class MembersShown:
    """``/members``: a room as verified here."""

    state: RoomState


Outcome = (
    Said | Sent | Switched | Opened | ContactShown | Trusted | Verified | UsersShown | Failed | Local | MembersShown
)
