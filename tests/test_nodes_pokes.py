"""Pokes that do not read (issue 11): a node drops them, says so once each, and loses nothing.

Pub/sub content comes from Redis, which every node writes: another version, or a
buggy one, may publish what this node cannot read (securechat/server/pokes.py).
Real processes: ``redis-server``, ``securechat-server --redis`` nodes, raw
protocol clients; a garbled poke is published with a raw Redis connection, or
made by a proxy between a node and Redis that changes bytes on their way.
"""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from tests.support.acks import delivered_acks
from tests.support.nodes import Nodes
from tests.support.partition import partition_proxy
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import RedisProcess

pytestmark = pytest.mark.timeout(120)

DROPPED = "dropped a garbled poke"
AN_ID = msg_id(999).encode()

# Published on bob's channel: each is one warning on bob's node.
GARBLED_FOR_BOB = [
    b"M",  # no count line
    b"Mx\n",  # a count that is no number
    b"M2\n7 alice " + AN_ID + b" 1 3 \nabc",  # two announced, one there
    b"M1\n7 ../alice " + AN_ID + b" 1 3 \nabc",  # not a sender's name
    b"M1\n7 alice " + AN_ID + b" yesterday 3 \nabc",  # a time that is no number
    b"A\nqueued",  # an ack of one line
    b"R\nlater",  # a session number that is no number
    b"Pno-seq",  # a room's push without its seq
    # Frames whose length prefix lies (bob's client would read the next frames askew), one at the seq
    # that follows bob's position (the message given at once), and a push to a room that is no room.
    b"M1\n2 alice " + AN_ID + b" 1 8 \n" + struct.pack(">I", 100) + b"abcd",
    b"P#ops 5\n" + struct.pack(">I", 100) + b"{}",
    b"Pops 5\n" + struct.pack(">I", 2) + b"{}",
]
# Published on alice's channel: acks her client must never see, written into a frame unescaped.
GARBLED_FOR_ALICE = [
    b'A\nqueued\nx","status":"delivered\nbob\n',  # an id that is no id
    b"A\nlost\n" + AN_ID + b"\nbob\n",  # a status that is none
    b"A\nqueued\n" + AN_ID + b"\nBob Smith\n",  # a recipient that is no name
    # A room copy's ack whose room would be written into her frame as it is (and a first ack before it
    # that must not be written either: the poke is read whole before anything of it is acted on).
    b"A\nqueued\n" + AN_ID + b"\nbob\n\nqueued\n" + AN_ID + b'\nbob\n["#x\\",\\"status\\":\\"delivered","r"]',
    b"A\nqueued\n" + AN_ID + b"\nbob\n{}",  # a rid that is no rid
]
GARBLED_PRESENCE = [b"no fields", b"bob\n1\nx\nnode"]  # every node: one warning each


def send_frame(to: str, n: int) -> dict[str, object]:
    return {"type": "send", "to": to, "envelope": envelope("alice", to, msg_id(n))}


def subscribers(redis: RedisProcess) -> set[tuple[int, str]]:
    """The nodes' subscriber connections (id, name): a new id means one was dropped and made again."""
    got = redis.client().client_list(_type="pubsub")  # type: ignore[attr-defined]
    return {(int(c["id"]), str(c["name"])) for c in got if str(c["name"]).startswith("securechat-bus-")}


async def warned(node_lines: list[str], count: int, within: float = 10.0) -> list[str]:
    """The node's 'dropped' lines once there are ``count`` (bounded wait), then a moment for more."""
    deadline = time.monotonic() + within
    while sum(DROPPED in line for line in node_lines) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return [line for line in node_lines if DROPPED in line]


async def take(client: RawClient, kind: str, count: int) -> list[dict[str, object]]:
    return [await client.recv_type(kind, 10.0) for _ in range(count)]


async def confirm_all(client: RawClient, got: list[dict[str, object]]) -> None:
    for m in got:
        await client.send_frame({"type": "received", "id": m["envelope"]["id"], "from": "alice"})  # type: ignore[index]


async def test_garbled_pokes_are_dropped_once_each_and_delivery_goes_on_in_order(redis: RedisProcess, nodes: Nodes) -> None:
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    alice, bob, carol = await RawClient.connect(a.port), await RawClient.connect(b.port), await RawClient.connect(b.port)
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await client.login(name, identity_key(name))
    for n, to in enumerate(("bob", "carol")):  # the channels work before the garbage
        await alice.send_frame(send_frame(to, n))
    before = [await take(bob, "message", 1), await take(carol, "message", 1)]
    subscribed = await asyncio.to_thread(subscribers, redis)
    assert len(subscribed) == 2, subscribed
    admin = redis.client()
    for data in GARBLED_FOR_BOB:
        assert admin.publish("sc:u:{bob}", data) == 1  # type: ignore[attr-defined]
    for data in GARBLED_FOR_ALICE:
        assert admin.publish("sc:u:{alice}", data) == 1  # type: ignore[attr-defined]
    for data in GARBLED_PRESENCE:
        assert admin.publish("sc:presence", data) == 2  # type: ignore[attr-defined]
    for n in range(2, 12):  # interleaved: five for each
        await alice.send_frame(send_frame(("bob", "carol")[n % 2], n))
    got_bob, got_carol = await take(bob, "message", 5), await take(carol, "message", 5)
    for client, got in ((bob, before[0] + got_bob), (carol, before[1] + got_carol)):
        await confirm_all(client, got)
    acks = await delivered_acks(alice, 12)
    await bob.expect_silence(0.3)
    await carol.expect_silence(0.3)
    await alice.expect_silence(0.3)
    assert [m["envelope"]["id"] for m in got_bob] == [msg_id(n) for n in range(2, 12, 2)]  # type: ignore[index]
    assert [m["envelope"]["id"] for m in got_carol] == [msg_id(n) for n in range(3, 12, 2)]  # type: ignore[index]
    sent = {msg_id(n) for n in range(12)}
    assert all(x["id"] in sent and x["status"] in ("queued", "delivered") for x in acks), acks  # none of the garbage
    assert sorted(x["id"] for x in acks if x["status"] == "delivered") == sorted(sent), acks
    assert await asyncio.to_thread(subscribers, redis) == subscribed, "a subscriber was dropped and made again"
    lines_b = await warned(b.lines, len(GARBLED_FOR_BOB) + len(GARBLED_PRESENCE))
    lines_a = await warned(a.lines, len(GARBLED_FOR_ALICE) + len(GARBLED_PRESENCE))
    assert len(lines_b) == len(GARBLED_FOR_BOB) + len(GARBLED_PRESENCE), b.stderr[-3000:]
    assert len(lines_a) == len(GARBLED_FOR_ALICE) + len(GARBLED_PRESENCE), a.stderr[-3000:]
    assert sum("sc:u:{bob}" in line for line in lines_b) == len(GARBLED_FOR_BOB), lines_b
    for node in (a, b):
        assert "Traceback" not in node.stderr, node.stderr[-3000:]
    for client in (alice, bob, carol):
        await client.close()


async def test_a_message_and_an_ack_whose_pokes_came_garbled_are_read_from_the_store(redis: RedisProcess, nodes: Nodes) -> None:
    """The durable store is the truth: a dropped ``M`` poke's message reaches its recipient, a dropped
    ``A`` poke's ``delivered`` its sender, with no other poke or gap to make the node look."""
    async with partition_proxy(redis.port) as proxy:
        via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
        a = await asyncio.to_thread(nodes.start, redis_url=via_proxy)
        b = await asyncio.to_thread(nodes.start, redis_url=via_proxy)
        alice, bob = await RawClient.connect(a.port), await RawClient.connect(b.port)
        await alice.login("alice", identity_key("alice"))
        await bob.login("bob", identity_key("bob"))
        subscribed = await asyncio.to_thread(subscribers, redis)
        proxy.garble_once(b"M1\n", b"Mx\n")  # the poke of alice's message, on its way to bob's node
        await alice.send_frame(send_frame("bob", 1))
        got = await take(bob, "message", 1)
        assert proxy.garbled == 1
        assert got[0]["envelope"]["id"] == msg_id(1)  # type: ignore[index]
        proxy.garble_once(b"A\ndelivered\n", b"A\tdelivered\n")  # bob's confirmation's ack, on its way to alice's node
        await confirm_all(bob, got)
        ack = await alice.recv_type("ack", 10.0)
        assert proxy.garbled == 2
        assert (ack["id"], ack["status"]) == (msg_id(1), "delivered"), ack
        await alice.expect_silence(0.3)
        await bob.expect_silence(0.3)
        assert await asyncio.to_thread(subscribers, redis) == subscribed, "a subscriber was dropped and made again"
        assert sum(DROPPED in line for line in b.lines) == 1, b.stderr[-3000:]
        assert sum(DROPPED in line for line in a.lines) == 1, a.stderr[-3000:]
        await alice.close()
        await bob.close()


async def test_a_delivered_heard_twice_is_written_to_its_sender_once(redis: RedisProcess, nodes: Nodes) -> None:
    """An ack may reach a node twice: read from the store after a gap while its poke was on the way (a loaded
    CI run showed alice a second `delivered` so), or published twice. The sender is told once."""
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    alice, bob = await RawClient.connect(a.port), await RawClient.connect(b.port)
    await alice.login("alice", identity_key("alice"))
    await bob.login("bob", identity_key("bob"))
    await alice.send_frame(send_frame("bob", 1))
    await confirm_all(bob, await take(bob, "message", 1))
    first = await delivered_acks(alice, 1)
    again = b"A\ndelivered\n" + msg_id(1).encode() + b"\nbob\n"  # the confirm's own poke, as published
    assert redis.client().publish("sc:u:{alice}", again) == 1  # type: ignore[attr-defined]
    await alice.send_frame(send_frame("bob", 2))  # a later ack shows the node has read the copy by then
    await confirm_all(bob, await take(bob, "message", 1))
    then = await delivered_acks(alice, 1)
    await alice.expect_silence(0.3)
    told = [(x["id"], x["status"]) for x in first + then]  # a `queued` may come first: tests/support/acks.py
    assert [t for t in told if t[1] == "delivered"] == [(msg_id(1), "delivered"), (msg_id(2), "delivered")], told
    for client in (alice, bob):
        await client.close()
