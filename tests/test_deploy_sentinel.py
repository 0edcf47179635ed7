"""docs/deployment.md's Redis and Sentinel settings ("### Redis"), run as the doc gives them.

The data nodes' settings, their password lines, the ``replicaof`` line, the sentinels' file and the
nodes' ``redis+sentinel://`` URL are read out of the doc (tests/support/deploydoc.py); the test
replaces only addresses, the password, and Sentinel's ``down-after-milliseconds`` (1 s, as the other
Sentinel tests: bounded in seconds). A primary, the two replicas the doc asks for with
``--redis-replicas 1``, three sentinels, two nodes: the primary is killed (-9), and sends go on on
the promoted replica with the old primary still down. (The old primary's return as a replica is not
run: Sentinel waits about 8 s before it turns a returning primary into a replica.)
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from securechat.bench.servers import redis_ask
from tests.support.deploydoc import PASSWORD, DocSentinels, redis_settings, replica_count, sentinel_url
from tests.support.nodes import Nodes, login_or_refusal
from tests.support.ports import restartable_port
from tests.support.rawclient import RawClient, envelope, identity_key, msg_id
from tests.support.redisproc import ConfiguredRedis, RedisProcess, require_redis
from tests.support.sentinels import primary_port
from tests.support.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(180)


def ask(proc: RedisProcess, *command: str) -> object:
    """One command to a data node, logged in with the doc's password."""
    import redis as redispy

    with redispy.Redis(port=proc.port, password=PASSWORD, socket_timeout=5) as client:
        return client.execute_command(*command)


def link_up(proc: RedisProcess) -> bool:
    """Whether ``proc`` is a replica in sync with its primary."""
    reply = ask(proc, "INFO", "replication")  # redis-py parses it into a dict
    return isinstance(reply, dict) and reply.get("master_link_status") == "up"


def until(what: str, check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.05)


def data_nodes(folder: Path, stack: ExitStack) -> list[RedisProcess]:
    """The primary and as many replicas as the doc asks for, each from the doc's settings, in sync."""
    primary = ConfiguredRedis(folder / "primary", redis_settings()).start()
    stack.callback(primary.kill)
    replicas = [ConfiguredRedis(folder / f"replica{i}", redis_settings(primary)) for i in range(replica_count())]
    for replica in replicas:
        stack.callback(replica.kill)
        replica.start()
    for proc in (primary, *replicas):  # a sync at once, not after Redis's 5 s wait for more replicas
        ask(proc, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
    for replica in replicas:
        until(f"replica {replica.port} in sync", lambda r=replica: link_up(r))  # type: ignore[misc]
    return [primary, *replicas]


def to_carol(n: int) -> dict[str, object]:
    return {"type": "send", "to": "carol", "envelope": envelope("alice", "carol", msg_id(n))}


async def acked(alice: RawClient, n: int, within: float) -> str:
    """Send ``n`` until it is acked (``internal`` meanwhile, as a client resends): the ack's status."""
    deadline = time.monotonic() + within
    while True:
        await alice.send_frame(to_carol(n))
        while (reply := await alice.recv(within))["type"] == "presence":
            pass
        if reply["type"] == "ack":
            return str(reply["status"])
        assert reply.get("code") == "internal", reply
        assert time.monotonic() < deadline, f"send {n} still refused after {within} s: {reply}"
        await asyncio.sleep(0.2)


async def carol_logged_in(port: int, within: float = 15.0) -> RawClient:
    deadline = time.monotonic() + within
    while (login := await login_or_refusal(port, "carol", "carol"))[0] is None:
        assert login[1] == "unavailable" and time.monotonic() < deadline, login[1]
        await asyncio.sleep(0.2)
    return login[0]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[list[RedisProcess], DocSentinels, Nodes]]:
    with ExitStack() as stack:
        data = data_nodes(tmp_path, stack)
        sentinels = DocSentinels(tmp_path, data[0])
        stack.callback(sentinels.stop)
        nodes = Nodes(data[0], tmp_path)
        stack.callback(nodes.close)
        yield data, sentinels, nodes


@pytest.mark.slow
async def test_the_docs_sentinel_settings_keep_taking_sends_after_a_failover(
    deployment: tuple[list[RedisProcess], DocSentinels, Nodes],
) -> None:
    (primary, *replicas), sentinels, nodes = deployment
    url = sentinel_url(sentinels.ports)
    a = await asyncio.to_thread(nodes.start, "--redis-replicas", "1", redis_url=url)
    b = await asyncio.to_thread(nodes.start, "--redis-replicas", "1", redis_url=url)
    await (await carol_logged_in(b.port)).close()  # registered, then offline
    alice = await RawClient.connect(a.port)
    await alice.login("alice", identity_key("alice"))
    assert [await acked(alice, n, 10.0) for n in (1, 2)] == ["queued", "queued"]
    primary.kill()
    await asyncio.to_thread(
        until, "the sentinels name a replica", lambda: primary_port(sentinels.ports[0]) in {r.port for r in replicas}
    )
    assert await acked(alice, 3, 20.0) == "queued", "a send after the failover, the old primary still down"
    await alice.close()
    carol = await carol_logged_in(b.port)
    shown = [(await carol.recv_type("message", 10.0))["envelope"]["id"] for _ in range(3)]
    assert shown == [msg_id(n) for n in (1, 2, 3)], "all, in order, once"
    await carol.close()


def answers(port: int, prefix: bytes) -> bool:
    try:
        return redis_ask(port, "PING").startswith(prefix)
    except OSError:
        return False


def test_a_node_asking_a_sentinel_that_has_a_password_says_why_it_was_refused(tmp_path: Path) -> None:
    """The doc says the sentinels are asked without a password; an operator who gave them one must read
    the sentinel's refusal in the node's error, not 'no primary named' (what it said before)."""
    port = restartable_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nrequirepass sentinel-password\n"
        f"sentinel monitor mymaster 127.0.0.1 {restartable_port()} 2\n"
    )
    sentinel = subprocess.Popen([require_redis(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        until("the sentinel answers", lambda: answers(port, b"-NOAUTH"), 10.0)
        node = ServerProcess(None, ["--redis", f"redis+sentinel://127.0.0.1:{port}/mymaster/0", "--plaintext"])
        code = node.proc.wait(30)
        node.kill()
    finally:
        sentinel.kill()
        sentinel.wait(10)
    assert code != 0
    assert f"127.0.0.1:{port}: refused SENTINEL get-master-addr-by-name (NOAUTH" in node.stderr, node.stderr
