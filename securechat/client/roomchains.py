"""The rooms a client holds, at rest: each room's verified chain of entries and its current state.

Two tables in the state database (docs/protocol.md 11.7, "Holding a room"):
``room_chain`` keeps every verified entry with its head, ``room_state`` the state
after the last one. Both change in one transaction, and only forward: an entry is
stored only after it was verified on the held head. A state at an older ``seq``
(a message sealed under it) is rebuilt from the stored chain, which was verified
when it was stored.

A room we left or were removed from stays held as a **former** room (its chain
up to and past our departure), so that messages sealed while we were a member
still open, redelivered or pasted into ``decrypt``; the table ``room_left``
records when we went. Former rooms are bounded summed over rooms: the
:data:`MAX_FORMER_ROOMS` most recent departures whose chains hold together at
most :data:`MAX_FORMER_ENTRIES` entries; older ones are forgotten whole (their
messages then cannot be opened: "holds no room"). Rooms we are a member of are
bounded by the rules (``MAX_MEMBER_ROOMS``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .. import jsoncodec
from ..clock import now_ms
from ..rooms.log import MAX_ROOM_LOG, RoomEntry, RoomState, apply, parse_entry

if TYPE_CHECKING:  # the store owns its RoomChains; only the type goes this way
    from .state import ClientStore

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS room_chain (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head BLOB NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS room_state (
    room TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head BLOB NOT NULL,
    members TEXT NOT NULL,
    admins TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_left (
    room TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
"""
# Former rooms kept (the most recent departures), and their chains' entries summed (one full log fits).
MAX_FORMER_ROOMS: Final = 32
MAX_FORMER_ENTRIES: Final = MAX_ROOM_LOG
_DEPARTURES: Final = ("remove", "leave")
# Older states rebuilt for messages, kept in memory.
_OLD_STATES: Final = 64


class RoomChains:
    """The verified chains of the rooms held by one identity."""

    def __init__(self, store: ClientStore) -> None:
        self._store = store
        self._me = store.name
        with store.transaction() as db:
            db.executescript(_SCHEMA)
            # Held without us in it and no departure time (a state file from before room_left): oldest.
            db.executemany(
                "INSERT OR IGNORE INTO room_left (room, at) VALUES (?, 0)",
                [(state.room,) for state in self.states() if self._me not in state.members],
            )
        self._old: OrderedDict[tuple[str, int], RoomState] = OrderedDict()
        self.bound()

    def state(self, room: str) -> RoomState | None:
        """The held state of ``room``, or None if it is not held."""
        rows = self._store.query(
            "SELECT room, kind, seq, head, members, admins FROM room_state WHERE room = ?", (room,)
        )
        return _state(rows[0]) if rows else None

    def states(self) -> list[RoomState]:
        """Every held room's state, by name."""
        rows = self._store.query("SELECT room, kind, seq, head, members, admins FROM room_state ORDER BY room")
        return [_state(row) for row in rows]

    def head_at(self, room: str, seq: int) -> bytes | None:
        rows = self._store.query("SELECT head FROM room_chain WHERE room = ? AND seq = ?", (room, seq))
        return bytes(rows[0][0]) if rows else None

    def state_at(self, room: str, seq: int, head: bytes) -> RoomState | None:
        """The state after entry ``seq`` if its head is ``head`` in the held chain, else None."""
        held = self.state(room)
        if held is None or seq > held.seq:
            return None
        if seq == held.seq:
            return held if held.head == head else None
        if self.head_at(room, seq) != head:
            return None
        cached = self._old.get((room, seq))
        if cached is None:
            cached = self._rebuild(room, seq)
            self._old[(room, seq)] = cached
            while len(self._old) > _OLD_STATES:
                self._old.popitem(last=False)
        return cached

    def _rebuild(self, room: str, seq: int) -> RoomState:
        state: RoomState | None = None
        for entry in self.entries(room, seq):
            state = apply(state, entry)
        assert state is not None
        return state

    def entries(self, room: str, upto: int | None = None) -> list[RoomEntry]:
        """The held chain's entries, in order, up to ``seq`` ``upto``."""
        rows = self._store.query(
            "SELECT entry FROM room_chain WHERE room = ? AND seq <= ? ORDER BY seq",
            (room, upto if upto is not None else 2**62),
        )
        return [parse_entry(jsoncodec.loads(str(row[0]).encode("utf-8"))) for row in rows]

    def extend(self, state: RoomState, entries: Sequence[RoomEntry]) -> list[str]:
        """Store verified ``entries`` (continuing the held chain) and the ``state`` they lead to, together;
        the former rooms this forgot to keep within the bounds (see the module docstring)."""
        members = json.dumps(sorted(state.members))
        admins = json.dumps(sorted(state.admins))
        with self._store.transaction() as db:
            db.executemany(
                "INSERT INTO room_chain (room, seq, head, entry) VALUES (?, ?, ?, ?)",
                [(e.room, e.seq, e.head(), jsoncodec.dumps(e.to_json()).decode("utf-8")) for e in entries],
            )
            db.execute(
                "INSERT INTO room_state (room, kind, seq, head, members, admins) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (room) DO UPDATE SET seq = excluded.seq, head = excluded.head, "
                "members = excluded.members, admins = excluded.admins",
                (state.room, state.kind, state.seq, state.head, members, admins),
            )
            if self._me in state.members:
                db.execute("DELETE FROM room_left WHERE room = ?", (state.room,))
            elif any(e.op in _DEPARTURES and e.name == self._me for e in entries):
                db.execute("INSERT OR IGNORE INTO room_left (room, at) VALUES (?, ?)", (state.room, now_ms()))
        return self.bound() if self._me not in state.members else []

    def former(self) -> list[str]:
        """The former rooms held, the most recent departure first."""
        return [str(row[0]) for row in self._store.query("SELECT room FROM room_left ORDER BY at DESC, rowid DESC")]

    def bound(self) -> list[str]:
        """Forget the former rooms beyond the bounds, oldest departure first; the rooms forgotten."""
        rows = self._store.query(
            "SELECT room, (SELECT COUNT(*) FROM room_chain c WHERE c.room = l.room) FROM room_left l "
            "ORDER BY at DESC, rowid DESC"
        )
        kept = entries = 0
        gone: list[str] = []
        for room, count in rows:
            if gone or kept == MAX_FORMER_ROOMS or entries + int(count) > MAX_FORMER_ENTRIES:
                gone.append(str(room))
            else:
                kept, entries = kept + 1, entries + int(count)
        for room in gone:
            self.forget(room)
        return gone

    def forget(self, room: str) -> None:
        """Hold ``room`` no more: its chain and state go, together (a room we were never in, or a former room
        beyond the bounds)."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM room_chain WHERE room = ?", (room,))
            db.execute("DELETE FROM room_state WHERE room = ?", (room,))
            db.execute("DELETE FROM room_left WHERE room = ?", (room,))
        for key in [key for key in self._old if key[0] == room]:
            del self._old[key]


def _state(row: tuple[Any, ...]) -> RoomState:
    room, kind, seq, head, members, admins = row
    return RoomState(
        str(room), str(kind), int(seq), bytes(head), frozenset(json.loads(members)), frozenset(json.loads(admins))
    )
