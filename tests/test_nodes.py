"""Several server nodes on one Redis, healthy or with their pub/sub cut (issue 11, scenarios 1, 2, 7, 8).

Real processes throughout: ``redis-server`` started by the test (append-only
file on), ``securechat-server --redis`` nodes on free ports, ``securechat-client
--json`` processes or raw protocol clients. The kill -9 scenarios are in
tests/test_nodes_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import Nodes, nodes_on
from tests.support.ports import restartable_port
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess
from tests.support.streams import LONG, Spawn, check_exactly_once, shown, texts

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def redis(make_redis: Callable[..., RedisProcess]) -> RedisProcess:
    return make_redis(appendonly=True)


@pytest.fixture
def nodes(redis: RedisProcess, tmp_path: Path) -> Iterator[Nodes]:
    with nodes_on(redis, tmp_path) as made:
        yield made


def stored_count(redis: RedisProcess, name: str) -> int:
    """How many messages for ``name`` were ever stored (the queue's sequence counter, never reset)."""
    got = redis.client().hget(f"sc:qm:{{{name}}}", "n")  # type: ignore[attr-defined]
    return int(got or 0)


def queued_count(redis: RedisProcess, name: str) -> int:
    return int(redis.client().hlen(f"sc:qi:{{{name}}}"))  # type: ignore[attr-defined]


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
    alice.count_until("ack", n, LONG)
    bob.count_until("ack", n, LONG)
    check_exactly_once(shown(bob, "alice"), to_bob, "alice on A -> bob on B")
    check_exactly_once(shown(alice, "bob"), to_alice, "bob on B -> alice on A")
    for who in (alice, bob):
        statuses = {e["status"] for e in who.of_kind("ack")}
        assert statuses == {"delivered"}, f"{who.name}: both online, yet acks were {statuses}"
    assert alice.finish() == 0, alice.stderr_tail()
    assert bob.finish() == 0, bob.stderr_tail()
    # Stored once each, and every confirmed message left its queue.
    assert (stored_count(redis, "bob"), stored_count(redis, "alice")) == (n, n)
    assert (queued_count(redis, "bob"), queued_count(redis, "alice")) == (0, 0)
    print(f"{n} each way across two nodes in {time.monotonic() - started:.1f} s")


# --- 2. first come, across nodes ----------------------------------------------------------------


async def login_outcome(port: int, name: str, owner: str) -> str:
    """``welcome`` or the error code a login of ``name`` with ``owner``'s key gets on the node at ``port``."""
    key = identity_key(owner)  # made before connecting: a new key takes a while on a busy machine
    c = await RawClient.connect(port)
    try:
        challenge = await c.hello(name, key)
        assert c.handshake is not None and challenge["type"] == "challenge", challenge
        assert not c.handshake.receive_frame(challenge)
        await c.send_raw(c.handshake.data_to_send())
        reply = await c.recv(15.0)
        return "welcome" if reply["type"] == "welcome" else str(reply.get("code", reply))
    finally:
        await c.close()


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


def stream_while_killing(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn, n: int, kind: str, kills: int = 3
) -> tuple[list[ServerProcess], JsonClientProcess, JsonClientProcess, list[str], list[int]]:
    """alice on node A sends ``n`` to bob on node B; Redis's ``kind`` connections are killed ``kills`` times,
    evenly over bob's count; returns once bob has all and alice all acks (both finished)."""
    nodes_ab = nodes.start_many(2)
    bob = spawn_process("bob", nodes_ab[1].port)
    bob.wait_event("ready")
    alice = spawn_process("alice", nodes_ab[0].port)
    alice.wait_event("ready")
    sent = texts(n)
    alice.send_in_background("bob", sent)
    killed = []
    for k in range(1, kills + 1):
        bob.count_until("message", n * k // (kills + 1), LONG)
        killed.append(redis.client().client_kill_filter(_type=kind))  # type: ignore[attr-defined]
    bob.count_until("message", n, LONG)
    alice.count_until("ack", n, LONG)
    assert alice.finish() == 0, alice.stderr_tail()
    assert bob.finish() == 0, bob.stderr_tail()
    return nodes_ab, alice, bob, sent, killed


@pytest.mark.slow
def test_pubsub_connections_killed_3_times_during_2000_catch_up_delivers_all_once(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    n = 2000
    (a, b), _, bob, sent, killed = stream_while_killing(redis, nodes, spawn_process, n, "pubsub")
    assert all(k >= 2 for k in killed), f"CLIENT KILL TYPE pubsub killed {killed}: each node has a subscriber"
    check_exactly_once(shown(bob, "alice"), sent, f"pub/sub connections killed {len(killed)} times")
    assert stored_count(redis, "bob") == n and queued_count(redis, "bob") == 0
    reconnected = [node.stderr.count("subscriber reconnected") for node in (a, b)]
    assert min(reconnected) >= len(killed), f"subscriber reconnects per node: {reconnected}"


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
