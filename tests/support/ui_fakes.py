"""A scripted stand-in for ``ClientSession``: records calls, emits events on demand.

It behaves like the real session where the front ends can tell: ``lookup``
pins a key on first sight (``server_keys``) and repeats a pending key change
as an alert, ``send`` refuses (and alerts) while a key change is pending,
``trust`` and ``verify`` re-pin with a :class:`ContactPinned`, and nothing
that needs the server works while ``connected`` is False.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from dataclasses import dataclass, field

from securechat.clock import now_ms
from securechat.errors import KeyChanged, RoomRefused, ServerErrorReply, SessionClosed
from securechat.events import (
    Acked,
    ConnectionChanged,
    ContactPinned,
    EventListener,
    HistoryEntry,
    KeyChangedAlert,
    MessageSent,
    RoomChanged,
    RoomListing,
    RoomsListed,
    SessionEvent,
    UserEntry,
    UsersListed,
)
from securechat.listing import LIST_PAGE
from securechat.names import is_room
from securechat.records import ContactInfo
from securechat.rooms.log import CHANGES, RoomState, check_change
from securechat.ui import render
from securechat.ui.state import ChatState

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
    server_keys: dict[str, str] = field(default_factory=dict)  # what lookup pins on first sight
    histories: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    auto_ack: str | None = "delivered"
    connected: bool = True
    plaintext: bool = False  # the session's transport: TLS unless a test says otherwise
    run_error: BaseException | None = None
    list_error: Exception | None = None  # what list_users raises (a server error, no answer...)
    sent: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, object]] = field(default_factory=list)
    listeners: list[EventListener] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    unacked: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    rooms: FakeRooms = field(init=False)

    def __post_init__(self) -> None:
        self.rooms = FakeRooms(self)

    @property
    def name(self) -> str:
        return self.own

    @property
    def fingerprint(self) -> str:
        return self.own_fp

    @property
    def online(self) -> bool:
        return self.connected

    def add_listener(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def emit(self, event: SessionEvent) -> None:
        for listener in self.listeners:
            listener(event)

    def go_offline(self) -> None:
        self.connected = False
        self.emit(ConnectionChanged("reconnecting", retry_in=1.0, detail="the server closed the connection"))

    async def run(self) -> None:
        self.running.set()
        if self.run_error is not None:
            raise self.run_error
        await self.closed.wait()

    async def close(self) -> None:
        self.calls.append(("close", None))
        self.closed.set()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Like the session's: every sent message acknowledged (the fake acks at once unless told not to)."""
        return not self.unacked

    def _check_user(self, name: str) -> None:
        if name not in self.users:
            raise ServerErrorReply("unknown_user", f"no user named '{name}'")

    async def send(self, to: str, text: str) -> str:
        if is_room(to):
            return self._send_room(to, text)
        if to in self.changed:
            info = self.contacts.get(to)
            old = info.fingerprint if info and info.fingerprint else BOB_FP
            new = info.pending_fingerprint if info and info.pending_fingerprint else BOB_NEW_FP
            self.emit(KeyChangedAlert(to, old, new))  # the real session alerts on each attempt
            raise KeyChanged(to, old, new)
        self._check_user(to)
        if to not in self.contacts and (to in self.server_keys or not self.connected):
            await self.lookup(to)  # the first message to someone pins their key (online only)
        msg_id = f"{next(self._ids):032x}"
        self.sent.append((to, text))
        self.emit(MessageSent(msg_id, to, now_ms(), text, f"PAYLOAD-{msg_id[-4:]}"))
        if self.auto_ack is not None and self.connected:
            status = "delivered" if self.users.get(to) else "queued"
            self.emit(Acked(msg_id, to, status))  # type: ignore[arg-type]
        else:
            self.unacked.add(msg_id)
        return msg_id

    def _send_room(self, room: str, text: str) -> str:
        """A room message: refused unless we are a member; then one ack per other member (online: delivered)."""
        state = self.rooms.states.get(room)
        if state is None or self.own not in state.members:
            raise RoomRefused(f"you are not a member of {room}", code="not_member")
        msg_id = f"{next(self._ids):032x}"
        self.sent.append((room, text))
        self.emit(MessageSent(msg_id, room, now_ms(), text, f"PAYLOAD-{msg_id[-4:]}"))
        others = sorted(state.members - {self.own})
        done = 0
        for member in others if self.connected else []:
            status = "delivered" if self.users.get(member) else "queued"
            done += status == "delivered"
            self.emit(Acked(msg_id, room, status, member, done, len(others)))  # type: ignore[arg-type]
        return msg_id

    async def lookup(self, name: str) -> ContactInfo:
        self.calls.append(("lookup", name))
        if not self.connected:
            raise SessionClosed("not connected to the server")
        self._check_user(name)
        info = self.contacts.get(name)
        if info is None and name in self.server_keys:
            info = self.contacts[name] = ContactInfo(name, self.server_keys[name], "unverified")
            self.emit(ContactPinned(name, self.server_keys[name], "unverified"))
        if info is not None and info.trust == "changed" and info.fingerprint and info.pending_fingerprint:
            self.emit(KeyChangedAlert(name, info.fingerprint, info.pending_fingerprint))
        return info or ContactInfo(name, None, None)

    def unacknowledged(self) -> int:
        return len(self.unacked)

    async def list_users(self, after: str = "", prefix: str = "") -> UsersListed:
        self.calls.append(("list_users", None))
        if not self.connected:
            raise SessionClosed("not connected to the server")
        if self.list_error is not None:
            raise self.list_error
        names = [n for n in sorted(self.users) if n > after and n.startswith(prefix)]
        page = UsersListed(tuple(UserEntry(n, self.users[n]) for n in names[:LIST_PAGE]), len(names) > LIST_PAGE)
        self.emit(page)
        return page

    def contact(self, name: str) -> ContactInfo:
        self.calls.append(("contact", name))
        return self.contacts.get(name, ContactInfo(name, None, None))

    def trust(self, name: str) -> None:
        self.calls.append(("trust", name))
        self.changed.discard(name)
        info = self.contacts.get(name)
        if info is not None and info.trust == "changed" and info.pending_fingerprint:
            self.contacts[name] = ContactInfo(name, info.pending_fingerprint, "unverified")
            self.emit(ContactPinned(name, info.pending_fingerprint, "unverified"))

    def verify(self, name: str, fingerprint: str) -> bool:
        self.calls.append(("verify", (name, fingerprint)))
        info = self.contacts.get(name)
        if info is None or info.fingerprint != fingerprint:
            return False
        if info.trust != "verified":
            self.contacts[name] = dataclasses.replace(info, trust="verified")
            self.emit(ContactPinned(name, fingerprint, "verified"))
        return True

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        self.calls.append(("history", peer))
        return self.histories.get(peer, [])[-limit:]


@dataclass
class FakeRooms:
    """The session's rooms (:class:`securechat.events.RoomAPI`) with the real rules (``check_change``), no network."""

    session: FakeSession
    states: dict[str, RoomState] = field(default_factory=dict)

    async def _change(self, op: str, room: str, name: str, kind: str = "") -> None:
        session = self.session
        session.calls.append((f"room_{op}", (room, name) if op in ("add", "remove", "admin") else room))
        if not session.connected:
            raise SessionClosed("not connected to the server")
        if op in ("add", "admin") and name not in session.users:
            raise ServerErrorReply("unknown_user", f"no user named '{name}'")
        if room == "#full":  # a refusal only the server knows of (its members are not held here)
            raise ServerErrorReply("room_full", f"{room} has the most members it may have")
        state = self.states.get(room)
        members, admins = check_change(state, op, session.own, name, kind)  # RoomRefused, like the real one
        seq = state.seq + 1 if state is not None else 0
        kind = state.kind if state is not None else kind
        self.states[room] = RoomState(room, kind, seq, bytes([seq]) * 32, members, admins)
        change = CHANGES[op]
        session.emit(RoomChanged(room, change, name, session.own, tuple(sorted(members)), tuple(sorted(admins)), seq, kind))

    async def create(self, room: str, open_room: bool) -> None:
        await self._change("create", room, self.session.own, "open" if open_room else "invite")

    async def join(self, room: str) -> None:
        await self._change("join", room, self.session.own)

    async def add(self, room: str, name: str) -> None:
        await self._change("add", room, name)

    async def remove(self, room: str, name: str) -> None:
        await self._change("remove", room, name)

    async def admin(self, room: str, name: str) -> None:
        await self._change("admin", room, name)

    async def leave(self, room: str) -> None:
        await self._change("leave", room, self.session.own)

    def state(self, room: str) -> RoomState | None:
        return self.states.get(room)

    def held(self) -> list[RoomState]:
        return [self.states[room] for room in sorted(self.states)]

    async def list_rooms(self) -> None:
        self.session.calls.append(("rooms", None))
        if not self.session.connected:
            raise SessionClosed("not connected to the server")
        me = self.session.own
        listed = (RoomListing(s.room, s.kind, me in s.members, len(s.members)) for s in self.held())
        self.session.emit(RoomsListed(tuple(listed)))


FP_A = "a1ce" * 16


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_state(**kw: object) -> ChatState:
    state = ChatState(own_name="alice", fingerprint=FP_A, clock=Clock(), **kw)  # type: ignore[arg-type]
    return state


def pane(state: ChatState, width: int = 10_000) -> str:
    return "\n".join(render.plain(row) for row in render.pane_rows(state, width))
