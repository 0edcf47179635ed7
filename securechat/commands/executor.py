"""Run commands over a :class:`~securechat.events.SessionAPI`, the same way for every front end.

The :class:`Executor` holds what the front ends share: the current
conversation, who is online, which conversations have shown their history,
which key changes were already told, and whether a ``/users`` answer is
awaited. It calls only the session API and returns
:mod:`~securechat.commands.outcomes`; it never draws anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from securechat.commands import wording
from securechat.commands.grammar import (
    COMMANDS,
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
    Opened,
    Outcome,
    Said,
    Sent,
    Switched,
    Trusted,
    UsersShown,
    Verified,
)
from securechat.errors import SessionClosed
from securechat.events import (
    ContactPinned,
    KeyChangedAlert,
    MessageReceived,
    MessageRejected,
    PresenceChanged,
    SessionAPI,
    SessionEvent,
    UsersListed,
)
from securechat.records import HistoryEntry


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
    _users_wanted: int = field(default=0, init=False)

    async def execute(self, command: Command) -> list[Outcome]:
        """Run ``command``; a failure of the session is a :class:`Failed` outcome, never an exception."""
        if isinstance(command, Say):
            if self.current is None:
                return [Said((wording.NO_CONVERSATION,), "hint")]
            command = Msg(self.current, command.text)
        try:
            return await self._run(command)
        except Exception as exc:  # noqa: BLE001 - every failure is shown as a line, never a traceback
            return [Failed(command, exc)]

    async def _run(self, command: Command) -> list[Outcome]:
        match command:
            case Msg(to, text):
                return [Sent(await self.session.send(to, text), to, text)]
            case To(name):
                return [self._switch(name)]
            case Users():
                return await self._users()
            case Whois(name):
                return [await self._whois(name)]
            case Fingerprint():
                return [Said(wording.own_fingerprint_lines(self.session.name, self.session.fingerprint))]
            case Trust(name):
                before = self.session.contact(name)
                self.session.trust(name)
                self._told.pop(name, None)
                return [Trusted(before, self.session.contact(name))]
            case Verify(name, fingerprint):
                ok = self.session.verify(name, fingerprint)
                pinned = ok or self.session.contact(name).fingerprint is not None
                return [Verified(name, ok, pinned)]
            case Help():
                return [Said(tuple(wording.help_lines(self.front_end)))]
            case Mouse() | Raw() | Clear() | Quit():
                return self._local(command)
        return []

    def _local(self, command: Mouse | Raw | Clear | Quit) -> list[Outcome]:
        name = slash_name(command)
        only = COMMANDS[name].only
        if only is not None and only != self.front_end:
            return [Said((wording.unavailable(name, self.front_end),), "hint")]
        return [Local(command)]

    def _switch(self, name: str) -> Switched:
        self.current = name
        history: tuple[HistoryEntry, ...] = ()
        error = None
        if name not in self._opened:
            self._opened.add(name)
            try:
                history = tuple(self.session.history(name))
            except Exception as exc:  # noqa: BLE001 - a broken history file must not block the chat
                error = wording.describe_error(exc)
        return Switched(name, history, self.online.get(name), error)

    async def _users(self) -> list[Outcome]:
        self._users_wanted += 1  # before the call: the answer may come while it runs
        try:
            await self.session.list_users()
        except BaseException:
            self._users_wanted -= 1
            raise
        return []

    async def _whois(self, name: str) -> ContactShown:
        if self.session.online:
            try:
                return ContactShown(await self.session.lookup(name), self.online.get(name), asked=True)
            except SessionClosed:
                pass  # the connection went while asking: what is pinned here
        return ContactShown(self.session.contact(name), None, asked=False)

    async def refresh(self) -> list[Outcome]:
        """Ask for the directory without showing it (presence for ``/whois``, names to complete).

        The terminal front ends call it on :class:`~securechat.events.Ready`;
        ``--json`` does not, since it prints every ``users`` event.
        """
        try:
            await self.session.list_users()
        except Exception as exc:  # noqa: BLE001 - shown as a line, like any failed command
            return [Failed(Users(), exc)]
        return []

    def observe(self, event: SessionEvent) -> Seen:
        """Note a session event; the front end renders :attr:`Seen.outcomes`, then the event if ``show``."""
        match event:
            case UsersListed(users):
                self.online = {user.name: user.online for user in users}
                if self._users_wanted > 0:
                    self._users_wanted -= 1
                    return Seen(outcomes=(UsersShown(users),))
            case PresenceChanged(name, online):
                self.online[name] = online
            case MessageReceived(sender=peer) | MessageRejected(sender=peer) if self.current is None:
                self.current = peer
                return Seen(outcomes=(Opened(peer),))
            case KeyChangedAlert(name=name):
                # The session repeats the alert on each attempt to send; once is enough.
                if self._told.get(name) == event:
                    return Seen(show=False)
                self._told[name] = event
            case ContactPinned(name=name, trust=trust) if trust != "changed":
                self._told.pop(name, None)
        return Seen()
