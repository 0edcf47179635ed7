"""What the server keeps of rooms: the :class:`RoomStore` interface and its records (docs/protocol.md 11.6).

A room is its log of entries (each stored as its canonical JSON text, with its
head) and what the log results in: the room's kind, last ``seq`` and head, and
its members (current ones, and former ones with the ``seq`` that ended their
membership). The server checks every rule before it stores an entry
(:mod:`securechat.rooms.log`); the store keeps the membership up to date from
each entry's op, atomically with the entry.

The linearisation point is :meth:`RoomStore.room_append`: it stores the entry
only if its ``seq`` is still the room's next, so two appends racing for one
``seq`` (two connections, or two server nodes) cannot both win. A networked
backend (Redis) must keep that compare-and-set and the call-order guarantee of
:class:`~securechat.server.store.ServerStore`; a server node that caches room
states must drop its copy when another node appends (see
:mod:`securechat.server.rooms`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from ..rooms.log import RoomState

DEFAULT_MAX_ROOMS: Final = 1000

CreateResult = Literal["ok", "exists", "too_many_rooms"]
AppendResult = Literal["ok", "stale", "too_many_rooms"]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry the server has checked, as the store keeps it.

    ``entry`` is the canonical JSON text (exactly the fields of section 11.2);
    ``op`` and ``name`` tell the store how the membership changes; ``kind`` is
    set for ``create`` only.
    """

    room: str
    seq: int
    op: str
    name: str
    head: bytes
    entry: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class RoomListing:
    """One row of ``room_list``: a room the caller is in, or an open room."""

    room: str
    kind: str
    member: bool
    members: int
    seq: int
    head: bytes


class RoomStore(Protocol):
    """The rooms part of the server's store; every method submits its work when called, in call order."""

    def room_create(self, entry: StoredEntry) -> asyncio.Future[CreateResult]:
        """Store a room's first entry: ``exists`` if the name is taken, ``too_many_rooms`` past the room cap
        or when the creator is in ``MAX_MEMBER_ROOMS`` rooms already."""
        ...

    def room_append(self, entry: StoredEntry) -> asyncio.Future[AppendResult]:
        """Store an entry if its ``seq`` is the room's next (else ``stale``), and apply its op to the members;
        ``too_many_rooms`` when an ``add`` or ``join`` would put its subject past ``MAX_MEMBER_ROOMS``."""
        ...

    def room(self, room: str) -> asyncio.Future[RoomState | None]:
        """The room's state after its last entry, or None if it does not exist."""
        ...

    def room_log(self, room: str, since: int, until: int, limit: int) -> asyncio.Future[list[str]]:
        """The entries' texts with ``since <= seq <= until``, in order, at most ``limit``."""
        ...

    def room_head(self, room: str, seq: int) -> asyncio.Future[bytes | None]:
        """The head of the entry at ``seq``, or None."""
        ...

    def room_left(self, room: str, name: str) -> asyncio.Future[int | None]:
        """For a former member, the ``seq`` of the entry that ended their membership; else None."""
        ...

    def rooms_page(self, name: str, after: str, limit: int) -> asyncio.Future[list[RoomListing]]:
        """Rooms ``name`` is a member of, and open rooms, with names after ``after``, sorted, at most ``limit``."""
        ...
