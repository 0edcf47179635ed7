"""Write ``tests/data/store-9a3eed9.db``: a server database as the release at commit 9a3eed9 left it.

That release kept each room copy's whole frame in its own queue row; later ones keep it once
(``queue.body``, ``room_bodies``) and must still read what an older server stored
(tests/test_store_upgrade.py). Run it with the OLD code first on the path::

    mkdir /tmp/old && git archive 9a3eed9 | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/support/make_old_store.py tests/data/store-9a3eed9.db
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from securechat.server.sqlite import SqliteStore
from securechat.server.store import QueuedMessage

STORED_AT = 1_790_000_000.0  # a fixed time: the test opens the store with a clock just after it


def copies() -> list[QueuedMessage]:
    """What the old server queued: two copies of one room message and a one-to-one message."""
    room = [
        QueuedMessage(name, "alice", "r" * 32, 1_790_000_000_000, b"room frame " * 50, STORED_AT, room="#ops")
        for name in ("bob", "carol")
    ]
    return [*room, QueuedMessage("bob", "alice", "d" * 32, 1_790_000_000_001, b"direct frame", STORED_AT)]


async def main(path: Path) -> None:
    store = SqliteStore(path, clock=lambda: STORED_AT)
    for message in copies():
        assert await store.enqueue(message)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
