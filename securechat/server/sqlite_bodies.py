"""One stored body per room message in SQLite, shared by its members' copies (docs/performance.md section 7).

Every member of a room gets the same ``message`` frame (docs/protocol.md 11.6),
so a room copy's queue row holds no frame (an empty blob) and points, by
(room, sender, id), at one row of ``room_bodies`` that holds the frame once,
A trigger deletes the body with its last copy,
however that copy leaves the queue (confirmed, expired, set aside). At 100 members a 54 KB frame was written, read back
and deleted 99 times per message; now once. Queue rows keep their ``size``,
so every cap counts each copy as before. Functions take the open connection,
inside the caller's transaction, like :mod:`.sqlite_rooms`.

A room copy stored before this table existed keeps its frame in its queue
row, and is read from there (a non-empty ``frame`` is never replaced by a body).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import Final

from .store import QueuedMessage

# The copies are found by (sender, id), not counted: a count in the body's row would rewrite its
# whole frame (the row's overflow pages) on every copy's insert and delete.
BODIES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS room_bodies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    frame BLOB NOT NULL,
    UNIQUE (room, sender, msg_id)
);
CREATE INDEX IF NOT EXISTS queue_by_message ON queue (sender, msg_id);
CREATE TRIGGER IF NOT EXISTS room_bodies_last_copy AFTER DELETE ON queue
WHEN OLD.room IS NOT NULL AND length(OLD.frame) = 0 BEGIN
    DELETE FROM room_bodies WHERE room = OLD.room AND sender = OLD.sender AND msg_id = OLD.msg_id
    AND NOT EXISTS (SELECT 1 FROM queue WHERE sender = OLD.sender AND msg_id = OLD.msg_id AND room = OLD.room);
END;
"""

# A queue's rows in order: a room copy's row with its body's id (found in the unique index: no frame read).
FETCH: Final = (
    "SELECT q.recipient, q.sender, q.msg_id, q.server_ts, q.frame, q.enqueued_at, q.seq, q.room, q.size, b.id "
    "FROM queue q LEFT JOIN room_bodies b ON length(q.frame) = 0 AND b.room = q.room AND b.sender = q.sender "
    "AND b.msg_id = q.msg_id WHERE q.recipient = ? AND q.seq > ? AND q.enqueued_at >= ? ORDER BY q.seq LIMIT ?"
)
# Frames of the bodies read or stored last (the members' copies of one message are read in turn).
BODY_CACHE_BYTES: Final = 16 * 2**20


class RoomBodies:
    """The room bodies of one SQLite store, with the frames used last kept in memory (worker thread only).

    A committed body's id is never given again (``AUTOINCREMENT``), and only committed bodies are read,
    so a cached frame is always its id's: the 99 copies of a message in a 100-member room are read from
    the file once, and share one ``bytes`` object.
    """

    def __init__(self, max_bytes: int = BODY_CACHE_BYTES) -> None:
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def queued_frame(self, db: sqlite3.Connection, m: QueuedMessage) -> bytes:
        """What ``m``'s queue row holds as its frame: a room copy's body is stored once (if it is not yet), its row none.

        Call it just before the row is inserted; if the insert is then ignored, :meth:`unused` drops a body
        that no row took. The first copy's frame is kept: every copy of one room message is the same frame
        (a resend of the message under a later server time finds the body of its first send).
        """
        if m.room is None or not m.frame:
            return m.frame
        key = (m.room, m.sender, m.msg_id)
        # Looked up first: binding the frame to an insert that then conflicts would copy it for nothing.
        if db.execute("SELECT 1 FROM room_bodies WHERE room = ? AND sender = ? AND msg_id = ?", key).fetchone() is None:
            db.execute("INSERT INTO room_bodies (room, sender, msg_id, frame) VALUES (?, ?, ?, ?)", (*key, m.frame))
        return b""  # not cached here: the transaction may yet roll back, and its id be given again

    def unused(self, db: sqlite3.Connection, m: QueuedMessage) -> None:
        """``m``'s row was not inserted after :meth:`queued_frame`: drop its body if no row uses it."""
        if m.room is not None:
            db.execute(
                "DELETE FROM room_bodies WHERE room = ? AND sender = ? AND msg_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM queue WHERE sender = ? AND msg_id = ? AND room = ?)",
                (m.room, m.sender, m.msg_id, m.sender, m.msg_id, m.room),
            )

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

    def _frame(self, db: sqlite3.Connection, body_id: int) -> bytes:
        frame = self._frames.get(body_id)
        if frame is None:
            frame = bytes(db.execute("SELECT frame FROM room_bodies WHERE id = ?", (body_id,)).fetchone()[0])
            self._keep(body_id, frame)
        else:
            self._frames.move_to_end(body_id)
        return frame

    def _keep(self, body_id: int, frame: bytes) -> None:
        self._frames[body_id] = frame
        self._bytes += len(frame)
        while self._bytes > self._max_bytes and len(self._frames) > 1:
            self._bytes -= len(self._frames.popitem(last=False)[1])
