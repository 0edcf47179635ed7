"""Opening a SQLite store while another server writes to the same file (two servers started at once)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from securechat.server.sqlschema import write_ahead


def test_the_switch_to_wal_waits_for_a_writer_that_holds_the_file(tmp_path: Path) -> None:
    """SQLite answers "locked" at once, without the busy handler, when the switch meets another
    connection's write in progress; the store's opening waits for it instead of failing (this made
    tests/test_store.py::test_racing_registrations_bind_the_first_only fail under load)."""
    path = tmp_path / "server.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    done = threading.Timer(0.3, lambda: other.execute("COMMIT"))  # the other server's write takes a while
    done.start()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        write_ahead(db)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        done.join()
        db.close()
        other.close()
