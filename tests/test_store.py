"""The server store, exercised directly (no server): every behaviour of the interface on both backends.

Each test that takes ``stores`` runs twice, on SQLite and on Redis (a real
redis-server started for the session, each test in its own key prefix). The
last tests are SQLite's own (its file and its thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from securechat.errors import QueueFull
from securechat.server.sqlite import SqliteStore
from securechat.server.store import QueuedMessage, ServerStore, SetAside
from tests.support.stores import StoreMaker

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def message(n: int, recipient: str = "bob", sender: str = "alice", size: int = 10, at: float = 1_000_000.0) -> QueuedMessage:
    return QueuedMessage(recipient, sender, f"{n:032x}", n, bytes([n % 256]) * size, at)


def ids(messages: list[QueuedMessage]) -> list[int]:
    return [int(m.msg_id, 16) for m in messages]


@pytest.fixture
def store(stores: StoreMaker) -> ServerStore:
    return stores.new(clock=Clock())


def test_sqlite_store_satisfies_the_protocol(tmp_path: Path) -> None:
    s: ServerStore = SqliteStore(tmp_path / "x.db")
    assert s is not None


async def test_server_id_is_generated_once_and_kept(stores: StoreMaker) -> None:
    first = stores.new()
    sid = await first.server_id()
    assert len(sid) == 16
    assert await first.server_id() == sid
    await first.close()
    assert await stores.again().server_id() == sid
    assert await stores.new().server_id() != sid


async def test_register_binds_a_name_once(store: ServerStore) -> None:
    reg, new = await store.register("alice", "PEM1", "f1")
    assert new and reg.name == "alice" and reg.pubkey_pem == "PEM1" and reg.created == 1_000_000.0
    again, new = await store.register("alice", "PEM2", "f2")
    assert not new and again == reg
    assert await store.get_registration("alice") == reg
    assert await store.get_registration("bob") is None
    await store.register("bob", "PEM3", "f3")
    assert await store.names_page("", "", 10) == ["alice", "bob"]


async def test_racing_registrations_bind_the_first_only(stores: StoreMaker) -> None:
    one, two = stores.new(), stores.again()  # two servers on one store
    results = await asyncio.gather(*(s.register("carol", f"PEM{i}", f"f{i}") for i, s in enumerate([one, two] * 5)))
    assert sum(new for _, new in results) == 1
    assert len({reg for reg, _ in results}) == 1


async def test_fetch_is_oldest_first_in_batches(store: ServerStore) -> None:
    for n in (5, 3, 9, 1):
        assert await store.enqueue(message(n))
    await store.enqueue(message(7, recipient="carol"))
    first = await store.fetch("bob", 0, 2)
    assert ids(first) == [5, 3]
    rest = await store.fetch("bob", first[-1].seq, 10)
    assert ids(rest) == [9, 1]
    assert await store.fetch("bob", rest[-1].seq, 10) == []
    assert first[0].frame == message(5).frame and first[0].server_ts == 5
    assert first[0].sender == "alice" and first[0].recipient == "bob" and first[0].enqueued_at == 1_000_000.0


async def test_fetch_stops_at_a_byte_budget_but_always_returns_one(store: ServerStore) -> None:
    """A session's window bounds what one fetch reads into memory (issue 13, item 4)."""
    for n in (1, 2, 3):
        await store.enqueue(message(n, size=100))
    assert ids(await store.fetch("bob", 0, 10, max_bytes=250)) == [1, 2]
    assert ids(await store.fetch("bob", 0, 10, max_bytes=200)) == [1, 2]
    assert ids(await store.fetch("bob", 0, 10, max_bytes=199)) == [1]
    assert ids(await store.fetch("bob", 0, 10, max_bytes=1)) == [1]  # the first whatever its size
    assert ids(await store.fetch("bob", 1, 10, max_bytes=None)) == [2, 3]


async def test_a_resend_is_not_stored_twice(store: ServerStore) -> None:
    assert await store.enqueue(message(1)) is True
    assert await store.enqueue(message(1)) is False
    assert await store.queue_size("bob") == (1, 10)
    # The same id from another sender, or to another recipient, is another message.
    assert await store.enqueue(message(1, sender="carol"))
    assert await store.enqueue(message(1, recipient="carol"))


async def test_delete_on_confirmation(store: ServerStore) -> None:
    for n in range(4):
        await store.enqueue(message(n))
    assert await store.delete([("bob", "alice", f"{1:032x}"), ("bob", "alice", f"{3:032x}")]) == 2
    assert await store.delete([("bob", "alice", f"{1:032x}")]) == 0
    assert await store.delete([]) == 0
    assert ids(await store.fetch("bob")) == [0, 2]
    assert await store.queue_size("bob") == (2, 20)


async def test_message_count_cap_drops_nothing(stores: StoreMaker) -> None:
    s = stores.new(queue_limit=3, sender_share=1, clock=Clock())
    for n in range(3):
        await s.enqueue(message(n))
    with pytest.raises(QueueFull) as info:
        await s.enqueue(message(3))
    assert info.value.cap == "queue" and "bob" in str(info.value)
    # A resend of a queued message is still recognised when full.
    assert await s.enqueue(message(0)) is False
    # Other recipients have their own cap.
    assert await s.enqueue(message(3, recipient="carol"))
    assert ids(await s.fetch("bob")) == [0, 1, 2]
    await s.delete([("bob", "alice", f"{0:032x}")])
    assert await s.enqueue(message(3))


async def test_byte_cap_drops_nothing(stores: StoreMaker) -> None:
    s = stores.new(queue_bytes=25, sender_share=1, clock=Clock())
    await s.enqueue(message(0, size=10))
    await s.enqueue(message(1, size=10))
    with pytest.raises(QueueFull):
        await s.enqueue(message(2, size=10))
    assert await s.enqueue(message(3, size=5))
    assert await s.queue_size("bob") == (3, 25)


async def test_one_sender_fills_at_most_its_share_of_a_queue(stores: StoreMaker) -> None:
    """Issue 13, item 8: a quarter of the messages and of the bytes by default; others still get in."""
    s = stores.new(queue_limit=8, queue_bytes=1000, clock=Clock())
    assert await s.enqueue(message(0)) and await s.enqueue(message(1))
    with pytest.raises(QueueFull) as info:
        await s.enqueue(message(2))
    assert info.value.cap == "sender_share"
    assert str(info.value) == "'bob' cannot take more messages from you now; try again later"
    assert await s.enqueue(message(2, sender="carol", size=250))  # its first: a share of the bytes
    with pytest.raises(QueueFull):
        await s.enqueue(message(3, sender="carol", size=1))
    assert await s.enqueue(message(2, recipient="dave"))  # another queue, another share
    await s.delete([("bob", "alice", f"{0:032x}")])
    assert await s.enqueue(message(3))  # room in the share again


async def test_every_queue_together_stays_under_the_store_bound(stores: StoreMaker) -> None:
    s = stores.new(store_bytes=30, clock=Clock())
    for n, to in enumerate(("bob", "carol", "dave")):
        assert await s.enqueue(message(n, recipient=to))
    futures = [s.enqueue(message(3, recipient="erin")), s.enqueue(message(4, recipient="erin", size=0))]
    results = await asyncio.gather(*futures, return_exceptions=True)  # one commit: the total counts as it goes
    assert isinstance(results[0], QueueFull) and results[0].cap == "store" and results[1] is True
    assert await s.requeue([message(5, recipient="erin")]) == 1  # nothing handed out is lost
    await s.delete([("bob", "alice", f"{0:032x}"), ("erin", "alice", f"{5:032x}")])
    assert await s.enqueue(message(3, recipient="erin"))
    with pytest.raises(QueueFull):
        await s.enqueue(message(6, recipient="frank"))


async def test_expiry_gives_back_the_share_and_the_store_bound(stores: StoreMaker) -> None:
    clock = Clock(1000.0)
    s = stores.new(queue_limit=4, store_bytes=20, queue_ttl=100.0, clock=clock)
    assert await s.enqueue(message(0, at=900.0)) and await s.enqueue(message(1, recipient="carol", at=900.0))
    for refused in (message(2), message(3, recipient="dave")):  # alice's share of bob's; the store's bytes
        with pytest.raises(QueueFull):
            await s.enqueue(refused)
    clock.now = 1001.0
    assert await s.expire() == 2
    assert await s.enqueue(message(2)) and await s.enqueue(message(3, recipient="dave"))


async def test_requeue_ignores_the_caps_and_duplicates(stores: StoreMaker) -> None:
    s = stores.new(queue_limit=1, clock=Clock())
    await s.enqueue(message(0))
    assert await s.requeue([message(0), message(1), message(2)]) == 2
    assert await s.requeue([]) == 0
    assert ids(await s.fetch("bob")) == [0, 1, 2]


async def test_ttl_expiry(stores: StoreMaker) -> None:
    clock = Clock(1000.0)
    s = stores.new(queue_ttl=100.0, clock=clock)
    await s.enqueue(message(1, at=950.0))
    await s.enqueue(message(2, at=1000.0))
    clock.now = 1060.0
    # Expired messages are never handed out, even before expire() runs.
    assert ids(await s.fetch("bob")) == [2]
    assert await s.expire() == 1
    assert await s.queue_size("bob") == (1, 10)
    clock.now = 1101.0
    assert await s.expire() == 1
    assert await s.fetch("bob") == []


async def test_fetch_skips_a_long_run_of_expired_messages(stores: StoreMaker) -> None:
    clock = Clock(1000.0)
    s = stores.new(queue_ttl=100.0, clock=clock)
    for n in range(30):
        await s.enqueue(message(n, at=800.0))  # expired
    await s.enqueue(message(99, at=1000.0))
    assert ids(await s.fetch("bob", 0, 10)) == [99]


async def test_everything_survives_reopening(stores: StoreMaker) -> None:
    s = stores.new(clock=Clock())
    await s.register("alice", "PEM", "f")
    await s.enqueue(message(1))
    await s.close()
    await s.close()  # idempotent
    s = stores.again(clock=Clock())
    assert (await s.get_registration("alice")) is not None
    assert ids(await s.fetch("bob")) == [1]
    assert await s.queue_size("bob") == (1, 10)


async def test_closed_store_refuses_work(stores: StoreMaker) -> None:
    s = stores.new()
    await s.close()
    with pytest.raises(RuntimeError):
        s.fetch("bob")


def test_bad_limits_are_rejected(stores: StoreMaker) -> None:
    with pytest.raises(ValueError):
        stores.new(queue_limit=0)


async def test_enqueues_in_one_iteration_keep_their_own_results_and_the_call_order(stores: StoreMaker) -> None:
    s = stores.new(queue_limit=2, sender_share=1, clock=Clock())
    futures = [s.enqueue(message(0)), s.enqueue(message(0)), s.enqueue(message(1)), s.enqueue(message(2))]
    # Work submitted after the enqueues (not awaited yet) sees them: call order is kept.
    fetched = s.fetch("bob")
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[:3] == [True, False, True]
    assert isinstance(results[3], QueueFull)
    assert ids(await fetched) == [0, 1]
    await s.close()
    with pytest.raises(RuntimeError):
        s.enqueue(message(3))


async def test_a_requeue_then_a_fetch_in_one_iteration_keep_their_order(store: ServerStore) -> None:
    """A dropped session's messages go back before the next session's backlog is read."""
    requeued = store.requeue([message(n) for n in range(50)])
    fetched = store.fetch("bob", 0, 100)
    assert await requeued == 50
    assert ids(await fetched) == list(range(50))


# --- SQLite's own -------------------------------------------------------------------------


async def test_a_database_from_before_the_shares_is_counted_when_opened(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db", queue_limit=8, store_bytes=45, clock=Clock())
    for n in (0, 1):
        await s.enqueue(message(n))
    await s.enqueue(message(2, recipient="carol"))
    await s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:  # as an earlier version left it
        db.executescript(
            "DROP TRIGGER sender_totals_insert; DROP TRIGGER sender_totals_delete;"
            "DROP TABLE sender_totals; DROP TABLE store_total;"
        )
    s = SqliteStore(tmp_path / "s.db", queue_limit=8, store_bytes=45, clock=Clock())
    with pytest.raises(QueueFull) as share:
        await s.enqueue(message(3))
    with pytest.raises(QueueFull) as store:
        await s.enqueue(message(3, recipient="dave", size=16))
    assert (share.value.cap, store.value.cap) == ("sender_share", "store")
    await s.delete([("bob", "alice", f"{0:032x}")])
    assert await s.enqueue(message(3))
    await s.close()


async def test_wal_mode_and_private_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db" / "server.db")
    await store.server_id()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.path.stat().st_mode & 0o077 == 0
    await store.close()


async def test_work_runs_on_one_dedicated_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.server_id()
    assert store._db_thread is not None and store._db_thread != threading.get_ident()
    await store.close()


async def test_a_message_is_set_aside_after_its_failed_hand_outs_and_its_sender_told_once(stores: StoreMaker) -> None:
    """Issue 13, item 1: at the limit it leaves the queue (and its caps) and waits as a notice for its sender."""
    clock = Clock(1000.0)
    s = stores.new(queue_limit=2, sender_share=1, queue_ttl=100.0, clock=clock)
    for n in (1, 2):
        await s.enqueue(message(n, at=1000.0))
    assert [await s.failed_hand_out("bob", "alice", f"{2:032x}", 3) for _ in range(2)] == [False, False]
    assert await s.failed_hand_out("bob", "carol", f"{2:032x}", 3) is False  # not stored: nothing counted
    assert await s.failed_hand_out("bob", "alice", f"{2:032x}", 3) is True
    assert ids(await s.fetch("bob")) == [1] and await s.queue_size("bob") == (1, 10)
    assert await s.enqueue(message(3, at=1000.0))  # its place in the queue is free again
    assert await s.take_set_aside("carol") == []
    assert await s.take_set_aside("alice") == [SetAside("bob", f"{2:032x}")]
    assert await s.take_set_aside("alice") == []  # told once
    await s.failed_hand_out("bob", "alice", f"{1:032x}", 1)
    clock.now = 1101.0  # past the TTL the notice goes with the queue
    await s.expire()
    assert await s.take_set_aside("alice") == []


async def test_a_confirmation_and_an_expiry_forget_the_failed_hand_outs(stores: StoreMaker) -> None:
    clock = Clock()
    s = stores.new(queue_ttl=3600.0, clock=clock)
    for gone in ("confirmed", "expired"):
        await s.enqueue(message(1, at=clock.now))
        assert await s.failed_hand_out("bob", "alice", f"{1:032x}", 2) is False
        if gone == "confirmed":
            await s.delete([("bob", "alice", f"{1:032x}")])
            clock.now += 1000.0  # past the dedupe window: the same message may be stored again
        else:
            clock.now += 3601.0
            assert await s.expire() == 1
        assert await s.enqueue(message(1, at=clock.now))
        assert await s.failed_hand_out("bob", "alice", f"{1:032x}", 2) is False  # a fresh count
        await s.delete([("bob", "alice", f"{1:032x}")])
        clock.now += 1000.0
