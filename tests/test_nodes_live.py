"""The live path's rules attacked with real nodes (securechat/server/livepath.py, cluster_live.py).

Real processes: a ``redis-server`` of the test's own, ``securechat-server --redis`` nodes, raw
protocol clients (:class:`RawClient`) that confirm when the test says so; pokes a node never
wrote are published, and the nodes' own read, with a raw Redis connection. Each test first
lets bob's new session read its backlog (:func:`backlog_read`), so what follows may go live.

A raw client keeps every frame, duplicates too; the real client drops a ``(from, id)`` it
accepted before (securechat/client/inbox.py), which the live path relies on when it stores a
message the session holds already. :func:`accepted` is that rule: order and exactly-once are
checked on what it keeps.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable

import pytest

from securechat.protocol import message_frame
from securechat.server.livepath import LIVE_DEADLINE
from securechat.server.pokes import live_poke, refusal_poke
from tests.support.acks import Ack, acks_until, backlog_read, delivered_acks, settled
from tests.support.nodes import (
    PROBE_ID,
    Nodes,
    alice_behind_a_proxy,
    queued_counts_once_settled,
    stored_count,
)
from tests.support.partition import partition_proxy
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(120)


def send_frame(n: int, to: str = "bob") -> dict[str, object]:
    return {"type": "send", "to": to, "envelope": envelope("alice", to, msg_id(n))}


async def send(alice: RawClient, numbers: Iterable[int]) -> None:
    for n in numbers:
        await alice.send_frame(send_frame(n))


async def logged_in(node: ServerProcess, name: str) -> RawClient:
    client = await RawClient.connect(node.port)
    await client.login(name, identity_key(name))
    return client


async def alice_and_bob(nodes: Nodes, *bob_node: str) -> tuple[ServerProcess, ServerProcess, RawClient, RawClient]:
    """alice on a node A, bob on a node B (``bob_node``: B's options), bob's backlog read."""
    a = await asyncio.to_thread(nodes.start)
    b = await asyncio.to_thread(functools.partial(nodes.start, *bob_node))
    bob = await logged_in(b, "bob")
    alice = await logged_in(a, "alice")
    await backlog_read(alice, bob, PROBE_ID)
    return a, b, alice, bob


async def take(client: RawClient, count: int, within: float = 10.0) -> list[str]:
    """The ids of the next ``count`` messages ``client`` reads (unconfirmed)."""
    return [(await client.recv_type("message", within))["envelope"]["id"] for _ in range(count)]


async def confirm(client: RawClient, ids: Iterable[str], sender: str = "alice") -> None:
    for i in ids:
        await client.send_frame({"type": "received", "id": i, "from": sender})


def accepted(ids: Iterable[str], before: Iterable[str] = ()) -> list[str]:
    """What a real client shows of ``ids`` in turn: each one once, a copy it accepted before dropped."""
    seen = set(before)
    kept = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            kept.append(i)
    return kept


async def confirm_until(client: RawClient, wanted: set[str], within: float = 15.0, sender: str = "alice") -> list[str]:
    """Read ``client``'s messages, confirming each as it comes, until each of ``wanted`` came: every id read."""
    got: list[str] = []
    while not wanted <= set(got):
        got.append((await client.recv_type("message", within))["envelope"]["id"])
        await confirm(client, got[-1:], sender)
    return got


async def bob_back_elsewhere(nodes: Nodes, alice: RawClient, held: int, more: int) -> tuple[RawClient, list[str], list[Ack]]:
    """bob logs in on a new node and confirms the ``held`` messages (0 on) stored for him, then the ``more`` that alice
    sends after them: bob, the ids he was handed in order, and alice's acks until each of them was `delivered`."""
    node = await asyncio.to_thread(nodes.start)
    bob = await logged_in(node, "bob")
    got = await confirm_until(bob, set(ids(0, held - 1)))
    await send(alice, range(held, held + more))
    got += await confirm_until(bob, set(ids(held, held + more - 1)))
    return bob, got, await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= held + more)


def ids(first: int, last: int) -> list[str]:
    return [msg_id(n) for n in range(first, last + 1)]


def statuses(acks: list[Ack], status: str) -> list[str]:
    return [x["id"] for x in acks if x["status"] == status]


class Channel:
    """A raw Redis subscription to one user's channel: what the nodes publish there, as they publish it."""

    def __init__(self, redis: RedisProcess, name: str) -> None:
        self._sub = redis.client().pubsub()  # type: ignore[attr-defined]
        self._sub.subscribe(f"sc:u:{{{name}}}")
        while self._sub.get_message(timeout=5.0) is None:  # the subscribe's confirmation
            pass
        self.heard: list[bytes] = []

    def _read(self, enough: Callable[[list[bytes]], bool], kind: bytes, within: float) -> list[bytes]:
        deadline = time.monotonic() + within
        while not enough(of := [p for p in self.heard if p.startswith(kind)]) and (left := deadline - time.monotonic()) > 0:
            message = self._sub.get_message(timeout=min(left, 0.5))
            if message is not None and message["type"] == "message":
                self.heard.append(bytes(message["data"]))
        return of

    async def until(self, count: int, kind: bytes, within: float = 10.0) -> list[bytes]:
        """The pokes of ``kind`` heard once there are ``count`` of them (or at the deadline)."""
        return await asyncio.to_thread(self._read, lambda of: len(of) >= count, kind, within)

    async def until_about(self, ids: list[str], kind: bytes, within: float = 10.0) -> list[bytes]:
        """The pokes of ``kind`` heard once they name each of ``ids`` (or at the deadline)."""
        named = lambda of: all(i.encode() in b"".join(of) for i in ids)
        return await asyncio.to_thread(self._read, named, kind, within)

    def close(self) -> None:
        self._sub.close()


# --- 1. the live path is taken -------------------------------------------------------------------


async def test_200_messages_across_two_nodes_go_live_in_order_delivered_and_nothing_stored(
    redis: RedisProcess, nodes: Nodes
) -> None:
    _, _, alice, bob = await alice_and_bob(nodes)
    before = await asyncio.to_thread(stored_count, redis, "bob")  # the probe may have been stored (backlog read)
    n = 200
    await send(alice, range(n))
    got = await confirm_until(bob, set(ids(0, n - 1)))
    acks = await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= n)
    await alice.expect_silence(0.3)
    assert got == ids(0, n - 1), "bob got them out of order, or twice"
    assert statuses(acks, "queued") == [], f"alice heard `queued` for {len(statuses(acks, 'queued'))}: they went the store path"
    assert sorted(statuses(acks, "delivered")) == ids(0, n - 1)
    assert await asyncio.to_thread(stored_count, redis, "bob") == before, "Redis stored messages that went live"
    for client in (alice, bob):
        await client.close()


# --- 2. a full window refuses the epoch, and order holds -------------------------------------------


async def test_a_full_window_refuses_the_epoch_and_what_was_unanswered_is_stored_in_order(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """bob's window is 2 and he confirms nothing at first: the third live message is refused (X), and
    alice's node stores every unanswered send of the pair, the two bob holds first. Then bob confirms
    each as it comes: all 20 once (a copy he holds already dropped, as the client does), in order."""
    _, _, alice, bob = await alice_and_bob(nodes, "--window", "2")
    before = await asyncio.to_thread(stored_count, redis, "bob")
    n = 20
    await send(alice, range(n))
    # Every one is stored, so alice hears `queued` for each, the last too, before bob confirms anything.
    early = await acks_until(alice, lambda kept: msg_id(n - 1) in statuses(kept, "queued"))
    got = await confirm_until(bob, set(ids(0, n - 1)))
    acks = early + await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= n)
    kept = settled(acks)  # fails on a `queued` after its `delivered`, or a `delivered` twice
    assert accepted(got) == ids(0, n - 1), f"bob's messages, as his client would show them: {accepted(got)}"
    assert sorted(statuses(kept, "delivered")) == ids(0, n - 1)
    assert statuses(acks, "queued"), "nothing went the store path: the window did not refuse"
    assert await asyncio.to_thread(stored_count, redis, "bob") > before
    assert await asyncio.to_thread(queued_counts_once_settled, redis, "bob") == [0], "a stored copy was left behind"
    for client in (alice, bob):
        await client.close()


# --- 3. a gap in a sender's numbers is refused ---------------------------------------------------


def live(epoch: int, number: int, mid: int, session: int = 5) -> bytes:
    """carol's (session ``session``) live message ``number`` of ``epoch`` to bob, its id ``msg_id(mid)``."""
    return lives(epoch, (number, mid), session=session)


def lives(epoch: int, *numbered: tuple[int, int], session: int = 5) -> bytes:
    """One poke of carol's live messages (number, id's ``mid``) of ``epoch`` to bob, in order."""
    frames = {mid: message_frame("carol", 1, envelope("carol", "bob", msg_id(mid))) for _, mid in numbered}
    return live_poke(b"carol", session, epoch, [(n, msg_id(mid).encode(), 1, b"", frames[mid]) for n, mid in numbered])


async def test_a_live_message_out_of_its_epochs_order_is_refused_for_the_rest_of_the_epoch(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """L pokes as a sender's node would publish them, some with a gap: bob gets only the first of an epoch
    and the next ones without a gap, and each refusal is an X on the sender's channel."""
    _, _, alice, bob = await alice_and_bob(nodes)
    carol = Channel(redis, "carol")
    pokes = [
        live(1, 2, 1),  # a new epoch that does not start at 1: refused
        live(1, 3, 2),  # the rest of that epoch: refused, though it follows 2
        live(2, 1, 3),  # a new epoch from 1: taken
        live(2, 3, 4),  # a gap (2 is missing): refused
        live(2, 2, 5),  # 2 comes late: the epoch is refused by now
        live(3, 1, 6),  # a new epoch from 1: taken
        live(3, 2, 7),  # and its next: taken
    ]
    admin = redis.client()
    for poke in pokes:
        assert admin.publish("sc:u:{bob}", poke) == 1  # type: ignore[attr-defined]
    got = await confirm_until(bob, {msg_id(7)}, sender="carol")  # the last poke's: the others were read before it
    refusals = await carol.until(4, b"X")
    await bob.expect_silence(0.3)
    carol.close()
    assert got == [msg_id(3), msg_id(6), msg_id(7)], got
    assert refusals == [refusal_poke(b"bob", epoch, 5) for epoch in (1, 1, 2, 2)], refusals
    for client in (alice, bob):
        await client.close()


async def test_a_poke_whose_messages_bob_partly_holds_writes_him_only_the_new_ones(redis: RedisProcess, nodes: Nodes) -> None:
    """An L poke of two messages, the first a copy bob holds unconfirmed (a resend), the second new: bob is
    written the new one only (a session that takes every message of a poke is written its frames as they
    came, in one piece; one that takes some, those alone). A third poke after it marks the end: had the
    copy been written again, it would come before the third's."""
    _, _, alice, bob = await alice_and_bob(nodes)
    admin = redis.client()
    assert admin.publish("sc:u:{bob}", live(1, 1, 11)) == 1  # type: ignore[attr-defined]
    assert await take(bob, 1) == [msg_id(11)]  # held unconfirmed
    for later in (lives(1, (2, 11), (3, 12)), live(1, 4, 13)):
        assert admin.publish("sc:u:{bob}", later) == 1  # type: ignore[attr-defined]
    assert await take(bob, 2) == [msg_id(12), msg_id(13)]
    for client in (alice, bob):
        await client.close()


# --- 4. bob's session ends holding live messages ---------------------------------------------------


async def test_a_session_that_ends_holding_live_messages_refuses_them_and_they_are_stored_at_once(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """bob holds 5 live messages unconfirmed and leaves: his node refuses their epoch (X), so alice's node
    stores them and she hears `queued` sooner than LIVE_DEADLINE (the deadline's sweep could not be
    so quick: the test's clock starts before the first send). bob, back on another node, gets them
    from his queue, then later messages live, each once, in order."""
    _, _, alice, bob = await alice_and_bob(nodes)
    started = time.monotonic()
    await send(alice, range(5))
    assert await take(bob, 5) == ids(0, 4)
    await bob.close()
    early = await acks_until(alice, lambda kept: len(statuses(kept, "queued")) >= 5)
    waited = time.monotonic() - started
    assert waited < LIVE_DEADLINE, f"`queued` after {waited:.1f} s: stored by the deadline, not by the session's end"
    bob, got, later = await bob_back_elsewhere(nodes, alice, 5, 5)
    kept = settled(early + later)
    assert got == ids(0, 9), got
    assert sorted(statuses(early, "queued")) == ids(0, 4)
    assert sorted(statuses(kept, "delivered")) == ids(0, 9)
    for client in (alice, bob):
        await client.close()


# --- 5. bob's node killed with kill -9 -------------------------------------------------------------


def bus_count(redis: RedisProcess) -> int:
    got = redis.client().client_list(_type="pubsub")  # type: ignore[attr-defined]
    return sum(str(c["name"]).startswith("securechat-bus-") for c in got)


async def test_live_messages_to_a_node_killed_9_are_stored_once_nobody_hears_the_next_and_bob_gets_all(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """bob's node is killed with 5 live messages he holds unconfirmed. alice's next send is heard by
    nobody: her node stores all six, oldest first, well before LIVE_DEADLINE; bob logs in on another
    node and gets everything once, in order."""
    _, b, alice, bob = await alice_and_bob(nodes)
    started = time.monotonic()
    await send(alice, range(5))
    assert await take(bob, 5) == ids(0, 4)
    await asyncio.to_thread(b.kill)
    async with asyncio.timeout(10.0):  # Redis has dropped the dead node's subscriber
        while await asyncio.to_thread(bus_count, redis) != 1:
            await asyncio.sleep(0.02)
    await send(alice, range(5, 10))
    early = await acks_until(alice, lambda kept: len(statuses(kept, "queued")) >= 10)
    waited = time.monotonic() - started
    assert waited < LIVE_DEADLINE, f"`queued` after {waited:.1f} s: stored by the deadline, not at the unheard publish"
    await bob.close()
    bob, got, later = await bob_back_elsewhere(nodes, alice, 10, 5)
    acks = early + later
    assert got == ids(0, 14), got
    assert sorted(statuses(early, "queued")) == ids(0, 9)
    assert sorted(statuses(settled(acks), "delivered")) == ids(0, 14)
    for client in (alice, bob):
        await client.close()


# --- 6. alice's node's subscriber cut ------------------------------------------------------------


async def test_live_sends_whose_delivered_was_lost_in_a_pubsub_gap_are_stored_after_the_resync(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """bob confirms 5 live messages while alice's node is cut off from Redis: their `delivered` is lost.
    After the resync her node stores them at once (their answers may have been lost); the copies of
    what bob confirmed live are deleted, and alice hears `delivered` for each, once, sooner than
    LIVE_DEADLINE; then the pair goes live again, and nothing is left in bob's queue."""
    async with alice_behind_a_proxy(redis, nodes) as (proxy, _, alice, bob):
        to_alice = Channel(redis, "alice")
        started = time.monotonic()
        await send(alice, range(5))
        assert await take(bob, 5) == ids(0, 4)
        proxy.cut()
        await confirm(bob, ids(0, 4))
        published = b"".join(await to_alice.until_about(ids(0, 4), b"A"))  # lost for alice's node
        assert all(b"delivered\n" + i.encode() in published for i in ids(0, 4)), published
        await proxy.heal()
        reading = asyncio.ensure_future(confirm_until(bob, set(ids(5, 9))))  # as his client: a copy is confirmed too
        acks = await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= 5)
        waited = time.monotonic() - started
        await send(alice, range(5, 10))
        after = await reading
        got = ids(0, 4) + after
        acks += await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= 5)
        to_alice.close()
    assert waited < LIVE_DEADLINE, f"`delivered` after {waited:.1f} s: stored by the deadline, not after the resync"
    assert accepted(got) == ids(0, 9), got
    assert not set(after) & set(ids(0, 4)), f"copies of what bob confirmed live were handed out again: {after}"
    assert sorted(statuses(settled(acks), "delivered")) == ids(0, 9)
    assert await asyncio.to_thread(queued_counts_once_settled, redis, "bob") == [0], "a stored copy was left behind"


# --- 7. a replaced session ---------------------------------------------------------------------


async def test_a_session_replaced_while_holding_live_messages_loses_none_and_keeps_order(
    redis: RedisProcess, nodes: Nodes
) -> None:
    """bob's session on B holds live messages unconfirmed (he confirmed the first two) when he logs in on
    C while alice keeps sending: the new session gets every other message once, in order, what alice
    sent before it caught up through the queue and what she sent after, live again."""
    _, _, alice, bob = await alice_and_bob(nodes)
    await send(alice, range(5))
    old = await take(bob, 5)
    await confirm(bob, old[:2])
    await delivered_acks(alice, 2)
    c = await asyncio.to_thread(nodes.start)
    n = 80
    sending = asyncio.ensure_future(paced(alice, range(5, n)))
    new = await logged_in(c, "bob")
    got = await confirm_until(new, set(ids(2, n - 1)))
    await sending
    acks = await acks_until(alice, lambda kept: len(statuses(kept, "delivered")) >= n - 2)
    assert accepted(got, before=old[:2]) == ids(2, n - 1), got
    assert sorted(statuses(settled(acks), "delivered")) == ids(2, n - 1)
    for client in (alice, bob, new):
        await client.close()


async def paced(alice: RawClient, numbers: Iterable[int]) -> None:
    """alice's sends spread over a while (the login of bob's new session, its backlog, then live again)."""
    for n in numbers:
        await alice.send_frame(send_frame(n))
        await asyncio.sleep(0.005)


# --- 8. a live message and a backlog whose read is retried ---------------------------------------


async def test_a_live_message_does_not_pass_the_backlog_while_its_read_is_retried(redis: RedisProcess, nodes: Nodes) -> None:
    """alice's messages 0-2 wait in bob's queue. bob logs in on B, whose first read of the queue is lost with
    its Redis connection (the read is retried half a second later); alice, on a new session, sends 3 meanwhile.
    bob must get 0-3 in order: the live message may not pass the backlog."""
    async with partition_proxy(redis.port) as proxy:
        a = await asyncio.to_thread(nodes.start)
        b = await asyncio.to_thread(functools.partial(nodes.start, redis_url=f"redis://127.0.0.1:{proxy.port}/0"))
        bob = await logged_in(b, "bob")  # registered
        await bob.close()
        alice = await logged_in(a, "alice")
        await send(alice, range(3))
        await acks_until(alice, lambda kept: len(statuses(kept, "queued")) >= 3)
        await alice.close()
        alice = await logged_in(a, "alice")  # a new session: its pair with bob starts live
        proxy.lose_replies_after(b"sc:q:{bob}")  # the backlog's first read
        bob = await logged_in(b, "bob")
        async with asyncio.timeout(10.0):
            while not proxy.reset_muted():
                await asyncio.sleep(0.01)
            while not any("out of reach" in line for line in b.lines):
                await asyncio.sleep(0.005)
        await send(alice, [3])
        got = await confirm_until(bob, set(ids(0, 3)))
        await acks_until(alice, lambda kept: msg_id(3) in statuses(kept, "delivered"))
        assert accepted(got) == ids(0, 3), f"alice's live message passed her backlog: {got}"
        for client in (alice, bob):
            await client.close()
