"""Rooms on three server nodes over Redis, with real processes (issues 10 and 11).

``redis-server`` (append-only) started by the test, three ``securechat-server
--redis`` nodes, and one ``securechat-client --json`` per member, each member
on a node of its own: a room's changes, its messages and the per-member acks
all have to cross nodes. What is stored is also read in Redis itself (each
member's queue counter counts every copy ever stored for them).
"""

from __future__ import annotations

import pytest

from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import Nodes, queued_count, queued_counts_once_settled, servers, stored_count
from tests.support.redisproc import RedisProcess
from tests.support.roomclients import WAIT, acks_for, all_sent_ids, change, make_room, room_messages, sent_ids
from tests.support.streams import LONG, Spawn, check_exactly_once, texts

pytestmark = pytest.mark.timeout(600)


def ready(client: JsonClientProcess) -> JsonClientProcess:
    client.wait_event("ready", WAIT)
    return client


def test_three_members_on_three_nodes_talk_ack_per_member_and_see_a_removal(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    a, b, c = nodes.start_many(3)
    alice, bob, carol = (ready(spawn_process(name, servers(node))) for name, node in
                         (("alice", a), ("bob", b), ("carol", c)))
    make_room(alice, "#ops", [bob, carol])  # each change pushed across nodes: bob and carol see themselves added
    state = change(carol, "#ops", "added", "carol")
    assert state["members"] == ["alice", "bob", "carol"] and state["admins"] == ["alice"], state
    n = 30
    said = {who.name: texts(n, who.name) for who in (alice, bob, carol)}
    for who in (alice, bob, carol):
        who.send_in_background("#ops", said[who.name])
    for reader in (alice, bob, carol):
        reader.count_until("message", 2 * n, WAIT)
        for writer in {"alice", "bob", "carol"} - {reader.name}:
            check_exactly_once(room_messages(reader, "#ops", writer), said[writer], f"{writer} -> {reader.name}")
    # One `delivered` per member and message, wherever the member is; never one for the sender.
    for who in (alice, bob, carol):
        ids = all_sent_ids(who, "#ops", n)
        for member in {"alice", "bob", "carol"} - {who.name}:
            who.wait_until(lambda events, who=who, ids=ids, member=member: len(acks_for(who, ids, member, "delivered")) == n,
                           WAIT, what=f"{n} delivered acks of {who.name}'s messages for {member}")
        assert not who.of_kind("ack", member=who.name), "the sender is never routed its own message"
        assert all(e["to"] == "#ops" for e in who.of_kind("ack")), who.of_kind("ack")
    # Stored once per member in Redis, and every confirmed copy left its queue.
    assert [stored_count(redis, name) for name in ("alice", "bob", "carol")] == [2 * n] * 3
    assert [queued_count(redis, name) for name in ("alice", "bob", "carol")] == [0, 0, 0]

    # A removal on node A: carol on node C is told, bob on node B sees it; nothing after it reaches carol.
    alice.command({"cmd": "room_remove", "room": "#ops", "name": "carol"})
    removed = change(carol, "#ops", "removed", "carol")
    assert removed["by"] == "alice" and "carol" not in removed["members"], removed
    change(bob, "#ops", "removed", "carol")
    after = texts(10, "after")
    alice.send_in_background("#ops", after)
    bob.count_until("message", 2 * n + len(after), WAIT)
    ids = all_sent_ids(alice, "#ops", len(after), skip=n)
    alice.wait_until(lambda events: len(acks_for(alice, ids, "bob", "delivered")) == len(after), WAIT)
    assert not acks_for(alice, ids, "carol", "delivered") | acks_for(alice, ids, "carol", "queued")
    carol.command({"cmd": "send", "to": "#ops", "text": "still here?"})
    assert carol.wait_event("error", WAIT, cmd="send")["code"] == "not_member"
    for who in (alice, bob, carol):
        assert who.finish() == 0, who.stderr_tail()
        assert not who.bad_lines, who.bad_lines
    assert not {e["text"] for e in room_messages(carol, "#ops", "alice")} & set(after)
    assert stored_count(redis, "carol") == 2 * n  # not one copy of what followed the removal was stored for her
    assert "still here?" not in [e["text"] for e in room_messages(bob, "#ops")]


@pytest.mark.slow
def test_kill9_of_the_senders_node_mid_stream_every_member_gets_each_once_and_nothing_is_stored_twice(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn
) -> None:
    """alice's node dies with room messages unacknowledged; her outbox resends through another node."""
    n = 300
    a, b, c = nodes.start_many(3)
    alice = ready(spawn_process("alice", servers(a, b)))
    bob, carol = (ready(spawn_process(name, servers(c))) for name in ("bob", "carol"))
    make_room(alice, "#ops", [bob, carol])
    assert carol.finish() == 0, carol.stderr_tail()  # carol is offline: every copy of hers waits in Redis
    sent = texts(n, "k")
    alice.send_in_background("#ops", sent)
    bob.count_until("message", n // 3, LONG)
    assert a.kill() == -9
    acked = {e["id"] for e in alice.of_kind("ack", member="carol", status="queued")}
    unacked = set(sent_ids(alice, "#ops")) - acked
    alice.wait_event("connection", WAIT, state="reconnecting")
    bob.count_until("message", n, LONG)
    ids = set(sent_ids(alice, "#ops"))
    assert len(ids) == n, f"alice sent {len(ids)} of {n}"
    alice.wait_until(lambda events: len(acks_for(alice, ids, "carol", "queued")) == n, LONG,
                     what=f"{n} queued acks for carol")
    alice.wait_until(lambda events: len(acks_for(alice, ids, "bob", "delivered")) == n, LONG,
                     what=f"{n} delivered acks for bob")
    assert alice.finish() == 0, alice.stderr_tail()
    label = f"alice's node killed with {len(unacked)} of her room messages unacknowledged"
    assert unacked, "the kill came after every ack: nothing was tested"
    late = ready(spawn_process("carol", servers(b), "-late"))
    late.count_until("message", n, LONG)
    assert late.finish() == 0, late.stderr_tail()
    check_exactly_once(room_messages(late, "#ops", "alice"), sent, f"carol offline; {label}")
    check_exactly_once(room_messages(bob, "#ops", "alice"), sent, f"bob online; {label}")
    assert bob.finish() == 0, bob.stderr_tail()
    # Stored once per member, whatever was resent; every copy was confirmed and left its queue.
    assert (stored_count(redis, "bob"), stored_count(redis, "carol")) == (n, n), label
    assert queued_counts_once_settled(redis, "bob", "carol") == [0, 0]
    print(label)
