"""Run commands over a :class:`~securechat.events.SessionAPI`, the same way for every front end.

The :class:`Executor` holds what the front ends share: the current
conversation, who is online, which conversations have shown their history,
which key changes were already told, and whether a ``/users`` answer is
awaited. It calls only the session API and returns
:mod:`~securechat.commands.outcomes`; it never draws anything.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from securechat import pasted
from securechat.commands import roomwording, wording
from securechat.commands.grammar import (
    COMMANDS,
    JSON,
    Clear,
    Command,
    Fingerprint,
    FrontEnd,
    Help,
    Mouse,
    Msg,
    Quit,
    Raw,
    Say,
    To,
    Trust,
    Users,
    Verify,
    Whois,
    slash_name,
)
from securechat.commands.outcomes import (
    ContactShown,
    Failed,
    Local,
    MembersShown,
    Opened,
    Outcome,
    Said,
    Sent,
    Switched,
    Trusted,
    UsersShown,
    Verified,
)
from securechat.commands.rooms import (
    ROOM_COMMANDS,
    Add,
    Admin,
    Create,
    Join,
    Leave,
    Members,
    Remove,
    RoomCommand,
    Rooms,
)
from securechat.errors import RoomRefused, SessionClosed
from securechat.events import (
    ConnectionChanged,
    ContactPinned,
    ErrorReported,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    PresenceChanged,
    RoomChanged,
    SessionAPI,
    SessionEvent,
    UsersListed,
)
from securechat.names import is_room
from securechat.records import HistoryEntry
from securechat.rooms.log import RoomState

# Received payloads kept for /raw FILE: the newest, bounded in count and in characters
# summed over every conversation (a peer's messages may each be a megabyte).
PAYLOADS_KEPT: Final = 500
PAYLOAD_CHARS_KEPT: Final = 8 << 20


@dataclass(frozen=True, slots=True)
class Seen:
    """What a session event means to a front end: ``show`` it or not, and ``outcomes`` to render first."""

    show: bool = True
    outcomes: tuple[Outcome, ...] = ()


@dataclass
class Executor:
    """One front end's commands, run over ``session``; see the module docstring."""

    session: SessionAPI
    front_end: FrontEnd
    current: str | None = None
    online: dict[str, bool] = field(default_factory=dict)
    _opened: set[str] = field(default_factory=set, init=False)
    _told: dict[str, KeyChangedAlert] = field(default_factory=dict, init=False)
    _next_users: tuple[str, str] | None = field(default=None, init=False)  # (prefix, after) for ``/users +``
    _refresh_failed: bool = field(default=False, init=False)  # the directory at login failed once: not again
    _echo: str | None = field(default=None, init=False)  # the contact a running /trust or /verify re-pins
    _cause: str | None = field(default=None, init=False)  # why we are offline, as last told
    _down: bool = field(default=False, init=False)  # the connection was lost (not just starting)
    _fatal_shown: bool = field(default=False, init=False)  # the server's fatal error, just shown, says why it closed
    _payloads: deque[tuple[str, str]] = field(default_factory=deque, init=False)
    _payload_chars: int = field(default=0, init=False)
    _warned_leave: str | None = field(default=None, init=False)  # the room a last admin was just told about

    async def execute(self, command: Command) -> list[Outcome]:
        """Run ``command``; a failure of the session is a :class:`Failed` outcome, never an exception."""
        warned, self._warned_leave = self._warned_leave, None  # only the very next command confirms a /leave
        if isinstance(command, Say):
            if self.current is None:
                return [Said((wording.NO_CONVERSATION,), "hint")]
            command = Msg(self.current, command.text)
        if _target(command) == self.session.name:
            return [Said((wording.yourself(slash_name(command)),), "hint")]
        try:
            if isinstance(command, ROOM_COMMANDS):
                return await self._room(command, warned)
            return await self._run(command)
        except Exception as exc:  # noqa: BLE001 - every failure is shown as a line, never a traceback
            return [Failed(command, exc)]

    async def _run(self, command: Command) -> list[Outcome]:
        match command:
            case Msg(to, text):
                if self._down and not is_room(to) and self.session.contact(to).fingerprint is None:
                    raise SessionClosed(wording.offline_first_message(to))  # at once, not after a timeout
                return [Sent(await self.session.send(to, text), to, text)]
            case To(name):
                return await self._to(name)
            case Users():
                return await self._users(command)
            case Whois(name):
                return [await self._whois(name)]
            case Raw(path) if path is not None:
                return [self._save_payloads(path)]
            case Fingerprint():
                return [Said(wording.own_fingerprint_lines(self.session.name, self.session.fingerprint))]
            case Trust(name):
                before = self.session.contact(name)
                with self._echoing(name):
                    self.session.trust(name)
                self._told.pop(name, None)
                return [Trusted(before, self.session.contact(name))]
            case Verify(name, fingerprint):
                with self._echoing(name):
                    ok = self.session.verify(name, fingerprint)
                pinned = ok or self.session.contact(name).fingerprint is not None
                return [Verified(name, ok, pinned)]
            case Help():
                return [Said(tuple(wording.help_lines(self.front_end)))]
            case Mouse() | Raw() | Clear() | Quit():
                return self._local(command)
        return []

    async def _room(self, command: RoomCommand, warned: str | None = None) -> list[Outcome]:
        """A room command; the changes it makes are shown by their events (``RoomChanged``).

        ``warned``: the room whose last admin the command before was told about (this /leave confirms it)."""
        rooms = self.session.rooms
        match command:
            case Create(room, is_open):
                await rooms.create(room, is_open)
                return [self._switch(room)]
            case Join(room):
                await rooms.join(room)
                return [self._switch(room)]
            case Add(room, name):
                await rooms.add(room, name)
            case Remove(room, name) if name == self.session.name and self.front_end != JSON:  # --json: its error
                return [Said((roomwording.remove_yourself(room),), "hint")]
            case Remove(room, name):
                await rooms.remove(room, name)
            case Admin(room, name):
                await rooms.admin(room, name)
            case Leave(None) | Members(None):
                return await self._in_this_room(command, warned)
            case Leave(str(room)):
                if (state := self._last_admin(room)) is not None and room != warned:
                    self._warned_leave = room
                    return [Said((roomwording.last_admin_line(state),), "hint")]
                await rooms.leave(room)
            case Members(str(room)):
                return [self._members(room)]
            case Rooms():
                await rooms.list_rooms()
        return []

    async def _in_this_room(self, command: Leave | Members, warned: str | None) -> list[Outcome]:
        """``/leave`` or ``/members`` without a room: the room this conversation is, or their usage."""
        if self.current is None or not is_room(self.current):
            usage = COMMANDS[slash_name(command)].usage.replace("[#ROOM]", "#ROOM")
            return [Said((f"{usage}: this conversation is not a room",), "hint")]
        return await self._room(replace(command, room=self.current), warned)

    def _last_admin(self, room: str) -> RoomState | None:
        """``room``'s state if leaving it would leave it without an admin while others are in it
        (docs/protocol.md 11.1); ``--json`` scripts leave at once, the terminals say so first."""
        state = self.session.rooms.state(room)
        if self.front_end == JSON or state is None or len(state.members) < 2:
            return None
        return state if state.admins == {self.session.name} else None

    def _members(self, room: str) -> Outcome:
        state = self.session.rooms.state(room)
        if state is None:
            raise RoomRefused(f"you hold no room {room} (/rooms lists them, /join opens one)", code="unknown_room")
        return MembersShown(state)

    def _local(self, command: Mouse | Raw | Clear | Quit) -> list[Outcome]:
        name = slash_name(command)
        only = COMMANDS[name].only
        if only is not None and only != self.front_end:
            return [Said((wording.unavailable(name, self.front_end),), "hint")]
        if isinstance(command, Clear) and self.current is not None:
            self._opened.discard(self.current)  # the next /to shows the history again
        return [Local(command)]

    async def _to(self, name: str) -> list[Outcome]:
        """Switch to ``name`` once the server says the name exists (offline: switch, unchecked); a room once held."""
        if is_room(name):
            if (state := self.session.rooms.state(name)) is None:
                raise RoomRefused(f"you hold no room {name} (/rooms lists them, /join opens one)", code="unknown_room")
            if self.session.name in state.members:
                return [self._switch(name)]
            return [self._switch(name), Said((roomwording.not_a_member_line(state),), "hint")]  # one you left
        if self.session.online:
            try:
                await self.session.lookup(name)  # unknown_user: Failed, and no switch
            except SessionClosed:
                return [self._switch(name, checked=False)]
            return [self._switch(name)]
        return [self._switch(name, checked=False)]

    def _switch(self, name: str, *, checked: bool = True) -> Switched:
        self.current = name
        history: tuple[HistoryEntry, ...] = ()
        error = None
        if name not in self._opened:
            self._opened.add(name)
            try:
                history = tuple(self.session.history(name))
            except Exception as exc:  # noqa: BLE001 - a broken history file must not block the chat
                error = wording.describe_error(exc)
        return Switched(name, history, self.online.get(name), error, checked)

    async def _users(self, command: Users) -> list[Outcome]:
        if self._down:  # answered at once, not after the request timeout (at start it waits)
            raise SessionClosed(wording.OFFLINE_USERS)
        prefix, after = command.prefix, command.after
        if command.more:
            if self._next_users is None:
                return [Said((wording.NO_MORE_USERS,), "hint")]
            prefix, after = self._next_users
        page = await self.session.list_users(after, prefix)
        more = page.more and bool(page.users)
        self._next_users = (prefix, page.users[-1].name) if more else None
        return [UsersShown(page.users, more, prefix, bool(after))]

    async def _whois(self, name: str) -> ContactShown:
        if self.session.online:
            try:
                return ContactShown(await self.session.lookup(name), self.online.get(name), asked=True)
            except SessionClosed:
                pass  # the connection went while asking: what is pinned here
        return ContactShown(self.session.contact(name), None, asked=False)

    def _save_payloads(self, path: str) -> Said:
        peer = self.current
        if peer is None:
            return Said((wording.NO_CONVERSATION,), "hint")
        found = [payload for sender, payload in self._payloads if sender == peer]
        if not found:
            return Said((wording.no_payloads(peer),), "hint")
        try:
            written = pasted.write_payloads(path, found)
        except OSError as exc:
            return Said((wording.payloads_not_written(path, exc),), "hint")
        return Said(wording.payloads_written(len(found), peer, written, self.session.name))

    def _keep_payload(self, sender: str, payload: str) -> None:
        self._payloads.append((sender, payload))
        self._payload_chars += len(payload)
        while len(self._payloads) > PAYLOADS_KEPT or self._payload_chars > PAYLOAD_CHARS_KEPT:
            self._payload_chars -= len(self._payloads.popleft()[1])

    @contextlib.contextmanager
    def _echoing(self, name: str) -> Iterator[None]:
        self._echo = name
        try:
            yield
        finally:
            self._echo = None

    async def refresh(self) -> list[Outcome]:
        """Ask for the directory's first page without showing it (presence for ``/whois``, names to complete).

        The terminal front ends call it on :class:`~securechat.events.Ready`; ``--json`` does
        not, since it prints every ``users`` event. One page (200 names) whatever the
        directory holds; once it has failed (an error, no answer, or an answer too large
        for a frame, which costs the connection) it is not asked again at each login, so a
        server whose answer breaks the connection cannot keep the client reconnecting.
        """
        if self._refresh_failed:
            return []
        try:
            await self.session.list_users()
        except Exception as exc:  # noqa: BLE001 - shown as a line, like any failed command
            self._refresh_failed = True
            return [Failed(Users(), exc)]
        return []

    def observe(self, event: SessionEvent) -> Seen:
        """Note a session event; the front end renders :attr:`Seen.outcomes`, then the event if ``show``."""
        if isinstance(event, MessageReceived):
            self._keep_payload(event.room or event.sender, event.payload)  # by conversation: a room is one
        match event:
            case ConnectionChanged(state, _retry, detail):
                return self._connection(state, detail)
            case ErrorReported(fatal=True):
                self._fatal_shown = True  # shown by the front end: the line about the reconnect need not repeat it
            case UsersListed(users):  # a page: what it says, over what earlier pages and presence said
                self.online.update((user.name, user.online) for user in users)
            case PresenceChanged(name, online):
                self.online[name] = online
            case MessageReceived() | MessageRejected() if self.current is None:
                self.current = event.room or event.sender  # a room's message opens the room
                return Seen(outcomes=(Opened(self.current),))
            case KeyChangedAlert(name=name):
                # The session repeats the alert on each attempt to send; once is enough.
                if self._told.get(name) == event:
                    return Seen(show=False)
                self._told[name] = event
            case RoomChanged(change="state", members=members) if self.session.name not in members:
                return Seen(show=False)  # a room left: readable (/to), not in the sign-in summary (--json prints all)
            case ContactPinned(name=name, trust=trust) if trust != "changed":
                self._told.pop(name, None)
                if name == self._echo and self.front_end != "json":
                    return Seen(show=False)  # the /trust or /verify outcome says it
        return Seen()

    def _connection(self, state: str, detail: str) -> Seen:
        """Say why the connection is down once per cause, and that it is back after one was said."""
        if state != "connecting":
            self._down = state != "online"
        if state == "online":
            told, self._cause = self._cause, None
            return Seen(outcomes=(Said((wording.BACK_ONLINE,)),) if told else ())
        fatal_shown, self._fatal_shown = self._fatal_shown, self._fatal_shown and state == "connecting"
        if state == "reconnecting" and detail and detail != self._cause:
            self._cause = detail
            line = wording.RECONNECTING if fatal_shown else wording.connection_lost_line(detail)
            return Seen(outcomes=(Said((line,), "warn"),))
        return Seen()


def _target(command: Command) -> str | None:
    """The user a command is about, if any."""
    match command:
        case Msg(to=name) | To(name) | Whois(name) | Trust(name) | Verify(name=name):
            return name
    return None
