"""A node cut off from Redis ends its sessions ``unavailable`` once ``--shed-after`` seconds have passed
without its own heartbeat heard back (securechat/server/cluster.py, ``_shed_if_cut``), so that their clients
move to a node that can serve them instead of waiting, connected, for the heal (docs/deployment.md, "A node
cut off from Redis")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.docvector import doc_example
from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import Nodes, servers
from tests.support.partition import partition_proxy
from tests.support.rawclient import RawClient, identity_key
from tests.support.redisproc import RedisProcess

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_a_node_cut_from_redis_ends_its_sessions_unavailable_and_its_clients_move_to_another_node(
    redis: RedisProcess, nodes: Nodes, tmp_path: Path
) -> None:
    """alice, on node A with node B next in her ``--server`` list, sends to bob (on B) while A is cut from
    Redis: A cannot take the message, then ends her session ``unavailable``; her client moves to B and
    resends it, and bob gets it once while A is still cut off."""
    async with partition_proxy(redis.port) as proxy:
        a = await asyncio.to_thread(nodes.start, "--shed-after", "2", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        b = await asyncio.to_thread(nodes.start)
        bob = JsonClientProcess("bob", servers(b), tmp_path / "bob")
        alice = JsonClientProcess("alice", servers(a, b), tmp_path / "alice")
        raw = await RawClient.connect(a.port)  # on the wire: the frame a client of any make gets
        try:
            await raw.login("carol", identity_key("carol"))
            for client in (bob, alice):
                await asyncio.to_thread(client.wait_event, "ready", 30.0)
            proxy.cut()  # never healed here: what reaches bob went through node B
            cut_at = asyncio.get_running_loop().time()
            alice.command({"cmd": "send", "to": "bob", "text": "sent while her node is cut off"})
            ended = await raw.recv_type("error", 30.0)
            ended_in = asyncio.get_running_loop().time() - cut_at
            await raw.expect_closed(10.0)  # TimeoutError if the node keeps the connection
            moved = await asyncio.to_thread(alice.wait_event, "connection", 30.0, state="reconnecting")
            shown = await asyncio.to_thread(bob.wait_event, "message", 60.0)
            acked = await asyncio.to_thread(alice.wait_event, "ack", 30.0, status="delivered")
            shown_in = asyncio.get_running_loop().time() - cut_at
            alice.command({"cmd": "send", "to": "bob", "text": "after"})  # anything shown twice comes before it
            await asyncio.to_thread(bob.wait_event, "message", 30.0, text="after")
        finally:
            await raw.close()
            alice.close()
            bob.close()
    assert ended == json.loads(doc_example("shed")), "docs/protocol.md's example is not what the node sends"
    assert "unavailable" in moved.get("detail", ""), moved
    assert (shown["from"], shown["text"]) == ("alice", "sent while her node is cut off"), shown
    assert acked["id"] == shown["id"], (acked, shown)
    assert [m["text"] for m in bob.of_kind("message")] == [shown["text"], "after"], "once, and in order"
    assert len(alice.of_kind("ready")) == 2, "alice signed in again, on node B"
    assert "cut off from Redis for 2 s: ending its sessions (2) so that they move" in a.stderr, a.stderr[-3000:]
    assert "Traceback" not in a.stderr, a.stderr[-3000:]
    print(f"shed: sessions ended {ended_in:.1f} s after the cut, alice's message shown {shown_in:.1f} s after it; {moved}")
