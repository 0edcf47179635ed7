"""Set-aside messages in SQLite (issue 13, item 1; docs/protocol.md, "Delivery").

A stored message counts its failed hand-outs in ``queue.failures``; at the
limit it leaves the queue for ``set_aside``, where its sender's notice waits
until the sender is told or the queue's TTL passes. Functions take the open
connection, inside the caller's transaction, like :mod:`.sqlite_rooms`.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from .store import SetAside

ASIDE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS set_aside (
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    room TEXT,
    enqueued_at REAL NOT NULL,
    PRIMARY KEY (sender, recipient, msg_id)
);
"""
# Columns of the queue added since its first version, for a database from before them.
QUEUE_COLUMNS: Final = {"room": "TEXT", "failures": "INTEGER NOT NULL DEFAULT 0", "body": "INTEGER"}


def add_queue_columns(db: sqlite3.Connection) -> None:
    """Add to ``queue`` the columns a database from before them lacks."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(queue)")}
    for column, kind in QUEUE_COLUMNS.items():
        if column not in columns:
            db.execute(f"ALTER TABLE queue ADD COLUMN {column} {kind}")


def failed_hand_out(db: sqlite3.Connection, recipient: str, sender: str, msg_id: str, limit: int) -> bool:
    """Count one failed hand-out; at ``limit``, move the message aside. True if it was set aside now."""
    key = (recipient, sender, msg_id)
    row = db.execute(
        "UPDATE queue SET failures = failures + 1 WHERE recipient = ? AND sender = ? AND msg_id = ? "
        "RETURNING failures, room, enqueued_at",
        key,
    ).fetchone()
    if row is None or int(row[0]) < limit:
        return False
    db.execute("DELETE FROM queue WHERE recipient = ? AND sender = ? AND msg_id = ?", key)
    db.execute(
        "INSERT OR REPLACE INTO set_aside (sender, recipient, msg_id, room, enqueued_at) VALUES (?, ?, ?, ?, ?)",
        (sender, recipient, msg_id, row[1], row[2]),
    )
    return True


def take(db: sqlite3.Connection, sender: str, horizon: float) -> list[SetAside]:
    """``sender``'s notices enqueued since ``horizon``, oldest first; all of its notices are removed."""
    rows = db.execute(
        "SELECT recipient, msg_id, room FROM set_aside WHERE sender = ? AND enqueued_at >= ? ORDER BY enqueued_at",
        (sender, horizon),
    ).fetchall()
    if rows or db.execute("SELECT 1 FROM set_aside WHERE sender = ? LIMIT 1", (sender,)).fetchone():
        db.execute("DELETE FROM set_aside WHERE sender = ?", (sender,))  # a login with none writes nothing
    return [SetAside(r[0], r[1], r[2]) for r in rows]
