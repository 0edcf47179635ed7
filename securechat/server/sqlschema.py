"""The SQLite store's schema (:mod:`securechat.server.sqlite`): tables, indexes and the triggers that keep its totals."""

from __future__ import annotations

import sqlite3
import time
from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    name TEXT PRIMARY KEY,
    pubkey_pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    server_ts INTEGER NOT NULL,
    frame BLOB NOT NULL,
    size INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    room TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    body INTEGER,  -- a room copy's frame: room_bodies.id (securechat/server/sqlite_bodies.py)
    UNIQUE (recipient, sender, msg_id)
);
CREATE INDEX IF NOT EXISTS queue_by_recipient ON queue (recipient, seq);
CREATE INDEX IF NOT EXISTS queue_by_age ON queue (enqueued_at);
-- Running totals so the caps cost O(1) per enqueue, kept exact by triggers.
CREATE TABLE IF NOT EXISTS queue_totals (
    recipient TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS queue_totals_insert AFTER INSERT ON queue BEGIN
    INSERT INTO queue_totals (recipient, count, bytes) VALUES (NEW.recipient, 1, NEW.size)
    ON CONFLICT (recipient) DO UPDATE SET count = count + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS queue_totals_delete AFTER DELETE ON queue BEGIN
    UPDATE queue_totals SET count = count - 1, bytes = bytes - OLD.size
    WHERE recipient = OLD.recipient;
END;
"""

# Each sender's part of each queue (its fair share, issue 13 item 8) and the bytes of every queue
# together (--max-store-bytes), kept by triggers like queue_totals; a database from before them is
# counted once, when the tables are made. Idempotent in one transaction: two servers opening one old
# file at once count it once.
SENDER_TOTALS: Final = """
CREATE TABLE IF NOT EXISTS store_total (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO store_total (id, bytes) SELECT 0, COALESCE(SUM(size), 0) FROM queue;
CREATE TABLE IF NOT EXISTS sender_totals (
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (recipient, sender)
);
INSERT OR IGNORE INTO sender_totals (recipient, sender, count, bytes)
    SELECT recipient, sender, COUNT(*), SUM(size) FROM queue GROUP BY recipient, sender;
CREATE TRIGGER IF NOT EXISTS sender_totals_insert AFTER INSERT ON queue BEGIN
    INSERT INTO sender_totals (recipient, sender, count, bytes) VALUES (NEW.recipient, NEW.sender, 1, NEW.size)
    ON CONFLICT (recipient, sender) DO UPDATE SET count = count + 1, bytes = bytes + NEW.size;
    UPDATE store_total SET bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS sender_totals_delete AFTER DELETE ON queue BEGIN
    UPDATE sender_totals SET count = count - 1, bytes = bytes - OLD.size
    WHERE recipient = OLD.recipient AND sender = OLD.sender;
    DELETE FROM sender_totals WHERE recipient = OLD.recipient AND sender = OLD.sender AND count <= 0;
    UPDATE store_total SET bytes = bytes - OLD.size;
END;
"""


def write_ahead(db: sqlite3.Connection, patience: float = 10.0) -> None:
    """Put the file in WAL mode. Two servers opening one new file at once: the switch needs the file to
    itself, and SQLite may answer "locked" at once rather than wait in the busy handler (seen in
    tests/test_store.py::test_racing_registrations_bind_the_first_only under load), so it is tried
    again for a while (this runs on the store's worker thread, never the event loop)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
