"""One stored body per room message in SQLite, shared by its members' copies (docs/performance.md section 7).

Every member of a room gets the same ``message`` frame (docs/protocol.md 11.6),
so a room copy's queue row holds no frame (an empty blob) and names, in its
``body`` column, one row of ``room_bodies`` that holds the frame once. How
many queue rows name a body is kept in ``room_body_copies`` (a narrow table of
its own: a count in the body's row would rewrite the whole frame, its
overflow pages, on every copy's insert and delete); triggers keep it on every
insert and delete of a queue row (confirmed, expired, set aside), and the body
goes with its last copy. At 100 members a 54 KB frame was written 99 times
per message when the members' windows were full; now once. Queue rows keep
their ``size``, so every cap counts each copy as before. Functions take the
open connection, inside the caller's transaction, like :mod:`.sqlite_rooms`.

A room copy stored before the ``body`` column existed keeps its frame in its
queue row, and is read from there.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import Final

from .store import QueuedMessage

BODIES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS room_bodies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    frame BLOB NOT NULL,
    UNIQUE (room, sender, msg_id)
);
CREATE TABLE IF NOT EXISTS room_body_copies (
    id INTEGER PRIMARY KEY,
    copies INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS room_body_copy AFTER INSERT ON queue WHEN NEW.body IS NOT NULL BEGIN
    UPDATE room_body_copies SET copies = copies + 1 WHERE id = NEW.body;
END;
CREATE TRIGGER IF NOT EXISTS room_body_uncopy AFTER DELETE ON queue WHEN OLD.body IS NOT NULL BEGIN
    UPDATE room_body_copies SET copies = copies - 1 WHERE id = OLD.body;
    DELETE FROM room_bodies WHERE id = OLD.body AND (SELECT copies FROM room_body_copies WHERE id = OLD.body) <= 0;
    DELETE FROM room_body_copies WHERE id = OLD.body AND copies <= 0;
END;
"""

FETCH: Final = (
    "SELECT recipient, sender, msg_id, server_ts, frame, enqueued_at, seq, room, size, body FROM queue "
    "WHERE recipient = ? AND seq > ? AND enqueued_at >= ? ORDER BY seq LIMIT ?"
)
# Frames of the bodies read last (the members' copies of one message are read in turn).
BODY_CACHE_BYTES: Final = 16 * 2**20


class RoomBodies:
    """The room bodies of one SQLite store, with the frames read last kept in memory (worker thread only).

    A committed body's id is never given again (``AUTOINCREMENT``), and only committed bodies are read,
    so a cached frame is always its id's: the 99 copies of a message in a 100-member room are read from
    the file once, and share one ``bytes`` object.
    """

    def __init__(self, max_bytes: int = BODY_CACHE_BYTES) -> None:
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def stored_as(self, db: sqlite3.Connection, m: QueuedMessage) -> tuple[bytes, int | None]:
        """The ``frame`` and ``body`` of ``m``'s queue row: a room copy's frame is stored once, as its body.

        Call it just before the row is inserted; if the insert is then ignored, :meth:`unused` drops a body
        that no row took. The first copy's frame is kept: every copy of one room message is the same frame
        (a resend of the message under a later server time finds the body of its first send).
        """
        if m.room is None or not m.frame:
            return m.frame, None
        key = (m.room, m.sender, m.msg_id)
        row = db.execute("SELECT id FROM room_bodies WHERE room = ? AND sender = ? AND msg_id = ?", key).fetchone()
        if row is not None:
            return b"", int(row[0])
        body = db.execute("INSERT INTO room_bodies (room, sender, msg_id, frame) VALUES (?, ?, ?, ?)", (*key, m.frame)).lastrowid
        assert body is not None
        db.execute("INSERT INTO room_body_copies (id, copies) VALUES (?, 0)", (body,))
        return b"", body  # not cached here: the transaction may yet roll back, and its id be given again

    def unused(self, db: sqlite3.Connection, body: int | None) -> None:
        """A row was not inserted after :meth:`stored_as` gave it ``body``: drop the body if no row names it."""
        if body is not None:
            db.execute("DELETE FROM room_bodies WHERE id = ? AND (SELECT copies FROM room_body_copies WHERE id = ?) <= 0",
                       (body, body))
            db.execute("DELETE FROM room_body_copies WHERE id = ? AND copies <= 0", (body,))

    def fetch(
        self, db: sqlite3.Connection, recipient: str, after_seq: int, horizon: float, limit: int, max_bytes: int | None
    ) -> list[QueuedMessage]:
        """``recipient``'s queue after ``after_seq``, at most ``limit`` rows and (past the first) ``max_bytes``."""
        rows = db.execute(FETCH, (recipient, after_seq, horizon, limit))
        out: list[QueuedMessage] = []
        total = 0
        for r in rows:  # the cursor steps row by row: frames past the byte budget are never read
            total += r[8]
            if out and max_bytes is not None and total > max_bytes:
                break
            frame = bytes(r[4]) if r[9] is None else self._frame(db, r[9])
            out.append(QueuedMessage(r[0], r[1], r[2], int(r[3]), frame, float(r[5]), int(r[6]), r[7]))
        rows.close()
        return out

    def _frame(self, db: sqlite3.Connection, body: int) -> bytes:
        frame = self._frames.get(body)
        if frame is None:
            frame = bytes(db.execute("SELECT frame FROM room_bodies WHERE id = ?", (body,)).fetchone()[0])
            self._keep(body, frame)
        else:
            self._frames.move_to_end(body)
        return frame

    def _keep(self, body: int, frame: bytes) -> None:
        self._frames[body] = frame
        self._bytes += len(frame)
        while self._bytes > self._max_bytes and len(self._frames) > 1:
            self._bytes -= len(self._frames.popitem(last=False)[1])
