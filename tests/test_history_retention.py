"""The state database's growth (issue 13, item 14): 100 valid 750 KB messages grew it by 73 MiB
with no bound. `--keep-history N` keeps each conversation's newest N rows, and the file with them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from securechat.client.state import ClientStore
from securechat.records import HistoryEntry
from securechat.server import ChatServer
from tests.support.jsonclient import JsonClient
from tests.support.sessions import BITS, WAIT

TEXT_SIZE = 750_000
T0 = 1_700_000_000_000


def on_disk(store: ClientStore, home: Path) -> int:
    """Bytes of the state database and its WAL and shared-memory files."""
    return sum(path.stat().st_size for path in (home / store.name).glob("state.sqlite3*"))


def entry(peer: str, n: int, text: str, direction: str = "in") -> HistoryEntry:
    return HistoryEntry(peer, direction, f"{n:032x}", T0 + n, text)  # type: ignore[arg-type]


def test_a_hundred_large_messages_leave_only_what_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ClientStore.open(home, "bob", bits=BITS) as store:
        assert store.history.retain(10) == 0
        for n in range(100):
            store.history.add(entry("mallory", n, chr(ord("a") + n % 26) * TEXT_SIZE), accepted=True)
        kept = store.history.recent("mallory", 1000)
        assert [e.msg_id for e in kept] == [f"{n:032x}" for n in range(90, 100)]
        assert ("mallory", f"{0:032x}") in store.accepted  # a replay of a pruned one is still known
        size = on_disk(store, home)
    assert size < 24 * 2**20, size  # 10 rows of 750 KB, the WAL and free pages (before: 73 MiB and up)


def test_retain_prunes_every_conversation_and_shrinks_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ClientStore.open(home, "bob", bits=BITS) as store:
        for n in range(30):
            store.history.add(entry("alice" if n % 2 else "carol", n, "x" * 100_000))
        before = on_disk(store, home)
        assert store.history.retain(3) == 24
        assert len(store.history.recent("alice", 100)) == len(store.history.recent("carol", 100)) == 3
        assert on_disk(store, home) < before // 3


def test_own_messages_not_yet_acknowledged_are_never_pruned(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path / "home", "bob", bits=BITS) as store:
        pending = entry("alice", 0, "still in the outbox", "out")
        store.history.add(pending, awaiting_key=True)
        store.history.retain(2)
        for n in range(1, 6):
            store.history.add(entry("alice", n, f"reply {n}"))
        ids = [e.msg_id for e in store.history.recent("alice", 100)]
        assert ids == [pending.msg_id, f"{4:032x}", f"{5:032x}"]
        with pytest.raises(ValueError):
            store.history.retain(0)


async def test_keep_history_option_of_the_client(server: ChatServer, tmp_path: Path) -> None:
    """`securechat-client --keep-history 2` prunes a conversation kept so far down to two rows."""
    home = tmp_path / "home"
    with ClientStore.open(home, "bob", bits=BITS) as store:
        for n in range(6):
            store.history.add(entry("alice", n, f"message {n}"))
    client = await JsonClient.start("bob", server.port, home, "--keep-history", "2")
    try:
        await client.wait_event("ready", timeout=WAIT)
        await client.command({"cmd": "quit"})
        assert await asyncio.wait_for(client.proc.wait(), WAIT) == 0
    finally:
        client.kill()
    with ClientStore.open(home, "bob", bits=BITS) as store:
        assert [e.text for e in store.history.recent("alice", 100)] == ["message 4", "message 5"]
