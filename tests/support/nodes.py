"""Several ``securechat-server`` nodes on one ``redis-server``, as real processes (issue 11's scenarios).

Each node is a :class:`ServerProcess` started with ``--redis``; :func:`servers` writes the
client's ``--server`` list for some of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess
from tests.support.streams import FAST


def servers(*nodes: ServerProcess) -> str:
    """The ``--server`` value naming ``nodes`` in turn."""
    return ",".join(f"127.0.0.1:{node.port}" for node in nodes)


class Nodes:
    """The nodes of one server over ``redis``; every node still running is killed at the end."""

    def __init__(self, redis: RedisProcess, args: Sequence[str] = FAST) -> None:
        self.redis = redis
        self.args = list(args)
        self.started: list[ServerProcess] = []

    def start(self, *extra: str) -> ServerProcess:
        node = ServerProcess(None, ["--redis", self.redis.url, *self.args, *extra])
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
def nodes_on(redis: RedisProcess, args: Sequence[str] = FAST) -> Iterator[Nodes]:
    made = Nodes(redis, args)
    try:
        yield made
    finally:
        made.close()
