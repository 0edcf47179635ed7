"""A scripted stand-in for ``ClientSession``: records calls, emits events on demand."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from securechat.errors import KeyChanged, ServerErrorReply
from securechat.events import (
    Acked,
    ContactInfo,
    EventListener,
    HistoryEntry,
    MessageSent,
    SessionEvent,
    UserEntry,
    UsersListed,
)

ALICE_FP = "a1ce" * 16
BOB_FP = "b0b0" * 16
BOB_NEW_FP = "bad0" * 16


@dataclass
class FakeSession:
    """Implements :class:`securechat.events.SessionAPI` without a network."""

    own: str = "alice"
    own_fp: str = ALICE_FP
    users: dict[str, bool] = field(default_factory=lambda: {"alice": True, "bob": True, "carol": False})
    contacts: dict[str, ContactInfo] = field(default_factory=dict)
    histories: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    auto_ack: str | None = "delivered"
    run_error: BaseException | None = None
    sent: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, object]] = field(default_factory=list)
    listeners: list[EventListener] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.own

    @property
    def fingerprint(self) -> str:
        return self.own_fp

    def add_listener(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def emit(self, event: SessionEvent) -> None:
        for listener in self.listeners:
            listener(event)

    async def run(self) -> None:
        self.running.set()
        if self.run_error is not None:
            raise self.run_error
        await self.closed.wait()

    async def close(self) -> None:
        self.calls.append(("close", None))
        self.closed.set()

    async def send(self, to: str, text: str) -> str:
        if to in self.changed:
            raise KeyChanged(to, BOB_FP, BOB_NEW_FP)
        if to not in self.users:
            raise ServerErrorReply("unknown_user", f"no user named '{to}'")
        msg_id = f"{next(self._ids):032x}"
        self.sent.append((to, text))
        self.emit(MessageSent(msg_id, to, 1_700_000_000_000, text, f"PAYLOAD-{msg_id[-4:]}"))
        if self.auto_ack is not None:
            status = "delivered" if self.users.get(to) else "queued"
            self.emit(Acked(msg_id, to, status))  # type: ignore[arg-type]
        return msg_id

    async def list_users(self) -> None:
        self.calls.append(("list_users", None))
        self.emit(UsersListed(tuple(UserEntry(n, on) for n, on in sorted(self.users.items()))))

    def contact(self, name: str) -> ContactInfo:
        self.calls.append(("contact", name))
        return self.contacts.get(name, ContactInfo(name, None, None))

    def trust(self, name: str) -> None:
        self.calls.append(("trust", name))
        self.changed.discard(name)

    def verify(self, name: str, fingerprint: str) -> bool:
        self.calls.append(("verify", (name, fingerprint)))
        info = self.contacts.get(name)
        return info is not None and info.fingerprint == fingerprint

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        self.calls.append(("history", peer))
        return self.histories.get(peer, [])[-limit:]
