"""docs/deployment.md's HAProxy example ("A load balancer in front"), run as the doc gives it.

The configuration is read out of the doc itself (tests/support/haproxy.py), its addresses moved to
free 127.0.0.1 ports, and run by a real ``haproxy`` in front of real ``securechat-server --redis``
nodes, as many as the example has ``server`` lines, sharing one TLS identity as the doc says a load
balancer needs, on a real ``redis-server`` with its append-only file. Skipped without ``haproxy``
(.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from securechat.tls import client_context
from tests.support.acks import delivered_acks
from tests.support.deploydoc import section
from tests.support.haproxy import (
    SECTION,
    HAProxy,
    doc_example,
    haproxy_running,
    on_localhost,
    require_haproxy,
    server_names,
    without_agent,
)
from tests.support.jsonclient import JsonClientProcess
from tests.support.nodes import Nodes, login_outcome, stored_count
from tests.support.partition import partition_proxy
from tests.support.ports import restartable_port
from tests.support.rawclient import RawClient, envelope, msg_id
from tests.support.redisproc import RedisProcess
from tests.support.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")
BALANCER = "127.0.0.1"  # where haproxy connects to the nodes from
DOC_BALANCER = "10.0.0.10/32"  # the doc's balancer


def send_frame(n: int) -> dict[str, object]:
    return {"type": "send", "to": "bob", "envelope": envelope("alice", "bob", msg_id(n))}


async def messages(client: RawClient, count: int) -> list[str]:
    return [(await client.recv_type("message", 15.0))["envelope"]["id"] for _ in range(count)]


async def logged_in(front: int, name: str, source: str = "127.0.0.1") -> RawClient:
    """``name`` logged in through the balancer at ``front``, connecting from the address ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front, ssl=client_context(), local_addr=(source, 0))
    client = RawClient(reader, writer)
    await client.login(name)
    return client


async def shared_identity_nodes(nodes: Nodes, redis_urls: list[str], agents: list[int] | None = None) -> list[ServerProcess]:
    """A node per URL (``""``: the test's Redis itself), all with one TLS identity, started at once, each
    reading the PROXY header of the balancer (127.0.0.1 here) as the doc's nodes do, and with an agent
    port of ``agents`` in turn if given."""
    assert f"--proxy-protocol-from {DOC_BALANCER}" in section(SECTION), "the doc's nodes no longer read the header"
    nodes.identity("shared")  # made once, before the nodes read it
    start = functools.partial(nodes.start, "--proxy-protocol-from", f"{BALANCER}/32", identity="shared")
    agent_args = [["--agent-port", str(port)] for port in agents] if agents else [[] for _ in redis_urls]
    started = [asyncio.to_thread(start, *extra, redis_url=url) for url, extra in zip(redis_urls, agent_args, strict=True)]
    return list(await asyncio.gather(*started))


@contextlib.asynccontextmanager
async def doc_balancer(nodes: Nodes, tmp_path: Path) -> AsyncIterator[tuple[list[str], list[ServerProcess], int, HAProxy]]:
    """The doc's example running in front of a node per ``server`` line, on the test's Redis, each with its
    agent port: (the server names, the nodes in that order, the balancer's port, the balancer)."""
    require_haproxy()
    config = doc_example()
    names = server_names(config)
    agents = [restartable_port() for _ in names]
    started = await shared_identity_nodes(nodes, [""] * len(names), agents)
    front = restartable_port()
    with haproxy_running(on_localhost(config, front, [node.port for node in started], agents), tmp_path) as proxy:
        yield names, started, front, proxy


async def until(what: str, probe: Callable[[], Awaitable[T]], wanted: Callable[[T], bool], within: float = 15.0) -> T:
    """``await probe()`` again until ``wanted`` says yes to it (bounded); its last answer."""
    deadline = time.monotonic() + within
    while not wanted(got := await probe()):
        assert time.monotonic() < deadline, f"not within {within} s: {what} (last: {got!r})"
        await asyncio.sleep(0.02)
    return got


@pytest.mark.slow
async def test_the_docs_haproxy_example_moves_a_client_off_a_killed_node_with_its_backlog_once(
    redis: RedisProcess, nodes: Nodes, tmp_path
) -> None:
    """bob's node is killed (-9) behind HAProxy: his connection is closed, not left hanging; every
    connection made right after the kill reaches a live node with the shared identity (the dead one is
    not yet marked down); bob logs in again through the same address and gets the message he had been
    handed and had not confirmed, and the three queued meanwhile, once each, in order."""
    async with doc_balancer(nodes, tmp_path) as (names, started, front, proxy):
        alice = await logged_in(front, "alice", source="127.0.0.2")
        (registered,) = [line for node in started for line in node.lines if "registered alice" in line]
        assert registered.split(" from ")[1].startswith("127.0.0.2:"), "the node sees the balancer's address"
        with pytest.raises((ConnectionError, ssl.SSLError)):  # from the balancer's address, without the header
            await (await RawClient.connect(started[0].port)).close()
        alices = {name for name, n in proxy.sessions().items() if n}
        bob = await logged_in(front, "bob")
        pinned = bob.server_identity
        bobs = [name for name, n in proxy.sessions().items() if n and name not in alices]
        assert len(bobs) == 1 and alices.isdisjoint(bobs), f"alice on {alices}, bob on {bobs}: not spread"
        await alice.send_frame(send_frame(0))
        assert await messages(bob, 1) == [msg_id(0)]  # handed out, not confirmed
        assert started[names.index(bobs[0])].kill() == -9
        await bob.expect_closed(10.0)
        for _ in names:  # as many connections as nodes: in turn, one would go to the dead node
            probe = await RawClient.connect(front)
            assert probe.server_identity == pinned, "a node behind the address presents another identity"
            await probe.close()
        for n in (1, 2, 3):
            await alice.send_frame(send_frame(n))
        await until("bob's 4 stored", lambda: asyncio.to_thread(stored_count, redis, "bob"), lambda n: n >= 4)
        bob = await logged_in(front, "bob")
        assert bob.server_identity == pinned
        assert proxy.sessions()[bobs[0]] == 0, "bob's new session is on the killed node?"
        assert await messages(bob, 4) == [msg_id(n) for n in range(4)], "the backlog, once, in order"
        for n in range(4):
            await bob.send_frame({"type": "received", "id": msg_id(n), "from": "alice"})
        assert {ack["id"] for ack in await delivered_acks(alice, 4)} == {msg_id(n) for n in range(4)}
        await alice.send_frame(send_frame(4))
        assert await messages(bob, 1) == [msg_id(4)], "nothing handed out twice before the next message"
        for c in (alice, bob):
            await c.close()


@pytest.mark.slow
async def test_a_node_cut_from_redis_behind_the_docs_haproxy_gets_only_its_share_of_logins(
    redis: RedisProcess, nodes: Nodes, tmp_path
) -> None:
    """Without the doc's agent check (a balancer with a TCP health check only), a balancer cannot see that a
    node lost Redis: it still accepts, answers logins ``unavailable``, and the client tries again through
    the balancer. With ``leastconn`` that node, having turned everyone away, holds the fewest connections and
    gets every retry; the doc's balancing must give it no more than its share (each other node holds one
    client)."""
    require_haproxy()
    config = without_agent(doc_example())
    names = server_names(config)
    async with contextlib.AsyncExitStack() as stack:
        links = [await stack.enter_async_context(partition_proxy(redis.port)) for _ in names]
        started = await shared_identity_nodes(nodes, [f"redis://127.0.0.1:{link.port}/0" for link in links])
        front = restartable_port()
        proxy = stack.enter_context(haproxy_running(on_localhost(config, front, [n.port for n in started]), tmp_path))
        for name in ("alice", "bob", "carol", "erin", "frank")[: len(names) - 1]:  # one on each node but one
            stack.push_async_callback((await logged_in(front, name)).close)
        (idle,) = [i for i, name in enumerate(names) if proxy.sessions()[name] == 0]
        await links[idle].close()  # its Redis connections reset, new ones refused
        cut = started[idle].port  # once it noticed, it answers logins `unavailable`
        probe = functools.partial(login_outcome, cut, "dave", "dave", "127.0.0.3")  # not the balancer: no header
        await until("the node refuses", probe, lambda got: got == "unavailable")
        outcomes = [await login_outcome(front, "dave", "dave") for _ in range(2 * len(names))]
        up = sum(row["status"] == "UP" for row in proxy.servers().values())  # a loaded machine may fail a check
    assert set(outcomes) <= {"welcome", "unavailable"}, outcomes
    share = -(-len(outcomes) // up)
    assert outcomes.count("unavailable") <= share, f"the node without Redis got more than 1/{up}: {outcomes}"


@pytest.mark.slow
async def test_the_docs_agent_check_takes_a_node_cut_from_redis_out_of_rotation_and_back_after_the_heal(
    redis: RedisProcess, nodes: Nodes, tmp_path
) -> None:
    """With the doc's ``agent-check``, the node cut from Redis says ``down`` on its agent port and HAProxy
    marks it DOWN: every login through the balancer is welcomed by another node, none answered
    ``unavailable``. Once the cut heals the node says ``up`` and HAProxy marks it UP again, by itself."""
    require_haproxy()
    config = doc_example()
    names = server_names(config)
    agents = [restartable_port() for _ in names]
    async with contextlib.AsyncExitStack() as stack:
        links = [await stack.enter_async_context(partition_proxy(redis.port)) for _ in names]
        started = await shared_identity_nodes(nodes, [f"redis://127.0.0.1:{link.port}/0" for link in links], agents)
        front = restartable_port()
        proxy = stack.enter_context(haproxy_running(on_localhost(config, front, [n.port for n in started], agents), tmp_path))
        cut = names[-1]
        status = lambda: asyncio.to_thread(lambda: proxy.servers()[cut]["status"])
        links[-1].cut()
        await until("HAProxy marks the cut node DOWN", status, lambda got: got.startswith("DOWN"), within=30.0)
        outcomes = [await login_outcome(front, "dave", "dave") for _ in range(2 * len(names))]
        assert outcomes == ["welcome"] * len(outcomes), outcomes
        await links[-1].heal()
        await until("HAProxy marks the healed node UP", status, lambda got: got == "UP", within=30.0)


@pytest.mark.slow
async def test_with_redis_down_the_docs_balancer_closes_new_connections_and_the_client_signs_in_once_it_is_back(
    redis: RedisProcess, nodes: Nodes, tmp_path
) -> None:
    """Redis down: every node's agent says ``down`` and HAProxy, with no server left, closes each new
    connection at once. A real client (``--json``) shows why, ``closed the connection during the TLS
    handshake``, and keeps trying with its backoff; once Redis is back it signs in by itself."""
    async with doc_balancer(nodes, tmp_path) as (names, _, front, proxy):
        states = lambda: asyncio.to_thread(lambda: [server["status"] for server in proxy.servers().values()])
        await until("HAProxy marks every node UP", states, lambda got: got == ["UP"] * len(names), within=30.0)
        redis.kill()
        await until("HAProxy marks every node DOWN", states, lambda got: all(s.startswith("DOWN") for s in got), within=30.0)
        dave = JsonClientProcess("dave", front, tmp_path / "dave")
        try:
            said = "closed the connection during the TLS handshake (a load balancer does so while none of its nodes is up)"
            closed = lambda event: said in event.get("detail", "")
            retries = lambda events: [e for e in events if e.get("state") == "reconnecting"]
            # Closed, tried again after its backoff, and closed again.
            await asyncio.to_thread(dave.wait_until, lambda events: len(retries(events)) >= 2, 30.0, "two retries")
            tried = retries(dave.snapshot())
            assert all(closed(e) for e in tried), tried  # never a node's `unavailable`: no node was given it
            redis.restart()
            ready = await asyncio.to_thread(dave.wait_for, lambda e: e.get("event") == "ready", 90.0)
        finally:
            dave.close()
        assert ready["new"] is True, ready
