"""Rooms on two server nodes that share one real redis-server (issues 10 and 11).

Both nodes are real ChatServers in this process, with the cluster routing, on
the same Redis and key prefix; raw clients log in on one node or the other.
What is checked is what only several nodes can get wrong: appends racing on
two nodes (one wins, the log does not fork), a node's cached room state after
another node changed the room, pushes and per-member acks across nodes. The
real-process scenario with three nodes is in tests/test_rooms_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from securechat.server import ChatServer
from securechat.server.sessionbox import ROOMS_TOLD, SessionBox, push_body
from tests.support.acks import acks_until, settled
from tests.support.partition import partition_proxy
from tests.support.rawclient import RawClient, clients, msg_id, raw_frame, running_server
from tests.support.redisproc import RedisProcess
from tests.support.roomserver import Room, answer_to, change, next_of, send
from tests.support.sentinels import ask, replicate_through

pytestmark = pytest.mark.timeout(120)

_PREFIXES = itertools.count(1)


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, redis: RedisProcess) -> AsyncIterator[tuple[ChatServer, ChatServer]]:
    options: dict[str, Any] = {"redis_url": redis.url, "redis_prefix": f"rooms-nodes-{next(_PREFIXES)}:"}
    async with running_server(tmp_path / "a.db", **options) as a, running_server(tmp_path / "b.db", **options) as b:
        yield a, b


@contextlib.asynccontextmanager
async def subscriber_kept_away(redis: RedisProcess, node: ChatServer) -> AsyncIterator[Any]:
    """Kill ``node``'s subscriber and keep it away until the block ends: Redis takes no new connection
    (its reconnects are refused, "max number of clients reached"); the connections in use stay up."""
    import redis as redis_py

    admin = redis_py.Redis(host="127.0.0.1", port=redis.port, socket_timeout=5, single_connection_client=True)
    bus = f"securechat-bus-{node._routing.node}"  # type: ignore[attr-defined]
    clients_now = int((await asyncio.to_thread(admin.info, "clients"))["connected_clients"])
    await asyncio.to_thread(admin.config_set, "maxclients", clients_now - 1)
    try:
        ids = [c["id"] for c in await asyncio.to_thread(admin.client_list) if c["name"] == bus]
        assert len(ids) == 1, ids
        assert await asyncio.to_thread(admin.client_kill_filter, _id=ids[0]) == 1
        yield admin
    finally:
        await asyncio.to_thread(admin.config_set, "maxclients", 10_000)


async def until_confirmed(admin: Any, node: ChatServer, name: str) -> None:
    """Until ``name`` has confirmed everything in its queue (its in-flight hash in Redis is empty)."""
    qi = f"{node.config.redis_prefix}qi:{{{name}}}"
    while await asyncio.to_thread(admin.hlen, qi):
        await asyncio.sleep(0.05)


async def log_of(client: RawClient, room: str) -> list[dict[str, Any]]:
    await client.send_frame({"type": "room_log", "room": room, "rid": "log"})
    return list((await answer_to(client, "log"))["entries"])


async def test_appends_racing_on_two_nodes_one_wins_and_the_log_does_not_fork(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    async with two_nodes(tmp_path, redis_server) as (a, b), clients(a.port, "alice", "carol", "dave", "erin", "frank") as (
        alice, *_
    ), clients(b.port, "bob") as (bob,):
        ops = Room()
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        await change(alice, ops, "admin", "bob")
        await bob.send_frame({"type": "room_log", "room": "#ops", "rid": "warm"})
        await answer_to(bob, "warm")  # node B caches the room too
        for round_, (one, two) in enumerate((("carol", "dave"), ("erin", "frank"))):  # never a member already
            first, second = ops.entry("add", "alice", one), ops.entry("add", "bob", two)  # both for the next seq
            await asyncio.gather(
                alice.send_frame({"type": "room_append", "entry": first.to_json(), "rid": f"a{round_}"}),
                bob.send_frame({"type": "room_append", "entry": second.to_json(), "rid": f"b{round_}"}),
            )
            answers = {"alice": await answer_to(alice, f"a{round_}"), "bob": await answer_to(bob, f"b{round_}")}
            outcome = sorted(x["type"] if x["type"] == "room_update" else x["code"] for x in answers.values())
            assert outcome == ["room_update", "stale_state"], answers
            won = first if answers["alice"]["type"] == "room_update" else second
            ops.accept(won)
        # One log, the same through either node: each seq once, each entry's prev the head before it.
        via_a, via_b = await log_of(alice, "#ops"), await log_of(bob, "#ops")
        assert via_a == via_b == [e.to_json() for e in ops.chain.entries]
        assert [e["seq"] for e in via_a] == list(range(5))


async def test_a_node_checks_its_cached_state_before_it_routes(tmp_path: Path, redis_server: RedisProcess) -> None:
    """carol on node B sends under the state before dave's removal on node A: dave must not get it."""
    async with two_nodes(tmp_path, redis_server) as (a, b), clients(a.port, "alice", "dave") as (
        alice, dave
    ), clients(b.port, "carol") as (carol,):
        ops = Room()
        await change(alice, ops, "create")
        await change(alice, ops, "add", "carol")
        await change(alice, ops, "add", "dave")
        await next_of(carol, "room_update")
        await send(carol, ops, 1)  # node B caches the room at seq 2
        assert (await carol.recv_type("room_sent"))["members"] == ["alice", "dave"]
        for member in (alice, dave):
            assert (await member.recv_type("message"))["envelope"]["id"] == msg_id(1)
        old = Room()
        old.chain.entries, old.chain.state = list(ops.chain.entries), ops.state
        await change(alice, ops, "remove", "dave")  # on node A
        await send(carol, old, 2)  # carol has not seen the removal yet
        sent = await carol.recv_type("room_sent")
        assert sent["members"] == ["alice"] and sent["seq"] == 3, sent
        assert (await alice.recv_type("message"))["envelope"]["id"] == msg_id(2)
        await dave.expect_silence(0.5, ignore=("presence", "room_update", "ack"))
        # And a message under the newest state, which node B never saw appended, is taken (not stale_state).
        await send(carol, ops, 3)
        assert (await carol.recv_type("room_sent"))["members"] == ["alice"]


async def test_pushes_and_per_member_acks_cross_nodes(tmp_path: Path, redis_server: RedisProcess) -> None:
    async with two_nodes(tmp_path, redis_server) as (a, b), clients(a.port, "alice", "carol") as (
        alice, carol
    ), clients(b.port, "bob", "dave") as (bob, dave):
        ops = Room()
        await change(alice, ops, "create")
        answer = await change(alice, ops, "add", "bob")
        push = await next_of(bob, "room_update")  # through node B
        assert push["entries"] == answer["entries"] and "rid" not in push
        await change(alice, ops, "add", "carol")
        await change(alice, ops, "add", "dave")
        await dave.close()  # offline: stored for dave, `queued` for alice
        await send(alice, ops, 1)
        sent = await alice.recv_type("room_sent")
        assert sent["members"] == ["bob", "carol", "dave"], sent
        for member in (bob, carol):
            message = await member.recv_type("message")
            assert (message["room"], message["envelope"]["id"]) == ("#ops", msg_id(1))
            await member.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        # bob's and carol's copies may be `queued` before `delivered` (tests/support/acks.py).
        got = settled(await acks_until(alice, lambda kept: sum(x["status"] == "delivered" for x in kept) >= 2
                                       and len({x["member"] for x in kept}) >= 3))
        acks = {(x["member"], x["status"], x["to"], x.get("rid")) for x in got}
        assert acks == {("bob", "delivered", "#ops", msg_id(1)), ("carol", "delivered", "#ops", msg_id(1)),
                        ("dave", "queued", "#ops", msg_id(1))}, acks
        async with clients(b.port, "dave") as (dave2,):  # back on node B: from its queue, then `delivered`
            assert (await dave2.recv_type("message"))["room"] == "#ops"
            await dave2.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
            ack = await alice.recv_type("ack")
            assert (ack["member"], ack["status"], ack["to"]) == ("dave", "delivered", "#ops")
        # A removal on node A reaches the removed member on node B.
        await change(alice, ops, "remove", "bob")
        removed = await next_of(bob, "room_update")
        assert removed["entries"][0]["op"] == "remove" and removed["entries"][0]["name"] == "bob"
        await send(alice, ops, 2)
        assert (await alice.recv_type("room_sent"))["members"] == ["carol", "dave"]
        await bob.expect_silence(0.5, ignore=("presence", "room_update"))


async def test_room_acks_lost_to_a_pubsub_gap_are_recovered_naming_the_room_and_member(
    tmp_path: Path, make_redis: Callable[..., RedisProcess]
) -> None:
    """The sender's node loses its subscriber, and cannot get it back, while bob confirms: the `delivered`
    acks published meanwhile are lost; the node recovers them from the store after the gap, each naming the
    room and the member."""
    n = 10
    redis = make_redis()
    async with two_nodes(tmp_path, redis) as (a, b), clients(a.port, "alice") as (alice,), clients(
        b.port, "bob"
    ) as (bob,):
        ops = Room()
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        while not b.caught_up("bob"):  # bob's backlog read: each copy goes to him at once, acked only when confirmed
            await asyncio.sleep(0.02)
        for i in range(1, n + 1):
            await send(alice, ops, i)
            assert (await alice.recv_type("room_sent"))["members"] == ["bob"]
        got = [await bob.recv_type("message") for _ in range(n)]
        async with subscriber_kept_away(redis, a) as admin:
            for message in got:
                await bob.send_frame({"type": "received", "id": message["envelope"]["id"], "from": "alice"})
            await until_confirmed(admin, a, "bob")  # each `delivered` was published into the gap
            await alice.expect_silence(0.3, ignore=("presence",))  # none of them reached alice
        acks = [await alice.recv_type("ack", timeout=20) for _ in range(n)]
        assert sorted((x["id"], x["to"], x["member"], x["status"], x["rid"]) for x in acks) == [
            (msg_id(i), "#ops", "bob", "delivered", msg_id(i)) for i in range(1, n + 1)]


async def test_a_room_copy_acked_queued_at_once_gets_its_delivered_across_a_pubsub_gap(
    tmp_path: Path, make_redis: Callable[..., RedisProcess]
) -> None:
    """bob is offline when alice sends: his copy is acked `queued` at once. He comes back and confirms while
    alice's node has no subscriber: the `delivered` published then is lost, and alice's node must still
    recover it from the store after the gap, naming the room and the member (as a one-to-one send's is)."""
    redis = make_redis()
    async with two_nodes(tmp_path, redis) as (a, b), clients(a.port, "alice") as (alice,):
        ops = Room()
        async with clients(b.port, "bob"):
            await change(alice, ops, "create")
            await change(alice, ops, "add", "bob")
        await send(alice, ops, 1)
        assert (await alice.recv_type("room_sent"))["members"] == ["bob"]
        ack = await alice.recv_type("ack")
        assert (ack["to"], ack["member"], ack["status"]) == ("#ops", "bob", "queued"), ack
        async with subscriber_kept_away(redis, a) as admin, clients(b.port, "bob") as (bob,):
            assert (await bob.recv_type("message"))["envelope"]["id"] == msg_id(1)
            await bob.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
            await until_confirmed(admin, a, "bob")  # its `delivered` was published into the gap
            await alice.expect_silence(0.3, ignore=("presence",))
        ack = await alice.recv_type("ack", timeout=20)
        assert (ack["id"], ack["to"], ack["member"], ack["status"], ack["rid"]) == (
            msg_id(1), "#ops", "bob", "delivered", msg_id(1))


async def test_room_changes_pushed_during_a_pubsub_gap_reach_the_members_after_it(
    tmp_path: Path, make_redis: Callable[..., RedisProcess]
) -> None:
    """Node B's subscriber is killed, and kept away, before alice (node A) adds dave and removes bob: both
    pushes are published into the gap. Once B is subscribed again, the log being the truth, bob (a member
    told up to seq 1) is sent seq 2 and 3, and dave (never told of the room) the entries that hold his add."""
    redis = make_redis()
    async with two_nodes(tmp_path, redis) as (a, b), clients(a.port, "alice") as (alice,), clients(
        b.port, "bob", "dave"
    ) as (bob, dave):
        ops = Room()
        await change(alice, ops, "create")
        await change(alice, ops, "add", "bob")
        assert [e["seq"] for e in (await next_of(bob, "room_update"))["entries"]] == [1]  # pushed through node B
        import redis as redis_py

        admin = redis_py.Redis(host="127.0.0.1", port=redis.port, socket_timeout=5, single_connection_client=True)
        bus = f"securechat-bus-{b._routing.node}"  # type: ignore[attr-defined]
        clients_now = int((await asyncio.to_thread(admin.info, "clients"))["connected_clients"])
        await asyncio.to_thread(admin.config_set, "maxclients", clients_now - 1)  # B's subscriber stays away
        try:
            ids = [c["id"] for c in await asyncio.to_thread(admin.client_list) if c["name"] == bus]
            assert len(ids) == 1, ids
            assert await asyncio.to_thread(admin.client_kill_filter, _id=ids[0]) == 1
            await change(alice, ops, "add", "dave")  # seq 2
            await change(alice, ops, "remove", "bob")  # seq 3
            for member in (bob, dave):
                await member.expect_silence(0.3, ignore=("presence",))  # the pushes went nowhere
        finally:
            await asyncio.to_thread(admin.config_set, "maxclients", 10_000)
        told_bob = await next_of(bob, "room_update")
        assert [e["seq"] for e in told_bob["entries"]] == [2, 3] and "rid" not in told_bob, told_bob
        assert told_bob["entries"] == [e.to_json() for e in ops.chain.entries[2:]]
        assert {"alice", "bob", "dave"} <= set(told_bob["keys"]), told_bob["keys"]
        told_dave = await next_of(dave, "room_update")
        assert told_dave["entries"] == [e.to_json() for e in ops.chain.entries], told_dave  # holds his add
        # Nothing is sent twice: a later change reaches each as one push, after what the catch-up sent.
        await change(alice, ops, "admin", "dave")
        assert [e["seq"] for e in (await next_of(dave, "room_update"))["entries"]] == [4]
        await bob.expect_silence(0.3, ignore=("presence",))  # removed: no longer told


def test_what_a_session_was_told_of_rooms_is_bounded_the_oldest_forgotten_first() -> None:
    """A session that reads room after room (open rooms it joins and leaves) holds at most ROOMS_TOLD of them."""
    box = SessionBox("alice", 8, 1 << 20)
    for i in range(ROOMS_TOLD + 10):
        box.told_room(f"#r{i}", i)
    box.told_room("#r20", 5)  # never backwards
    assert len(box.rooms_told) == ROOMS_TOLD
    assert "#r9" not in box.rooms_told and box.rooms_told["#r10"] == 10 and box.rooms_told["#r20"] == 20
    frame = raw_frame(b"FRAME\nwith a newline")
    assert box.pushed(push_body("#r3", 7, frame)) == frame
    assert box.rooms_told["#r3"] == 7 and len(box.rooms_told) == ROOMS_TOLD  # #r10 made room for it
    assert "#r10" not in box.rooms_told


async def test_with_redis_replicas_1_a_room_entry_is_answered_only_once_a_replica_has_it(
    tmp_path: Path, make_redis: Callable[..., RedisProcess]
) -> None:
    """The replica replicates through a proxy the test cuts: the primary stores alice's `add` of bob and the
    replica never sees it, nor the creation of #dev. With ``--redis-replicas 1`` the node WAITs for the replica
    and refuses both `internal`; without the WAIT it answered `room_update` and the failover to the replica
    lost the entry. Promoted, the replica holds every entry that was answered."""
    import redis as redis_py

    primary, replica = make_redis(), make_redis()
    options: dict[str, Any] = {"redis_url": primary.url, "redis_replicas": 1, "redis_prefix": "replicated:"}
    async with partition_proxy(primary.port) as link:
        await replicate_through(link.port, primary, replica)
        async with running_server(tmp_path / "a.db", **options) as a, clients(a.port, "alice", "bob") as (alice, _):
            ops = Room()
            await change(alice, ops, "create")  # answered once the replica has it
            link.cut()  # the replica hears nothing more from the primary
            added = await change(alice, ops, "add", "bob", refusal=None)
            dev = Room("#dev")
            created = await change(alice, dev, "create", rid="r2", refusal=None)
    ask(replica.port, "REPLICAOF", "NO", "ONE")  # the failover: the replica is the primary now
    promoted = redis_py.Redis(host="127.0.0.1", port=replica.port, socket_timeout=5)
    for room, answered in ((ops, 1), (dev, 0)):
        stored = await asyncio.to_thread(promoted.lrange, f"replicated:rlog:{{{room.chain.room}}}", 0, -1)
        assert len(stored) == len(room.chain.entries) == answered, f"{room.chain.room}: answered and lost"
    assert [(x["type"], x.get("code")) for x in (added, created)] == [("error", "internal")] * 2, (added, created)
