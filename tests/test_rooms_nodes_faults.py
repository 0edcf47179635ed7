"""A room stream on several nodes over Redis under failures (issue 10 on issue 11's nodes).

Real processes: ``redis-server`` with its append-only file (``appendfsync always``),
``securechat-server --redis`` nodes, ``securechat-client --json`` members. Each member must
show each of the sender's room messages once and in order; what Redis stored is read in
Redis itself (a member's queue counter counts every copy ever stored for it).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import Nodes, queued_count, queued_counts_once_settled, servers, stored_count
from tests.support.redisproc import RedisProcess
from tests.support.roomclients import WAIT, acks_for, make_room, room_messages, sent_ids
from tests.support.streams import LONG, Spawn, check_exactly_once, texts

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture
def redis(make_redis: Callable[..., RedisProcess]) -> RedisProcess:
    """Overrides conftest's: fsync always (conftest's ``nodes`` runs on this one)."""
    return make_redis(appendonly=True, fsync="always")


def ready(client: JsonClientProcess) -> JsonClientProcess:
    client.wait_event("ready", WAIT)
    return client


def all_delivered(alice: JsonClientProcess, members: list[JsonClientProcess], n: int) -> None:
    """alice sent ``n`` to the room and hears ``delivered`` from each member for each of them."""
    ids = set(sent_ids(alice, "#ops"))
    assert len(ids) == n, f"alice sent {len(ids)} of {n}"
    for member in members:
        alice.wait_until(lambda events, m=member.name: len(acks_for(alice, ids, m, "delivered")) == n, LONG,
                         what=f"{n} delivered acks for {member.name}")


def each_member_once_in_order(
    redis: RedisProcess, alice: JsonClientProcess, members: list[JsonClientProcess], sent: list[str], label: str
) -> None:
    """Every client ended cleanly; each member showed each room message once, in order; Redis stored each
    copy once and holds none still queued."""
    for who in (alice, *members):
        assert who.finish() == 0, who.stderr_tail()
    for member in members:
        check_exactly_once(room_messages(member, "#ops", "alice"), sent, f"{label}; {member.name}")
    names = [member.name for member in members]
    assert [stored_count(redis, m) for m in names] == [len(sent)] * len(names), label
    assert [queued_count(redis, m) for m in names] == [0] * len(names)
    print(label)


def test_the_nodes_redis_connections_killed_mid_room_stream_each_member_gets_each_once_in_order(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    """A command connection killed while Redis stays up fails the copies in flight; the node reconnects
    at once, so a later room message would be stored for a member before the failed one's resend if
    the node let it through (securechat/server/sendorder.py holds room sends as it holds one-to-one ones)."""
    n, kills = 300, 8
    a, b = nodes.start_many(2)
    alice = ready(spawn_process("alice", servers(a)))
    bob, carol = (ready(spawn_process(name, servers(b))) for name in ("bob", "carol"))
    make_room(alice, "#ops", [bob, carol])
    sent = texts(n, "r")
    alice.send_in_background("#ops", sent)
    for k in range(1, kills + 1):
        bob.count_until("message", n * k // (kills + 1), LONG)
        redis.client().client_kill_filter(_type="normal")  # type: ignore[attr-defined]
    for member in (bob, carol):
        member.count_until("message", n, LONG)
    all_delivered(alice, [bob, carol], n)
    refused = sum(1 for e in alice.of_kind("error") if e.get("code") == "internal")
    label = f"the nodes' Redis connections killed {kills} times in a room stream, {refused} room sends refused"
    assert refused, f"{label}: nothing was tested"
    each_member_once_in_order(redis, alice, [bob, carol], sent, label)


def test_kill9_of_a_members_node_mid_room_stream_the_member_fails_over_and_gets_each_once_in_order(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    """bob's node dies with copies handed to him and not confirmed; he moves to node C, whose new session
    reads his queue from the start: what he had shown comes again and is dropped by id, in order."""
    n = 300
    a, b, c = nodes.start_many(3)
    alice = ready(spawn_process("alice", servers(a)))
    bob = ready(spawn_process("bob", servers(b, c)))
    carol = ready(spawn_process("carol", servers(c)))
    make_room(alice, "#ops", [bob, carol])
    sent = texts(n, "k")
    alice.send_in_background("#ops", sent)
    before = len(bob.count_until("message", n // 3, LONG))
    assert b.kill() == -9
    bob.wait_event("connection", WAIT, state="reconnecting")
    for member in (bob, carol):
        member.count_until("message", n, LONG)
    all_delivered(alice, [bob, carol], n)
    assert len(bob.of_kind("ready")) >= 2, "bob should have logged in again, on node C"
    each_member_once_in_order(redis, alice, [bob, carol], sent, f"bob's node killed after he showed {before} of {n} room messages")


def test_kill9_of_redis_mid_room_stream_loses_no_copy_acked_queued_and_each_member_gets_each_once_in_order(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    """Redis (append-only, fsync always) killed with -9 and restarted in a room stream: every copy acked
    `queued` to alice (carol is offline) is in Redis after the restart, read before any resend; then
    alice's resends go through and each member gets each message once, in order."""
    n = 300
    a, b = nodes.start_many(2)
    alice = ready(spawn_process("alice", servers(a)))
    bob = ready(spawn_process("bob", servers(b)))
    carol = ready(spawn_process("carol", servers(b)))
    make_room(alice, "#ops", [bob, carol])
    assert carol.finish() == 0, carol.stderr_tail()  # offline: each copy of hers is acked `queued`
    sent = texts(n, "q")
    alice.send_in_background("#ops", sent)
    alice.wait_until(lambda events: len(acks_for(alice, set(sent_ids(alice, "#ops")), "carol", "queued")) >= n // 5,
                     LONG, what="a fifth of carol's copies acked queued")
    redis.kill()
    os.kill(alice.proc.pid, signal.SIGSTOP)  # no resend until Redis's own copy was checked
    try:
        acked = acks_for(alice, set(sent_ids(alice, "#ops")), "carol", "queued")
        redis.restart()
        stored = {f.decode().split(" ", 1)[1] for f in redis.client().hkeys("sc:qi:{carol}")}  # type: ignore[attr-defined]
    finally:
        os.kill(alice.proc.pid, signal.SIGCONT)
    lost = acked - stored
    assert not lost, f"{len(lost)} of {len(acked)} copies acknowledged `queued` are gone after the restart"
    bob.count_until("message", n, LONG)
    ids = set(sent_ids(alice, "#ops"))
    assert len(ids) == n, f"alice sent {len(ids)} of {n}"
    alice.wait_until(lambda events: len(acks_for(alice, ids, "carol", "queued")) == n, LONG, what=f"{n} queued for carol")
    alice.wait_until(lambda events: len(acks_for(alice, ids, "bob", "delivered")) == n, LONG, what=f"{n} delivered to bob")
    assert alice.finish() == 0, alice.stderr_tail()
    late = ready(spawn_process("carol", servers(a), "-late"))
    late.count_until("message", n, LONG)
    for who in (bob, late):
        assert who.finish() == 0, who.stderr_tail()
    label = f"Redis killed after {len(acked)} of carol's copies were acked `queued`"
    check_exactly_once(room_messages(bob, "#ops", "alice"), sent, f"{label}; bob online")
    check_exactly_once(room_messages(late, "#ops", "alice"), sent, f"{label}; carol offline")
    assert [stored_count(redis, m) for m in ("bob", "carol")] == [n, n], label
    assert queued_counts_once_settled(redis, "bob", "carol") == [0, 0]
    print(label)
