"""The live path on real nodes: a send that goes the store path while earlier live sends of its pair are still
unanswered is queued after them (securechat/server/livepath.py, ``LiveOut.before_store``). The rules alone, and
a model of why order holds, are tests/test_livepath.py; the live path's other scenarios, tests/test_nodes_live.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.acks import backlog_read
from tests.support.nodes import PROBE_ID, Nodes
from tests.support.rawclient import RawClient, envelope, identity_key, json_frame, msg_id

pytestmark = pytest.mark.timeout(60)

BODY = 10_000  # bytes of ciphertext per message: the sender's node holds two live, not three
HELD = 25_000


def big_send(n: int) -> dict[str, Any]:
    return {"type": "send", "to": "bob", "envelope": {**envelope("alice", "bob", msg_id(n)), "ct": "A" * BODY}}


async def test_a_send_stored_for_want_of_room_goes_behind_the_live_sends_still_unanswered(nodes: Nodes) -> None:
    """alice's node holds 2 of her messages live, not 3 (``--max-unconfirmed-bytes``): of 1, 2, 3 sent at once,
    1 and 2 go live and 3 goes the store path. bob's window is 1: his node hands him 1 and refuses 2 (X), and
    alice's node stores what is unanswered. Were 1 and 2 stored only then, the queue would hold 3 before 2 and
    bob would get 1, 3, 2; they go to the queue before 3, so he gets 1, 2, 3."""
    a = await asyncio.to_thread(nodes.start, "--max-unconfirmed-bytes", str(HELD))
    b = await asyncio.to_thread(nodes.start, "--window", "1")
    bob, alice = await RawClient.connect(b.port), await RawClient.connect(a.port)
    await bob.login("bob", identity_key("bob"))
    await alice.login("alice", identity_key("alice"))
    await backlog_read(alice, bob, PROBE_ID)  # both caught up, the probe delivered: nothing held, bob's window free

    await alice.send_raw(b"".join(json_frame(big_send(n)) for n in (1, 2, 3)))
    got: list[str] = []
    async with asyncio.timeout(30):
        while len(set(got)) < 3:
            message = await bob.recv_type("message", 15.0)
            got.append(message["envelope"]["id"])
            await bob.send_frame({"type": "received", "id": got[-1], "from": "alice"})
    once = list(dict.fromkeys(got))  # the client drops a (from, id) it accepted before
    assert once == [msg_id(1), msg_id(2), msg_id(3)], got
    for client in (alice, bob):
        await client.close()

