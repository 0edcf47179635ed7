"""The rooms part of the server store (:class:`~securechat.server.roomstore.RoomStore`), on both backends.

Each test runs on SQLite and on Redis (a real redis-server, a key prefix per
test). The store keeps what the server checked; entries here are synthetic
(the store never reads an entry's text), so each test is about what the store
alone must get right: the compare-and-set on ``seq``, the membership each op
leaves, the caps, the listings, and a room copy that keeps its room in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from securechat.rooms.log import MAX_MEMBER_ROOMS
from securechat.server.roomstore import StoredEntry
from securechat.server.sqlite import SqliteStore
from securechat.server.store import QueuedMessage, ServerStore
from tests.support.stores import StoreMaker

pytestmark = pytest.mark.timeout(60)


def entry(room: str, seq: int, op: str, name: str, kind: str = "") -> StoredEntry:
    head = hashlib.sha256(f"{room} {seq} {op} {name}".encode()).digest()
    return StoredEntry(room, seq, op, name, head, f'{{"seq":{seq},"op":"{op}","name":"{name}"}}', kind)


async def make(store: ServerStore, room: str = "#ops", kind: str = "invite", *ops: tuple[str, str]) -> int:
    """Create ``room`` by alice and apply ``ops``; returns the last seq."""
    assert await store.room_create(entry(room, 0, "create", "alice", kind)) == "ok"
    for seq, (op, name) in enumerate(ops, start=1):
        assert await store.room_append(entry(room, seq, op, name)) == "ok"
    return len(ops)


async def test_each_op_leaves_its_members_and_admins(stores: StoreMaker) -> None:
    store = stores.new()
    ops = [("add", "bob"), ("add", "carol"), ("admin", "bob"), ("remove", "carol"), ("leave", "bob"), ("add", "bob")]
    last = await make(store, "#ops", "invite", *ops)
    state = await store.room("#ops")
    assert state is not None
    assert (state.kind, state.seq, state.members, state.admins) == ("invite", last, {"alice", "bob"}, {"alice"})
    assert state.head == entry("#ops", last, "add", "bob").head
    # Removed at seq 4; bob left at 5 and came back: a current member has no end.
    assert (await store.room_left("#ops", "carol"), await store.room_left("#ops", "bob")) == (4, None)
    assert await store.room_left("#ops", "nobody") is None
    assert await store.room("#nowhere") is None


async def test_the_log_and_its_heads(stores: StoreMaker) -> None:
    store = stores.new()
    await make(store, "#ops", "open", *[("join", f"u{i}") for i in range(9)])
    texts = await store.room_log("#ops", 0, 9, 100)
    assert [int(t.split(",")[0].split(":")[1]) for t in texts] == list(range(10))
    assert len(await store.room_log("#ops", 3, 9, 4)) == 4  # the limit
    assert await store.room_log("#ops", 5, 4, 10) == []  # since past until
    assert await store.room_log("#ops", 8, 20, 10) == texts[8:]
    assert await store.room_head("#ops", 2) == entry("#ops", 2, "join", "u1").head
    assert await store.room_head("#ops", 10) is None


async def test_an_append_needs_the_next_seq(stores: StoreMaker) -> None:
    store = stores.new()
    await make(store, "#ops", "invite", ("add", "bob"))
    assert await store.room_append(entry("#ops", 1, "add", "carol")) == "stale"  # taken
    assert await store.room_append(entry("#ops", 3, "add", "carol")) == "stale"  # a gap
    assert await store.room_append(entry("#none", 1, "add", "carol")) == "stale"  # no such room
    assert await store.room_create(entry("#ops", 0, "create", "carol", "open")) == "exists"
    state = await store.room("#ops")
    assert state is not None and state.seq == 1 and state.members == {"alice", "bob"} and state.kind == "invite"


async def test_appends_racing_through_two_stores_one_wins(stores: StoreMaker) -> None:
    """Two nodes' stores over the same data: of many appends for one seq, exactly one is stored."""
    first = stores.new()
    await make(first, "#ops", "open")
    second = stores.again()
    for seq in range(1, 21):
        tries = [(first if i % 2 else second).room_append(entry("#ops", seq, "join", f"u{seq}-{i}")) for i in range(6)]
        results = await asyncio.gather(*tries)
        assert sorted(results) == ["ok"] + ["stale"] * 5, results
    state = await second.room("#ops")
    assert state is not None and state.seq == 20 and len(state.members) == 21
    assert len(await first.room_log("#ops", 0, 100, 100)) == 21  # one entry per seq: no fork


async def test_room_caps(stores: StoreMaker) -> None:
    store = stores.new(max_rooms=3)
    for room in ("#a", "#b", "#c"):
        await make(store, room)
    assert await store.room_create(entry("#d", 0, "create", "bob")) == "too_many_rooms"


async def test_a_member_is_in_at_most_max_member_rooms(stores: StoreMaker) -> None:
    store = stores.new(max_rooms=MAX_MEMBER_ROOMS + 10)
    for i in range(MAX_MEMBER_ROOMS - 1):
        assert await store.room_create(entry(f"#r{i}", 0, "create", "bob", "open")) == "ok"
    await make(store, "#last", "open")
    assert await store.room_append(entry("#last", 1, "join", "bob")) == "ok"  # the 256th
    assert await store.room_create(entry("#more", 0, "create", "bob")) == "too_many_rooms"
    await make(store, "#other", "open")
    assert await store.room_append(entry("#other", 1, "join", "bob")) == "too_many_rooms"
    assert await store.room_append(entry("#last", 2, "leave", "bob")) == "ok"
    assert await store.room_append(entry("#other", 1, "join", "bob")) == "ok"  # a place freed


async def test_the_list_is_my_rooms_and_the_open_ones_sorted_and_paged(stores: StoreMaker) -> None:
    store = stores.new()
    await make(store, "#open1", "open")
    await make(store, "#secret", "invite", ("add", "bob"))
    await make(store, "#hidden", "invite")
    await make(store, "#open0", "open", ("join", "bob"))
    page = await store.rooms_page("bob", "", 10)
    assert [(r.room, r.kind, r.member, r.members, r.seq) for r in page] == [
        ("#open0", "open", True, 2, 1), ("#open1", "open", False, 1, 0), ("#secret", "invite", True, 2, 1)]
    assert page[0].head == entry("#open0", 1, "join", "bob").head
    assert [r.room for r in await store.rooms_page("bob", "#open0", 1)] == ["#open1"]
    assert [r.room for r in await store.rooms_page("carol", "", 10)] == ["#open0", "#open1"]


async def test_a_room_copy_keeps_its_room_in_the_queue(stores: StoreMaker) -> None:
    store = stores.new()
    now = time.time()
    room_copy = QueuedMessage("bob", "alice", "a" * 32, 1, b"frame", now, room="#ops")
    direct = QueuedMessage("bob", "alice", "b" * 32, 2, b"frame", now)
    assert await store.enqueue(room_copy) and await store.enqueue(direct)
    assert [(m.msg_id[0], m.room) for m in await store.fetch("bob")] == [("a", "#ops"), ("b", None)]


async def test_sqlite_keeps_one_body_per_room_message_and_drops_it_with_the_last_copy(tmp_path: Path) -> None:
    """A room message's copies share one stored frame, however they come (enqueue, requeue, a resend that
    is a duplicate), and it goes with the last copy, however that leaves (confirmed, set aside, expired)."""
    path = tmp_path / "bodies.db"
    clock = [1000.0]
    store = SqliteStore(path, clock=lambda: clock[0])
    frame = bytes(range(256)) * 200  # 51,200 bytes
    members = ["bob", "carol", "dave", "erin"]
    one, two = "a" * 32, "b" * 32

    other = frame[::-1]  # another message's frame, of the same size: a mixed-up body shows

    def copy(member: str, msg_id: str, ts: int = 1) -> QueuedMessage:
        return QueuedMessage(member, "alice", msg_id, ts, frame if msg_id == one else other, clock[0], room="#ops")

    def stored() -> tuple[int, int, int]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            bodies, body_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(length(frame)), 0) FROM room_bodies").fetchone()
            return bodies, body_bytes, db.execute("SELECT COALESCE(SUM(length(frame)), 0) FROM queue").fetchone()[0]

    try:
        assert all(await asyncio.gather(*(store.enqueue(copy(m, one)) for m in members[:2])))
        assert await store.requeue([copy(m, one) for m in members]) == 2  # two new, two already there
        assert await store.requeue([copy("bob", two, ts=2)]) == 1
        assert not await store.enqueue(copy("bob", two, ts=3))  # a resend: a duplicate, nothing new kept
        direct = QueuedMessage("bob", "alice", "c" * 32, 4, b"direct", clock[0])  # one-to-one: inline, as before
        assert await store.enqueue(direct)
        assert stored() == (2, 2 * len(frame), len(b"direct"))
        for member in members:
            assert [m.frame for m in await store.fetch(member)] == ([frame, other, b"direct"] if member == "bob" else [frame])
        assert await store.delete([(m, "alice", one) for m in members[:3]]) == 3
        assert stored()[0] == 2  # erin's copy still uses it
        assert await store.failed_hand_out("erin", "alice", one, 1)  # set aside: out of the queue
        assert stored()[:2] == (1, len(frame))
        clock[0] += store.queue_ttl + 1
        assert await store.expire() == 2
        assert stored() == (0, 0, 0)
    finally:
        await store.close()
