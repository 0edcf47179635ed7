"""The rooms' tables of :class:`~securechat.server.sqlite.SqliteStore` (:class:`~securechat.server.roomstore.RoomStore`).

Synchronous, run on the store's one worker thread. The store runs
:func:`create` and :func:`append` inside one write transaction each, so an
entry and the membership change it makes are stored together or not at all.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..rooms.log import MAX_MEMBER_ROOMS, RoomState
from .roomstore import AppendResult, CreateResult, RoomListing, StoredEntry

ROOM_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rooms_by_kind ON rooms (kind, room);
CREATE TABLE IF NOT EXISTS room_log (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    head BLOB NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
-- One row per (room, name) that was ever a member: left_seq is NULL while a member.
CREATE TABLE IF NOT EXISTS room_members (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    admin INTEGER NOT NULL,
    left_seq INTEGER,
    PRIMARY KEY (room, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS room_members_by_name ON room_members (name, room);
"""

_JOINS: Final = ("create", "add", "join")
_ENDS: Final = ("remove", "leave")


def _rooms_of(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT COUNT(*) FROM room_members WHERE name = ? AND left_seq IS NULL", (name,)).fetchone()
    return int(row[0])


def _store_entry(db: sqlite3.Connection, e: StoredEntry) -> None:
    db.execute("INSERT INTO room_log (room, seq, head, entry) VALUES (?, ?, ?, ?)", (e.room, e.seq, e.head, e.entry))
    db.execute("UPDATE rooms SET seq = ?, head = ? WHERE room = ?", (e.seq, e.head, e.room))
    if e.op in _JOINS:
        db.execute(
            "INSERT INTO room_members (room, name, admin, left_seq) VALUES (?, ?, ?, NULL) "
            "ON CONFLICT (room, name) DO UPDATE SET admin = excluded.admin, left_seq = NULL",
            (e.room, e.name, int(e.op == "create")),
        )
    elif e.op in _ENDS:
        db.execute("UPDATE room_members SET admin = 0, left_seq = ? WHERE room = ? AND name = ?", (e.seq, e.room, e.name))
    elif e.op == "admin":
        db.execute("UPDATE room_members SET admin = 1 WHERE room = ? AND name = ?", (e.room, e.name))


def create(db: sqlite3.Connection, e: StoredEntry, now: float, max_rooms: int) -> CreateResult:
    """Inside a write transaction: the room and its first entry, unless the name is taken or a cap is reached."""
    if db.execute("SELECT 1 FROM rooms WHERE room = ?", (e.room,)).fetchone() is not None:
        return "exists"
    count = int(db.execute("SELECT COUNT(*) FROM rooms").fetchone()[0])
    if count >= max_rooms or _rooms_of(db, e.name) >= MAX_MEMBER_ROOMS:
        return "too_many_rooms"
    db.execute(
        "INSERT INTO rooms (room, kind, seq, head, created) VALUES (?, ?, ?, ?, ?)",
        (e.room, e.kind, e.seq, e.head, now),
    )
    _store_entry(db, e)
    return "ok"


def append(db: sqlite3.Connection, e: StoredEntry) -> AppendResult:
    """Inside a write transaction: the entry, if its seq is still the room's next (compare and set)."""
    row = db.execute("SELECT seq FROM rooms WHERE room = ?", (e.room,)).fetchone()
    if row is None or int(row[0]) + 1 != e.seq:
        return "stale"
    if e.op in ("add", "join") and _rooms_of(db, e.name) >= MAX_MEMBER_ROOMS:
        return "too_many_rooms"
    _store_entry(db, e)
    return "ok"


def room(db: sqlite3.Connection, name: str) -> RoomState | None:
    row = db.execute("SELECT kind, seq, head FROM rooms WHERE room = ?", (name,)).fetchone()
    if row is None:
        return None
    members = db.execute("SELECT name, admin FROM room_members WHERE room = ? AND left_seq IS NULL", (name,)).fetchall()
    return RoomState(
        name, str(row[0]), int(row[1]), bytes(row[2]),
        frozenset(m for m, _ in members), frozenset(m for m, admin in members if admin),
    )


def log(db: sqlite3.Connection, name: str, since: int, until: int, limit: int) -> list[str]:
    rows = db.execute(
        "SELECT entry FROM room_log WHERE room = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
        (name, since, until, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def head(db: sqlite3.Connection, name: str, seq: int) -> bytes | None:
    row = db.execute("SELECT head FROM room_log WHERE room = ? AND seq = ?", (name, seq)).fetchone()
    return bytes(row[0]) if row is not None else None


def left(db: sqlite3.Connection, name: str, member: str) -> int | None:
    row = db.execute("SELECT left_seq FROM room_members WHERE room = ? AND name = ?", (name, member)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def page(db: sqlite3.Connection, member: str, after: str, limit: int) -> list[RoomListing]:
    rows = db.execute(
        "SELECT r.room, r.kind, r.seq, r.head, "
        "  EXISTS (SELECT 1 FROM room_members m WHERE m.room = r.room AND m.name = ? AND m.left_seq IS NULL), "
        "  (SELECT COUNT(*) FROM room_members m WHERE m.room = r.room AND m.left_seq IS NULL) "
        "FROM rooms r WHERE r.room > ? AND (r.kind = 'open' OR r.room IN "
        "  (SELECT room FROM room_members WHERE name = ? AND left_seq IS NULL)) "
        "ORDER BY r.room LIMIT ?",
        (member, after, member, limit),
    ).fetchall()
    return [RoomListing(str(r[0]), str(r[1]), bool(r[4]), int(r[5]), int(r[2]), bytes(r[3])) for r in rows]
