"""NodeWatch (securechat/server/nodewatch.py): whether a name's node is still heard from, which decides
whether a send to it may go live (cluster_live.py) or is stored at once."""

from __future__ import annotations

import time

from securechat.server.awaited import ACK_DEADLINE
from securechat.server.nodewatch import NodeWatch


def test_a_name_is_reachable_while_its_node_is_heard_from_and_not_once_it_is_silent() -> None:
    watch = NodeWatch("node-a")
    watch.read(NodeWatch("node-b").announce("bob", True, 1))
    now = time.monotonic()
    assert watch.reachable("bob", now)
    later = now + ACK_DEADLINE + 0.5  # node-b's heartbeat lapsed: its subscriber may be cut from Redis
    assert not watch.reachable("bob", later)
    watch.read(NodeWatch("node-b").beat())  # heard again
    assert watch.reachable("bob", time.monotonic())


def test_a_name_on_this_node_is_reachable_however_long_it_is_silent_and_an_unknown_one_never() -> None:
    watch = NodeWatch("node-a")
    watch.read(watch.announce("alice", True, 1))
    assert watch.reachable("alice", time.monotonic() + 10 * ACK_DEADLINE)
    assert not watch.reachable("carol", time.monotonic())
    watch.read(watch.announce("alice", False, 1))  # offline
    assert not watch.reachable("alice", time.monotonic())
