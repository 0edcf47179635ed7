"""The agent port (securechat/server/agent.py): one line for the load balancer, ``up`` or ``down #why``.

On one node with SQLite, in this process; on Redis, real nodes with one of them behind a proxy
that cuts it from Redis and heals (tests/support/partition.py): it says ``down`` while cut, the
other node ``up`` throughout, and it says ``up`` again after the heal, by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest

from securechat.server.agent import LINGER, MAX_OPEN, agent_line
from securechat.server.config import ServerConfig
from securechat.server.nodewatch import CUT_OFF_AFTER
from tests.support.docvector import doc_example
from tests.support.nodes import Nodes
from tests.support.partition import partition_proxy
from tests.support.ports import restartable_port
from tests.support.rawclient import running_server
from tests.support.redisproc import RedisProcess

pytestmark = pytest.mark.timeout(120)


def test_the_line_is_up_or_down_with_one_printable_reason() -> None:
    assert agent_line(None) == b"up\n"
    assert agent_line("cut off from Redis") == b"down #cut off from Redis\n"
    # A reason is ours, but whatever it held, the balancer reads one line of printable ASCII.
    assert agent_line("a\nb\rc\x1b[2Jd\u00e9") == b"down #a b c [2Jd \n"


async def ask(port: int, send: bytes = b"", within: float = 10.0) -> bytes:
    """Everything the agent port says to one connection until it closes it (``send`` first: an agent-send)."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if send:
                writer.write(send)
            return await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def until_said(port: int, starts: bytes, within: float) -> tuple[bytes, float]:
    """Ask until the answer starts with ``starts``: the answer and how long it took (fails at ``within``)."""
    began = time.monotonic()
    said = b""
    while time.monotonic() - began < within:
        try:
            said = await ask(port)
        except ConnectionError:  # closed unanswered (past MAX_OPEN): a reset
            said = b""
        if said.startswith(starts):
            return said, time.monotonic() - began
        await asyncio.sleep(0.2)  # HAProxy asks every agent-inter (2 s by default); this asks faster
    raise AssertionError(f"the agent port still said {said!r} after {within} s")


async def test_one_node_on_sqlite_says_up_and_closes_even_after_an_agent_send(tmp_path: Path) -> None:
    port = restartable_port()
    async with running_server(tmp_path / "s.db", tls=False, agent_port=port):
        assert await ask(port) == b"up\n"
        # HAProxy's agent-send: the string is dropped unread, and the line still comes whole. (The half-close
        # that keeps a reset from erasing it at the balancer, RFC 7230 section 6.6, is not what this checks: on
        # loopback the line came through a close at once too.)
        assert await ask(port, b"backend/node1\n" * 100) == b"up\n"


async def test_connections_left_open_are_bounded_and_ended_after_the_linger(tmp_path: Path) -> None:
    """MAX_OPEN connections whose other end never closes take the port's share: one more is closed
    unanswered. The node ends each held one LINGER seconds after its line, and the port answers again
    while the test still holds them (without the linger, or without counting them off, it never does)."""
    port = restartable_port()
    async with running_server(tmp_path / "s.db", tls=False, agent_port=port):
        began = time.monotonic()  # before the first: each one's linger starts after it
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_OPEN)]
        for reader, _ in held:
            assert await asyncio.wait_for(reader.read(), 5.0) == b"up\n"  # the line, then the node's half-close
        try:
            past = await ask(port)
        except ConnectionError:
            past = b""
        assert past == b"", f"a connection past MAX_OPEN was answered {past!r}"
        await until_said(port, b"up\n", LINGER + 10.0)
        assert time.monotonic() - began >= LINGER - 0.1, "answered again before the held ones lingered out"
        for _, writer in held:
            writer.close()


async def test_a_node_cut_from_redis_says_down_and_up_again_after_the_heal(redis: RedisProcess, nodes: Nodes) -> None:
    a_agent, b_agent = restartable_port(), restartable_port()
    async with partition_proxy(redis.port) as proxy:
        a = ["--agent-port", str(a_agent)]
        await asyncio.to_thread(lambda: nodes.start(*a, redis_url=f"redis://127.0.0.1:{proxy.port}/0"))
        await asyncio.to_thread(nodes.start, "--agent-port", str(b_agent))
        assert (await ask(a_agent), await ask(b_agent)) == (b"up\n", b"up\n")
        proxy.cut()
        said, took = await until_said(a_agent, b"down", 30.0)
        assert said == agent_line(f"cut off from Redis: its own heartbeat not heard back for {CUT_OFF_AFTER:.0f} s")
        assert said == doc_example("agent-down").encode() + b"\n", "docs/protocol.md's example is not what a node says"
        # The last beat heard came at most a second or so before the cut: down at once would be a bug.
        assert took >= CUT_OFF_AFTER - 2.0, f"said down {took:.1f} s after the cut: before its heartbeats lapsed"
        assert await ask(b_agent) == b"up\n", "the node still on Redis said down"
        await proxy.heal()
        await until_said(a_agent, b"up\n", 30.0)
        assert await ask(b_agent) == b"up\n"


def test_the_agent_port_must_differ_from_the_servers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="agent port"):
        ServerConfig(port=5000, agent_port=5000, db_path=tmp_path / "s.db").validate()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match="agent port"):
            asyncio.run(_start(tmp_path, busy))


async def _start(tmp_path: Path, agent_port: int) -> None:
    async with running_server(tmp_path / "t.db", tls=False, agent_port=agent_port):
        pass
