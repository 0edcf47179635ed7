"""Several ``securechat-server`` nodes on one ``redis-server``, as real processes (issue 11's scenarios).

Each node is a :class:`ServerProcess` started with ``--redis`` and, unless told otherwise, a TLS
identity of its own in the test's folder (clients pin each node's address on first use, as
docs/deployment.md says for clients that list the nodes); :func:`servers` writes the client's
``--server`` list for some of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from securechat.server.identity import load_or_create
from tests.support.acks import backlog_read
from tests.support.jsonclient import JsonClientProcess
from tests.support.partition import PartitionProxy, partition_proxy
from tests.support.ports import restartable_port
from tests.support.rawclient import RawClient, identity_key, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess
from tests.support.streams import FAST, LONG, Spawn, texts

PROBE_ID = msg_id(0xFFFF)  # alice_behind_a_proxy's probe: an id no test sends


def servers(*nodes: ServerProcess) -> str:
    """The ``--server`` value naming ``nodes`` in turn."""
    return ",".join(f"127.0.0.1:{node.port}" for node in nodes)


class Nodes:
    """The nodes of one server over ``redis``; every node still running is killed at the end."""

    def __init__(self, redis: RedisProcess, folder: Path, args: Sequence[str] = FAST) -> None:
        self.redis = redis
        self.folder = folder
        self.args = list(args)
        self.started: list[ServerProcess] = []

    def identity(self, label: str) -> list[str]:
        """``--tls-cert``/``--tls-key`` of the identity ``label`` in the test's folder (made the first time)."""
        cert, key = self.folder / f"{label}.tls-cert.pem", self.folder / f"{label}.tls-key.pem"
        load_or_create(cert, key, create=True)
        return ["--tls-cert", str(cert), "--tls-key", str(key)]

    def start(self, *extra: str, identity: str = "", port: int = 0, redis_url: str = "") -> ServerProcess:
        """A node; ``identity``: the label of a TLS identity to share (default: one of its own);
        ``redis_url``: where this node finds Redis (default: the Redis itself; a proxy in front, say)."""
        tls = self.identity(identity or f"node{len(self.started)}")
        node = ServerProcess(None, ["--redis", redis_url or self.redis.url, *tls, *self.args, *extra], port=port)
        self.started.append(node)
        node.wait_listening()
        return node

    def start_many(self, n: int) -> list[ServerProcess]:
        return [self.start() for _ in range(n)]

    def kill_all(self) -> None:
        for node in self.started:
            node.kill()

    def close(self) -> None:
        for node in self.started:
            node.kill()
            for stream in (node.proc.stdout, node.proc.stderr):
                if stream is not None:
                    stream.close()


@contextlib.contextmanager
def nodes_on(redis: RedisProcess, folder: Path, args: Sequence[str] = FAST) -> Iterator[Nodes]:
    made = Nodes(redis, folder, args)
    try:
        yield made
    finally:
        made.close()


@contextlib.asynccontextmanager
async def alice_behind_a_proxy(
    redis: RedisProcess, nodes: Nodes, *extra: str
) -> AsyncIterator[tuple[PartitionProxy, ServerProcess, RawClient, RawClient]]:
    """alice logged in on a node that reaches Redis through a :class:`PartitionProxy`, bob on another
    node that reaches it directly: the proxy, bob's node, alice and bob. bob's backlog is read: alice's
    probe (:data:`PROBE_ID`) reached him, was confirmed and acked ``delivered``. ``extra``: both nodes' options."""
    async with partition_proxy(redis.port) as proxy:
        a = await asyncio.to_thread(functools.partial(nodes.start, *extra, redis_url=f"redis://127.0.0.1:{proxy.port}/0"))
        b = await asyncio.to_thread(nodes.start, *extra)
        bob = await RawClient.connect(b.port)
        await bob.login("bob", identity_key("bob"))
        alice = await RawClient.connect(a.port)
        await alice.login("alice", identity_key("alice"))
        await backlog_read(alice, bob, PROBE_ID)  # else alice's first send may be `queued` first (acks.py)
        yield proxy, b, alice, bob


def start_restartable(db: Path) -> ServerProcess:
    """A server on a :func:`restartable_port` (another one if that was taken meanwhile)."""
    for _ in range(5):
        proc = ServerProcess(db, FAST, port=restartable_port())
        try:
            proc.wait_listening()
        except RuntimeError:
            continue
        return proc
    proc = ServerProcess(db, FAST)
    proc.wait_listening()
    return proc


def stored_count(redis: RedisProcess, name: str) -> int:
    """How many messages for ``name`` were ever stored (the queue's sequence counter, never reset)."""
    got = redis.client().hget(f"sc:qm:{{{name}}}", "n")  # type: ignore[attr-defined]
    return int(got or 0)


def kept_count(redis: RedisProcess, name: str) -> int:
    """How many distinct messages for ``name`` are queued or were confirmed from its queue lately (the dedupe set).
    Equal to :func:`stored_count` while no message was stored twice (the live path stores only some)."""
    client = redis.client()
    return int(client.hlen(f"sc:qi:{{{name}}}")) + int(client.zcard(f"sc:seen:{{{name}}}"))  # type: ignore[attr-defined]


def queued_count(redis: RedisProcess, name: str) -> int:
    return int(redis.client().hlen(f"sc:qi:{{{name}}}"))  # type: ignore[attr-defined]


def queued_counts_once_settled(redis: RedisProcess, *names: str, within: float = 30.0) -> list[int]:
    """What is left in each of ``names``'s queues once they are empty, or at the deadline. A client
    confirms a message as it shows it: its last confirmations may still be on their way through its
    node to Redis when the test has seen the message shown and the client exit, so an exact count read
    at once fails now and then under load, though nothing is lost."""
    deadline = time.monotonic() + within
    while any(counts := [queued_count(redis, name) for name in names]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return counts


async def login_outcome(port: int, name: str, owner: str, source: str | None = None) -> str:
    """``welcome`` or the error code a login of ``name`` with ``owner``'s key gets on the node at ``port``
    (connecting from the local address ``source``, if given)."""
    client, outcome = await login_or_refusal(port, name, owner, source)
    if client is not None:
        await client.close()
    return outcome


async def login_or_refusal(port: int, name: str, owner: str, source: str | None = None) -> tuple[RawClient | None, str]:
    """A login of ``name`` with ``owner``'s key on the node at ``port``: (the client, ``welcome``), or
    (None, the error code it was refused with)."""
    key = identity_key(owner)  # made before connecting: a new key takes a while on a busy machine
    c = await RawClient.connect(port, source=source)
    try:
        challenge = await c.hello(name, key)
        assert c.handshake is not None and challenge["type"] == "challenge", challenge
        assert not c.handshake.receive_frame(challenge)
        await c.send_raw(c.handshake.data_to_send())
        reply = await c.recv(15.0)
    except BaseException:
        await c.close()
        raise
    if reply["type"] == "welcome":
        return c, "welcome"
    await c.close()
    return None, str(reply.get("code", reply))


def stream_while_killing(
    redis: RedisProcess, nodes: Nodes, spawn_process: Spawn, n: int, kind: str, kills: int = 3, extra: Sequence[str] = ()
) -> tuple[list[ServerProcess], JsonClientProcess, JsonClientProcess, list[str], list[int]]:
    """alice on node A sends ``n`` to bob on node B; Redis's ``kind`` connections are killed ``kills`` times,
    evenly over bob's count; returns once bob has all and alice all acks (both finished). ``extra``: the nodes' options."""
    nodes_ab = [nodes.start(*extra) for _ in range(2)]
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
