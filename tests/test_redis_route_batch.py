"""The sends of one loop turn to one recipient go to Redis as one ``enqueue`` script and one publish (issue 11's
node CPU), and each still gets exactly the answer it would have had alone, in order: on a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import pytest

from securechat.server.pokes import acks, new_messages
from securechat.server.redisbus import RedisBus
from securechat.server.redisstore import ALREADY_CONFIRMED, ALREADY_QUEUED, OVER_CAPS, STORED, RedisStore
from securechat.server.resp import RedisAddress, RedisLink
from securechat.server.store import QueuedMessage
from tests.support.rawclient import raw_frame
from tests.support.redisproc import RedisProcess

pytestmark = pytest.mark.timeout(30)

_PREFIXES = itertools.count(1)
QUEUE_CAP = 2  # CAPS: the recipient's queue


def send(n: int, sender: str = "alice", recipient: str = "bob") -> QueuedMessage:
    return QueuedMessage(recipient, sender, f"{n:032x}", n, raw_frame(b"frame %d" % n), time.time())


async def evalsha_calls(link: RedisLink) -> int:
    info = (await link.call("INFO", "commandstats")).decode()
    line = next((x for x in info.splitlines() if x.startswith("cmdstat_evalsha:")), "calls=0,")
    return int(line.split("calls=", 1)[1].split(",", 1)[0])


async def test_one_turns_sends_are_one_script_and_each_gets_its_own_answer_in_order(redis_server: RedisProcess) -> None:
    address = RedisAddress.from_url(redis_server.url)
    store = RedisStore(address, prefix=f"tb{next(_PREFIXES)}:", queue_limit=4, sender_share=1)
    probe = RedisLink(address)
    try:
        # m5 was stored and confirmed a moment ago: a resend of it is answered from the dedupe window.
        assert (await store.route(send(5), "r5"))[0] == STORED
        assert await store.confirm("bob", [("alice", send(5).msg_id, False, "r5", None)]) == 1
        before = await evalsha_calls(probe)

        # One loop turn, nothing awaited in between: all of bob's go in one EVALSHA, dave's in its own.
        answers = [
            store.route(send(1), "r1"),
            store.route(send(2), "r2"),
            store.route(send(1), "r1"),  # a duplicate of the first, in the same batch
            store.route(send(5), "r5"),  # confirmed within the dedupe window
            store.route(send(3, sender="carol"), "r3"),
            store.route(send(4), "r4"),  # the queue's fourth: its limit
            store.route(send(6), "r6"),  # one too many: queue_full
            store.route(send(7), None),  # and so is the next, however good
        ]
        other = store.route(send(8, recipient="dave"), "r8")
        got = [await a for a in answers]
        assert await other == [STORED, 1, 0]
        assert await evalsha_calls(probe) - before == 2  # bob's batch and dave's

        assert got == [
            [STORED, 2, 0],  # seq 1 was m5's
            [STORED, 3, 0],
            [ALREADY_QUEUED, 0, 0],
            [ALREADY_CONFIRMED, 0, 0],
            [STORED, 4, 0],
            [STORED, 5, 0],
            [OVER_CAPS, QUEUE_CAP, 0],
            [OVER_CAPS, QUEUE_CAP, 0],
        ]
        queued = await store.fetch("bob")
        assert [(m.sender, int(m.msg_id, 16), m.seq) for m in queued] == [
            ("alice", 1, 2), ("alice", 2, 3), ("carol", 3, 4), ("alice", 4, 5),
        ]  # fmt: skip
        assert await store.queue_size("bob") == (4, sum(len(send(n).frame) for n in (1, 2, 3, 4)))
    finally:
        await store.close()
        await probe.close()


async def test_a_batch_is_written_at_its_bound_and_the_rest_follow_in_order(redis_server: RedisProcess) -> None:
    from securechat.server.rediscommands import BATCH_MAX

    address = RedisAddress.from_url(redis_server.url)
    store = RedisStore(address, prefix=f"tb{next(_PREFIXES)}:")
    probe = RedisLink(address)
    try:
        await store.route(send(0), None)
        before = await evalsha_calls(probe)
        count = 2 * BATCH_MAX + 3
        got = [await a for a in [store.route(send(n), None) for n in range(1, count + 1)]]
        assert [g[:2] for g in got] == [[STORED, n + 1] for n in range(1, count + 1)]
        assert await evalsha_calls(probe) - before == 3
    finally:
        await store.close()
        await probe.close()


async def test_one_turns_sends_are_one_m_poke_and_a_confirm_tells_each_sender_once(redis_server: RedisProcess) -> None:
    """What the recipient's and the senders' nodes hear (securechat/server/pokes.py): one ``M`` carrying a loop
    turn's stored sends in queue order (then one ``G`` for the duplicate), one ``A`` per sender of a confirm."""
    address = RedisAddress.from_url(redis_server.url)
    store = RedisStore(address, prefix=f"tb{next(_PREFIXES)}:")
    heard: list[tuple[bytes, bytes]] = []
    changed = asyncio.Event()

    def on_message(channel: bytes, data: bytes) -> None:
        heard.append((channel, data))
        changed.set()

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(10):
            while len(heard) < count:
                changed.clear()
                await changed.wait()

    bus = RedisBus(address, on_message, lambda: None)
    await bus.start()
    try:
        for name in ("bob", "alice", "carol"):
            await bus.subscribe(store.channel(name))
        room_copy = dataclasses.replace(send(3), room="#ops")
        answers = [
            store.route(send(1), "r1"),
            store.route(send(2, sender="carol"), None),
            store.route(send(1), "r1"),  # a duplicate: a `G`, after the `M`
            store.route(room_copy, "r 3\nx"),  # a rid with a space and a newline, and a room
        ]
        assert [await a for a in answers] == [[STORED, 1, 1], [STORED, 2, 1], [ALREADY_QUEUED, 0, 1], [STORED, 3, 1]]
        await wait_for(2)
        bob = store.channel("bob")
        assert [(channel, data[:1]) for channel, data in heard] == [(bob, b"M"), (bob, b"G")]
        assert new_messages(heard[0][1]) == [
            (1, b"alice", send(1).msg_id.encode(), b"1", b'"r1"', send(1).frame),
            (2, b"carol", send(2).msg_id.encode(), b"2", b"", send(2).frame),
            (3, b"alice", send(3).msg_id.encode(), b"3", b'["#ops", "r 3\\nx"]', send(3).frame),
        ]
        heard.clear()
        done = [("alice", send(1).msg_id, True, "r1", None), ("carol", send(2).msg_id, True, None, None)]
        assert await store.confirm("bob", [*done, ("alice", send(3).msg_id, True, "r 3\nx", "#ops")]) == 3
        await store.publish(store.channel("carol"), b"Z")  # after the confirm's pokes: all of them came before
        await wait_for(3)
        assert heard[-1] == (store.channel("carol"), b"Z")
        pokes = {channel: acks(data) for channel, data in heard[:-1]}
        assert len(heard) == 3 and pokes == {
            store.channel("alice"): [
                (b"delivered", send(1).msg_id.encode(), b"bob", b'"r1"'),
                (b"delivered", send(3).msg_id.encode(), b"bob", b'["#ops", "r 3\\nx"]'),
            ],
            store.channel("carol"): [(b"delivered", send(2).msg_id.encode(), b"bob", b"")],
        }
    finally:
        await bus.close()
        await store.close()
