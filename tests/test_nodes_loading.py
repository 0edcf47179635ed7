"""A Redis that restarts and spends seconds loading its data (issue 11): the nodes wait for it.

While ``redis-server`` reads its append-only file back it accepts connections,
lets ``SELECT``, ``CLIENT SETNAME``, ``SUBSCRIBE`` and ``PUBLISH`` through, and
answers every read, write and script with ``LOADING``. A node must treat that as
Redis being away (refuse sends with ``internal``, read queues again later), not as
a broken reply: a full-suite run caught a node ending a connected session with
"queue delivery failed" when its pub/sub gap's catch-up read the queue of a Redis
still loading. Real processes: ``redis-server`` made to load slowly with its own
``key-load-delay`` setting, ``securechat-server --redis`` nodes, raw clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.nodes import Nodes
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import RedisProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

FILLER_KEYS = 40_000  # at 100 µs each: about 4 s of loading after a restart
SLOW_LOAD = ("--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024")


@pytest.fixture
def redis(make_redis: Callable[..., RedisProcess]) -> RedisProcess:
    """Overrides conftest's: a Redis that, once restarted, loads each key slowly and answers meanwhile."""
    return make_redis(appendonly=True, fsync="always", extra=SLOW_LOAD)


def loading(redis: RedisProcess) -> bool:
    return bool(redis.client().info("persistence")["loading"])  # type: ignore[attr-defined]


def rewriting(redis: RedisProcess) -> bool:
    info = redis.client().info("persistence")  # type: ignore[attr-defined]
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


async def until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


async def send_until_taken(alice: RawClient, bob: RawClient, n: int, within: float = 30.0) -> dict[str, Any]:
    """Send message ``n`` to bob until he has it (while Redis is away the node refuses it: sent again, same id)."""
    deadline = time.monotonic() + within
    while True:
        await alice.send_frame({"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(n))})
        try:
            return await bob.recv_type("message", 2.0)
        except TimeoutError:
            assert time.monotonic() < deadline, f"bob never got message {n}"


async def test_a_session_outlives_a_redis_restart_that_loads_for_seconds(redis: RedisProcess, nodes: Nodes) -> None:
    a, b = await asyncio.to_thread(nodes.start_many, 2)
    alice, bob = await RawClient.connect(a.port), await RawClient.connect(b.port)
    await alice.login("alice", identity_key("alice"))
    await bob.login("bob", identity_key("bob"))
    admin = redis.client()
    admin.mset({f"filler:{i}": "x" for i in range(FILLER_KEYS)})  # type: ignore[attr-defined]
    admin.bgrewriteaof()  # type: ignore[attr-defined]  # the keys in the file's base, which loads key by key
    await until(lambda: not rewriting(redis), "the append-only file rewritten")
    await alice.send_frame({"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(1))})
    first = await bob.recv_type("message", 10.0)
    await bob.send_frame({"type": "received", "from": "alice", "id": msg_id(1)})

    redis.kill()
    await asyncio.to_thread(redis.start, ready=False)
    assert await asyncio.to_thread(loading, redis), "Redis loaded too fast for this test to mean anything"
    await until(lambda: not loading(redis), "Redis done loading")
    await until(lambda: "subscriber reconnected" in b.stderr, "bob's node subscribed again")

    second = await send_until_taken(alice, bob, 2)  # on bob's session that was connected all along
    await bob.send_frame({"type": "received", "from": "alice", "id": msg_id(2)})
    while (ack := await alice.recv_type("ack", 10.0))["id"] != msg_id(2) or ack["status"] != "delivered":
        pass  # message 1's `delivered`; `queued` for 2 if it was stored while the node was catching up
    assert first["envelope"]["id"] == msg_id(1) and second["envelope"]["id"] == msg_id(2), second
    for node in (a, b):
        # The subscriber comes back when Redis serves again: a resubscription while it loads would catch up
        # on a store that answers nothing, then be dropped by the next heartbeat's LOADING, and so on.
        churn = [line for line in node.lines if "cut from Redis" in line and "LOADING" in line]
        assert not churn, churn
        assert "queue delivery failed" not in node.stderr, node.stderr[-3000:]
        assert "Traceback" not in node.stderr and "never retrieved" not in node.stderr, node.stderr[-3000:]
    await alice.close()
    await bob.close()
