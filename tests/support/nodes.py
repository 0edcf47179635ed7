"""Several ``securechat-server`` nodes on one ``redis-server``, as real processes (issue 11's scenarios).

Each node is a :class:`ServerProcess` started with ``--redis`` and, unless told otherwise, a TLS
identity of its own in the test's folder (clients pin each node's address on first use, as
docs/deployment.md says for clients that list the nodes); :func:`servers` writes the client's
``--server`` list for some of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from securechat.server.identity import load_or_create
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess
from tests.support.streams import FAST


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
