"""Redis Sentinel for tests: a primary, a replica and three sentinels, as real ``redis-server`` processes.

Each sentinel is ``redis-server sentinel.conf --sentinel`` with a config in the
test's folder (Sentinel rewrites it), watching the primary as ``mymaster`` with
short timeouts so a ``kill -9`` of the primary fails over in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from securechat.bench.servers import redis_ask as ask
from tests.support.ports import restartable_port
from tests.support.redisproc import RedisProcess, require_redis

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


async def replicate_through(port: int, primary: RedisProcess, replica: RedisProcess, within: float = 10.0) -> None:
    """Make ``replica`` a replica of ``primary`` reached at ``port`` (a proxy the test can cut), in sync on return."""
    for proc in (primary, replica):  # a first sync at once, not after Redis's 5 s default wait
        ask(proc.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
    ask(replica.port, "REPLICAOF", "127.0.0.1", str(port))
    async with asyncio.timeout(within):
        while b"master_link_status:up" not in await asyncio.to_thread(ask, replica.port, "INFO", "replication"):
            await asyncio.sleep(0.05)


def replication_offset(port: int, field: str) -> int:
    """``field`` of the Redis at ``port``'s ``INFO replication`` (-1 while it does not say it)."""
    for line in ask(port, "INFO", "replication").decode(errors="replace").splitlines():
        name, _, value = line.partition(":")
        if name == field and value.strip().isdigit():
            return int(value)
    return -1


def until_replica_has_all(primary: int, replica: int, within: float = 10.0) -> None:
    """Wait (bounded) until the replica at ``replica`` has applied every write the primary at ``primary``
    made so far: its replication offset reaches the primary's. (``WAIT 1`` asked on a connection of its
    own checks nothing: it waits for that connection's writes, it has none, so it answers 1 at once,
    even while the replica is stopped.)"""
    target = replication_offset(primary, "master_repl_offset")
    assert target > 0, "the primary said no replication offset"
    deadline = time.monotonic() + within
    while (got := replication_offset(replica, "slave_repl_offset")) < target:
        assert time.monotonic() < deadline, f"the replica is at offset {got}, the primary at {target}"
        time.sleep(0.02)


def primary_port(sentinel_port: int) -> int | None:
    try:
        reply = ask(sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER)
    except OSError:
        return None
    lines = reply.split(b"\r\n")
    return int(lines[4]) if reply.startswith(b"*2") and len(lines) > 4 else None


class Sentinels:
    """The sentinel processes; :meth:`url` is what the nodes get as ``--redis``."""

    def __init__(self, folder: Path, primary: RedisProcess, count: int = 3) -> None:
        self.binary = require_redis()
        self.ports = [restartable_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            conf = folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\nlogfile {folder}/sentinel-{port}.log\n"
                + self.settings(port, primary.port)
            )
            self.procs.append(subprocess.Popen([self.binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while any(primary_port(p) != primary.port for p in self.ports):
            assert time.monotonic() < deadline, "the sentinels did not start"
            time.sleep(0.05)

    def settings(self, port: int, primary: int) -> str:
        """A sentinel's file after its port, address and folder: what it watches, and how closely."""
        return (
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        )

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{MASTER}/0"

    def wait_primary_not(self, old: int, within: float = 30.0) -> int:
        """The port of the new primary, once every sentinel names one other than ``old``."""
        deadline = time.monotonic() + within
        while True:
            ports = {primary_port(p) for p in self.ports}
            if len(ports) == 1 and None not in ports and old not in ports:
                return int(ports.pop())  # type: ignore[arg-type]
            assert time.monotonic() < deadline, f"no failover within {within} s: sentinels say {ports}"
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def sentinel_setup(folder: Path) -> Iterator[tuple[RedisProcess, RedisProcess, Sentinels]]:
    primary = RedisProcess(folder / "primary", appendonly=True).start()
    replica = RedisProcess(folder / "replica", appendonly=True).start()
    sentinels = None
    try:
        for port in (primary.port, replica.port):  # a first sync at once, not after Redis's 5 s default wait
            ask(port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
        ask(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
        deadline = time.monotonic() + 10
        while b"master_link_status:up" not in ask(replica.port, "INFO", "replication"):
            assert time.monotonic() < deadline, "the replica did not sync with the primary"
            time.sleep(0.05)
        sentinels = Sentinels(folder, primary)
        yield primary, replica, sentinels
    finally:
        if sentinels is not None:
            sentinels.stop()
        replica.stop()
        primary.stop()
