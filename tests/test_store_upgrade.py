"""A database written by an older server opens in this one and loses nothing (SQLite).

``tests/data/store-9a3eed9.db`` was written by the release at commit 9a3eed9
(tests/support/make_old_store.py says how): room copies with their whole frame
in their own queue row, before ``queue.body`` and ``room_bodies`` existed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from securechat.server.sqlite import SqliteStore
from securechat.server.store import QueuedMessage
from tests.conftest import REPO_ROOT
from tests.support.make_old_store import STORED_AT, copies

OLD_DB = REPO_ROOT / "tests" / "data" / "store-9a3eed9.db"


async def test_copies_an_older_server_stored_are_delivered_and_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    shutil.copyfile(OLD_DB, path)
    store = SqliteStore(path, clock=lambda: STORED_AT + 60)
    try:
        old = {(m.recipient, m.msg_id): m for m in copies()}
        got = [*await store.fetch("bob"), *await store.fetch("carol")]
        assert {(m.recipient, m.msg_id): (m.frame, m.room, m.sender) for m in got} == {
            key: (m.frame, m.room, m.sender) for key, m in old.items()
        }
        # A new room message in the upgraded file is stored the new way, beside the old rows.
        new = [
            QueuedMessage(name, "alice", "n" * 32, 1_790_000_100_000, b"new room frame " * 40, STORED_AT + 60, room="#ops")
            for name in ("bob", "carol")
        ]
        for message in new:
            assert await store.enqueue(message)
        assert [(m.msg_id, m.frame) for m in await store.fetch("carol")] == [
            ("r" * 32, old[("carol", "r" * 32)].frame),
            ("n" * 32, new[1].frame),
        ]
        # Confirming the old copies deletes them; the new message's body stays for its other copy.
        assert await store.delete([(m.recipient, m.sender, m.msg_id) for m in got]) == 3
        assert await store.delete([("carol", "alice", "n" * 32)]) == 1
        assert [(m.msg_id, m.frame) for m in await store.fetch("bob")] == [("n" * 32, new[0].frame)]
    finally:
        await store.close()
