"""Rooms and the live path on real nodes: a room message's copy for a member is stored in the member's queue,
while the sender's one-to-one messages to that member may go live (securechat/server/livepath.py). Before the
copy is stored, the sender's live sends to the member still unanswered are (``ClusterRooms.copy`` calls
``ClusterRouting.store_path``), so that a refusal heard later cannot put them behind the room message.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from tests.support.acks import acks_until, backlog_read
from tests.support.nodes import PROBE_ID, Nodes
from tests.support.partition import partition_proxy
from tests.support.rawclient import RawClient, envelope, identity_key, json_frame, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.roomserver import Room, change, send

pytestmark = pytest.mark.timeout(60)


async def alice_and_bob_in_a_room(a_port: int, b_port: int) -> tuple[RawClient, RawClient, Room]:
    """alice logged in on ``a_port``, bob on ``b_port``, both in alice's new room, both caught up (the probe
    delivered: bob's window is free)."""
    bob, alice = await RawClient.connect(b_port), await RawClient.connect(a_port)
    await bob.login("bob", identity_key("bob"))
    await alice.login("alice", identity_key("alice"))
    ops = Room()
    await change(alice, ops, "create")
    await change(alice, ops, "add", "bob")
    await backlog_read(alice, bob, PROBE_ID)
    return alice, bob, ops


def one_to_one(n: int) -> dict[str, Any]:
    return {"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(n))}


async def test_a_room_copy_goes_behind_the_one_to_one_live_sends_still_unanswered(redis: RedisProcess, nodes: Nodes) -> None:
    """alice (node A) sends bob (node B, window 1) one-to-one 1 and 2, then room message 3, then one-to-one 4.
    1 and 2 go live: bob's node hands him 1 and refuses 2, and its refusal (an ``X``) is held back on its way
    to Redis until the room's copy of 3 is in bob's queue. Were 1 and 2 stored only when the refusal comes,
    the queue would hold 3 before 2 and bob would get 1, 3, 2, 4; they are stored before the copy, so he gets
    1, 2, 3, 4, each once."""
    async with partition_proxy(redis.port) as proxy:
        a = await asyncio.to_thread(nodes.start)
        b_url = f"redis://127.0.0.1:{proxy.port}/0"
        b = await asyncio.to_thread(functools.partial(nodes.start, "--window", "1", redis_url=b_url))
        alice, bob, ops = await alice_and_bob_in_a_room(a.port, b.port)

        proxy.hold_from(b"Xbob ")  # the refusal of alice's epoch, and all node B sends after it
        await alice.send_raw(json_frame(one_to_one(1)) + json_frame(one_to_one(2)))
        first = await bob.recv_type("message")
        assert first["envelope"]["id"] == msg_id(1), first
        await asyncio.wait_for(proxy.holding.wait(), 10.0)  # 2 refused: alice's node has not heard it yet
        await send(alice, ops, 3)
        sent = await alice.recv_type("room_sent")  # the copy for bob is in his queue
        assert sent["members"] == ["bob"], sent
        assert proxy.release()
        await alice.send_frame(one_to_one(4))

        got = [("", msg_id(1))]
        await bob.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        async with asyncio.timeout(30):
            while len(set(got)) < 4:
                message = await bob.recv_type("message", 15.0)
                got.append((message.get("room", ""), message["envelope"]["id"]))
                await bob.send_frame({"type": "received", "id": got[-1][1], "from": "alice"})
        assert got == [("", msg_id(1)), ("", msg_id(2)), ("#ops", msg_id(3)), ("", msg_id(4))], got
        await bob.expect_silence(0.3, ignore=("presence", "ack", "room_update"))  # and none twice
        # alice hears each delivered (a `queued` first for those stored), the room message's naming bob.
        kept = await acks_until(alice, lambda kept: len({x["id"] for x in kept if x["status"] == "delivered"}) >= 4)
        delivered = sorted((x["id"], x["to"], x.get("member")) for x in kept if x["status"] == "delivered")
        assert delivered == [(msg_id(1), "bob", None), (msg_id(2), "bob", None), (msg_id(3), "#ops", "bob"),
                             (msg_id(4), "bob", None)], kept
        for client in (alice, bob):
            await client.close()


async def test_a_room_copy_goes_behind_a_live_send_held_by_a_session_that_then_ends(nodes: Nodes) -> None:
    """bob (node B, window 1) holds alice's one-to-one 1, taken live and unconfirmed, when her room message 2's
    copy is stored in his queue; then his session ends, and his node refuses the epoch of 1 (an ``X``). Were 1
    stored only then, the queue would hold 2 before 1 and bob's next session would get 2, 1; it is stored
    before the copy, so he gets 1, 2."""
    a = await asyncio.to_thread(nodes.start)
    b = await asyncio.to_thread(nodes.start, "--window", "1")
    alice, bob, ops = await alice_and_bob_in_a_room(a.port, b.port)

    await alice.send_frame(one_to_one(1))
    assert (await bob.recv_type("message"))["envelope"]["id"] == msg_id(1)  # live, held unconfirmed
    await send(alice, ops, 2)
    sent = await alice.recv_type("room_sent")  # the copy for bob is in his queue
    assert sent["members"] == ["bob"], sent
    await bob.close()

    bob = await RawClient.connect(b.port)
    await bob.login("bob", identity_key("bob"))
    got: list[tuple[str, str]] = []
    async with asyncio.timeout(30):
        while len(set(got)) < 2:
            message = await bob.recv_type("message", 15.0)
            got.append((message.get("room", ""), message["envelope"]["id"]))
            await bob.send_frame({"type": "received", "id": got[-1][1], "from": "alice"})
    assert got == [("", msg_id(1)), ("#ops", msg_id(2))], got
    await bob.expect_silence(0.3, ignore=("presence", "ack", "room_update"))  # and none twice
    for client in (alice, bob):
        await client.close()
