"""The registrations' bounds and the directory's pages in :class:`~securechat.server.sqlite.SqliteStore`.

Synchronous, run on the store's one worker thread; :func:`admit` runs inside
the registration's write transaction, so the bound checked is the bound kept
(:mod:`securechat.server.registration` says what the bounds are).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..errors import RegistrationRefused
from .registration import HOUR, NewName, RegistrationLimits, name_bounds, refilled

NAMES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS register_buckets (
    bucket TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    stamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS register_buckets_by_stamp ON register_buckets (stamp);
"""


def admit(db: sqlite3.Connection, asker: NewName, limits: RegistrationLimits, now: float) -> None:
    """Spend a token of each of ``asker``'s buckets, or raise :class:`RegistrationRefused` and spend none."""
    (count,) = db.execute("SELECT COUNT(*) FROM registrations").fetchone()
    if count >= limits.max_users:
        raise RegistrationRefused("full")
    spent = []
    for bucket, bound, burst in asker.buckets(limits):
        row = db.execute("SELECT tokens, stamp FROM register_buckets WHERE bucket = ?", (bucket,)).fetchone()
        tokens = refilled(row[0], row[1], now, burst) if row is not None else float(burst)
        if tokens < 1:
            raise RegistrationRefused(bound)
        spent.append((bucket, tokens - 1, now))
    db.executemany("INSERT OR REPLACE INTO register_buckets (bucket, tokens, stamp) VALUES (?, ?, ?)", spent)
    # A bucket untouched for an hour is full again: its row says nothing a missing row does not.
    db.execute("DELETE FROM register_buckets WHERE stamp < ?", (now - HOUR,))


def page(db: sqlite3.Connection, after: str, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` names after ``after`` that start with ``prefix``, in order (the primary key's index)."""
    low, inclusive, high = name_bounds(after, prefix)
    above = ">=" if inclusive else ">"
    rows = db.execute(
        f"SELECT name FROM registrations WHERE name {above} ? AND name < ? ORDER BY name LIMIT ?", (low, high, limit)
    )
    return [row[0] for row in rows]
