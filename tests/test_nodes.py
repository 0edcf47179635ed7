"""Several server nodes on one Redis, healthy or with their pub/sub cut (issue 11, scenarios 1, 2, 7, 8).

Real processes throughout: ``redis-server`` started by the test (append-only
file on), ``securechat-server --redis`` nodes on free ports, ``securechat-client
--json`` processes or raw protocol clients. The kill -9 scenarios are in
tests/test_nodes_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from tests.support.acks import settled
from tests.support.nodes import (
    Nodes,
    alice_behind_a_proxy,
    kept_count,
    login_outcome,
    queued_count,
    queued_counts_once_settled,
    stored_count,
    stream_while_killing,
)
from tests.support.ports import restartable_port
from tests.support.rawclient import RawClient, envelope, identity_key, json_frame, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.streams import LONG, Spawn, acked_ids, check_exactly_once, shown, texts

pytestmark = pytest.mark.timeout(600)


# --- 1. across nodes, both ways -----------------------------------------------------------------


@pytest.mark.slow
def test_1000_each_way_across_two_nodes_once_in_order_acks_delivered(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    n = 1000
    started = time.monotonic()
    a, b = nodes.start_many(2)
    bob = spawn_process("bob", b.port)
    bob.wait_event("ready")
    alice = spawn_process("alice", a.port)
    alice.wait_event("ready")
    to_bob, to_alice = texts(n, "ab"), texts(n, "ba")
    alice.send_in_background("bob", to_bob)
    bob.send_in_background("alice", to_alice)
    bob.count_until("message", n, LONG)
    alice.count_until("message", n, LONG)
    for who in (alice, bob):
        who.wait_until(lambda events, who=who: len(acked_ids(who, status="delivered")) == n, LONG,
                       what=f"{n} delivered acks")
    check_exactly_once(shown(bob, "alice"), to_bob, "alice on A -> bob on B")
    check_exactly_once(shown(alice, "bob"), to_alice, "bob on B -> alice on A")
    for who in (alice, bob):  # both online: each message `delivered` once (a `queued` may come first: acks.py)
        statuses = {e["status"] for e in settled(who.of_kind("ack"))}
        assert statuses == {"delivered"}, f"{who.name}: both online, yet acks were {statuses}"
    assert alice.finish() == 0, alice.stderr_tail()
    assert bob.finish() == 0, bob.stderr_tail()
    # Both online: the live path wrote nothing, or stored once each what it could not hand out (a full window
    # under load); every confirmed message left its queue.
    assert stored_count(redis, "bob") <= n and stored_count(redis, "alice") <= n
    assert (queued_count(redis, "bob"), queued_count(redis, "alice")) == (0, 0)
    print(f"{n} each way across two nodes in {time.monotonic() - started:.1f} s")


async def test_a_burst_to_a_name_this_node_never_looked_up_reaches_it_in_order(redis: RedisProcess, nodes: Nodes) -> None:
    """alice's node has never seen bob: her first send waits for the directory's answer from Redis.
    The sends behind it, in the same and later writes, wait behind it in her session's pipeline
    (transport.py awaits a handler's coroutine before the next request), so none is stored ahead of it."""
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    bob, alice = await RawClient.connect(b.port), await RawClient.connect(a.port)
    await bob.login("bob", identity_key("bob"))
    await alice.login("alice", identity_key("alice"))
    n, each = 200, 20
    for start in range(0, n, each):
        await alice.send_raw(b"".join(json_frame(send_frame("bob", k)) for k in range(start, start + each)))
        # A lookup answered from Redis paces the writes: the next one comes after the directory's answer
        # about bob (asked first) came back, while a send that waits for it may not have gone on yet.
        await alice.send_frame({"type": "lookup", "name": "alice", "rid": str(start)})
        await alice.recv_type("key", 15.0)
    got: list[str] = []
    while len(got) < n:
        got.append((await bob.recv_type("message", 15.0))["envelope"]["id"])
        await bob.send_frame({"type": "received", "id": got[-1], "from": "alice"})
    assert [k for k in range(n) if got[k] != msg_id(k)] == [], got
    # Stored at most once each (the first, to a name not looked up yet, and what followed it until it was delivered).
    assert await asyncio.to_thread(stored_count, redis, "bob") == await asyncio.to_thread(kept_count, redis, "bob")
    for c in (alice, bob):
        await c.close()


# --- 2. first come, across nodes ----------------------------------------------------------------


async def test_a_name_is_first_come_across_nodes_even_when_two_race(nodes: Nodes) -> None:
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    assert await login_outcome(a.port, "carol", "carol") == "welcome"
    assert await login_outcome(b.port, "carol", "mallory") == "name_taken"
    assert await login_outcome(b.port, "carol", "carol") == "welcome"
    # Racing: the same new name, two keys, one login on each node at the same time.
    names = [f"race{i}" for i in range(20)]
    await asyncio.to_thread(lambda: [identity_key(f"{n}-{side}") for n in names for side in "ab"])
    outcomes = await asyncio.gather(
        *(login_outcome(port, name, f"{name}-{side}") for name in names for side, port in (("a", a.port), ("b", b.port)))
    )
    pairs = [sorted(outcomes[i : i + 2]) for i in range(0, len(outcomes), 2)]
    assert pairs == [["name_taken", "welcome"]] * len(names), pairs


# --- 7. the pub/sub connections cut -------------------------------------------------------------


@pytest.mark.slow
def test_pubsub_connections_killed_3_times_during_2000_catch_up_delivers_all_once(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    n = 2000
    (a, b), _, bob, sent, killed = stream_while_killing(redis, nodes, spawn_process, n, "pubsub")
    assert all(k >= 2 for k in killed), f"CLIENT KILL TYPE pubsub killed {killed}: each node has a subscriber"
    check_exactly_once(shown(bob, "alice"), sent, f"pub/sub connections killed {len(killed)} times")
    assert queued_counts_once_settled(redis, "bob") == [0] and stored_count(redis, "bob") == kept_count(redis, "bob")
    reconnected = [node.stderr.count("subscriber reconnected") for node in (a, b)]
    assert min(reconnected) >= len(killed), f"subscriber reconnects per node: {reconnected}"


async def until_confirmed_in_redis(redis: RedisProcess, name: str, within: float = 10.0) -> None:
    """Wait (bounded) until ``name``'s queue is empty: the confirm script ran and published its ack."""
    async with asyncio.timeout(within):
        while await asyncio.to_thread(queued_count, redis, name):
            await asyncio.sleep(0.02)


async def test_a_delivered_ack_is_not_lost_across_two_pubsub_gaps_after_a_recovered_queued(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """Gap 1 ends before bob confirms: alice's node recovers `queued` from the store. Gap 2 swallows the
    `delivered` that bob's confirmation published: alice's node must still ask for it after that gap.
    Then the same after a `queued` that came live (bob's session ended before he confirmed), and after
    a `queued` at once (bob offline when it was sent)."""
    async with alice_behind_a_proxy(redis, nodes, "--no-live-path") as (proxy, b, alice, bob):
        await alice.send_frame(send_frame("bob", 1))
        assert (await bob.recv_type("message", 10.0))["envelope"]["id"] == msg_id(1)  # handed out, unconfirmed
        proxy.cut()  # gap 1: node A's subscriber (and link) cut, then reset by the heal
        await proxy.heal()
        first = await alice.recv_type("ack", 15.0)  # recovered from the store: still queued
        proxy.cut()  # gap 2: bob confirms meanwhile; the `delivered` published for alice is lost
        await bob.send_frame({"type": "received", "id": msg_id(1), "from": "alice"})
        await until_confirmed_in_redis(redis, "bob")
        await proxy.heal()
        second = await alice.recv_type("ack", 15.0)
        # The same with a `queued` that came live: bob's session ends before he confirms message 2.
        await alice.send_frame(send_frame("bob", 2))
        assert (await bob.recv_type("message", 10.0))["envelope"]["id"] == msg_id(2)
        await bob.close()
        third = await alice.recv_type("ack", 15.0)
        proxy.cut()
        bob = await RawClient.connect(b.port)
        await bob.login("bob", identity_key("bob"))
        assert (await bob.recv_type("message", 10.0))["envelope"]["id"] == msg_id(2)  # from his queue
        await bob.send_frame({"type": "received", "id": msg_id(2), "from": "alice"})
        await until_confirmed_in_redis(redis, "bob")
        await proxy.heal()
        fourth = await alice.recv_type("ack", 15.0)
        # And after a `queued` at once: bob offline when message 3 is sent, back and confirming during a gap.
        await bob.close()
        await alice.send_frame(send_frame("bob", 3))
        fifth = await alice.recv_type("ack", 15.0)
        proxy.cut()
        bob = await RawClient.connect(b.port)
        await bob.login("bob", identity_key("bob"))
        assert (await bob.recv_type("message", 10.0))["envelope"]["id"] == msg_id(3)
        await bob.send_frame({"type": "received", "id": msg_id(3), "from": "alice"})
        await until_confirmed_in_redis(redis, "bob")
        await proxy.heal()
        sixth = await alice.recv_type("ack", 15.0)
        await alice.expect_silence(0.3)
        await alice.close()
        await bob.close()
    assert (first["id"], first["status"]) == (msg_id(1), "queued"), first
    assert (second["id"], second["status"]) == (msg_id(1), "delivered"), second
    assert (third["id"], third["status"]) == (msg_id(2), "queued"), third
    assert (fourth["id"], fourth["status"]) == (msg_id(2), "delivered"), fourth
    assert (fifth["id"], fifth["status"]) == (msg_id(3), "queued"), fifth
    assert (sixth["id"], sixth["status"]) == (msg_id(3), "delivered"), sixth


# --- 8. a session replaced from another node ----------------------------------------------------


def send_frame(to: str, n: int) -> dict[str, object]:
    return {"type": "send", "to": to, "envelope": envelope("alice", to, msg_id(n))}


async def messages(client: RawClient, count: int) -> list[str]:
    return [(await client.recv_type("message", 15.0))["envelope"]["id"] for _ in range(count)]


async def test_a_login_on_node_b_replaces_the_session_on_node_a_and_gets_the_backlog_once(nodes: Nodes) -> None:
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    alice, bob_a = await RawClient.connect(b.port), await RawClient.connect(a.port)
    await alice.login("alice")
    await bob_a.login("bob")
    await bob_a.close()  # bob is registered and offline
    for n in range(10):  # queued while bob is away
        await alice.send_frame(send_frame("bob", n))
    assert [(await alice.recv_type("ack"))["status"] for _ in range(10)] == ["queued"] * 10
    bob_a = await RawClient.connect(a.port)
    await bob_a.login("bob")
    for n in range(10, 20):  # live, while bob is on node A (he confirms nothing)
        await alice.send_frame(send_frame("bob", n))
    assert await messages(bob_a, 20) == [msg_id(n) for n in range(20)]
    bob_b = await RawClient.connect(b.port)
    await bob_b.login("bob")
    closing = await bob_a.expect_closed(15.0)
    assert [f.get("code") for f in closing if f["type"] == "error"] == ["replaced"], closing
    assert await messages(bob_b, 20) == [msg_id(n) for n in range(20)], "the backlog, once, in order"
    for n in range(20):
        await bob_b.send_frame({"type": "received", "id": msg_id(n), "from": "alice"})
    await alice.send_frame(send_frame("bob", 20))
    assert await messages(bob_b, 1) == [msg_id(20)], "nothing handed out twice before the next message"
    await bob_b.send_frame({"type": "received", "id": msg_id(20), "from": "alice"})
    delivered: set[str] = set()
    while len(delivered) < 21:  # (the live ones heard `queued` when bob's first session ended)
        ack = await alice.recv_type("ack", 15.0)
        if ack["status"] == "delivered":
            delivered.add(ack["id"])
    assert delivered == {msg_id(n) for n in range(21)}, "bob's new session confirmed each message"
    for c in (alice, bob_a, bob_b):
        await c.close()


async def until_presence(client: RawClient, name: str, online: bool) -> None:
    """Until ``client`` hears that ``name`` is ``online`` (or not): earlier news of it may come first."""
    while await client.recv_type("presence", 10.0) != {"type": "presence", "name": name, "online": online}:
        pass


async def test_presence_crosses_nodes_and_a_replaced_sessions_end_does_not_say_offline(nodes: Nodes) -> None:
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    alice, bob_b = await RawClient.connect(a.port), await RawClient.connect(b.port)
    await alice.login("alice", identity_key("alice"))
    await bob_b.login("bob", identity_key("bob"))
    await alice.send_frame({"type": "lookup", "name": "bob", "rid": "watch"})  # interest in bob
    await alice.recv_type("key")
    await bob_b.close()
    await until_presence(alice, "bob", False)  # his session on node B ended
    bob_b = await RawClient.connect(b.port)
    await bob_b.login("bob", identity_key("bob"))
    await until_presence(alice, "bob", True)
    bob_a = await RawClient.connect(a.port)  # replaces the session on node B: bob stays online
    await bob_a.login("bob", identity_key("bob"))
    await bob_b.expect_closed(15.0)
    await alice.send_frame({"type": "list", "rid": "after"})
    users = await alice.recv_type("users", 10.0)
    assert {"name": "bob", "online": True} in [{k: u[k] for k in ("name", "online")} for u in users["users"]], users
    with contextlib.suppress(TimeoutError):
        while True:  # whatever else alice hears about bob within a quiet spell, the last word is online
            frame = await alice.recv_type("presence", 0.5)
            assert frame["name"] != "bob" or frame["online"], frame
    await bob_a.close()
    await until_presence(alice, "bob", False)
    await alice.close()


# --- TLS: the nodes behind one address share one identity ----------------------------------------


@pytest.mark.slow
def test_nodes_sharing_one_identity_let_a_client_move_between_them_at_one_address(
    nodes: Nodes, spawn_process: Spawn
) -> None:
    """As behind a load balancer: another node answers at the address bob pinned; one shared
    identity (docs/deployment.md) means no changed-identity refusal, and bob carries on by himself."""
    port = restartable_port()
    first = nodes.start(identity="shared", port=port)
    other = nodes.start(identity="shared")
    bob = spawn_process("bob", port)
    bob.wait_event("ready")
    alice = spawn_process("alice", other.port)
    alice.wait_event("ready")
    alice.command({"cmd": "send", "to": "bob", "text": "before"})
    bob.wait_event("message", text="before")
    assert first.kill() == -9
    bob.wait_event("connection", state="reconnecting")
    nodes.start(identity="shared", port=port)  # the next node behind the same address
    bob.wait_until(lambda events: sum(e["event"] == "ready" for e in events) >= 2, LONG, what="bob back")
    alice.command({"cmd": "send", "to": "bob", "text": "after"})
    bob.wait_event("message", text="after")
    assert not bob.of_kind("error"), bob.of_kind("error")
    assert alice.finish() == 0, alice.stderr_tail()
    assert bob.finish() == 0, bob.stderr_tail()
