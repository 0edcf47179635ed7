"""A server behind a balancer that sends the PROXY header (securechat/server/proxypeer.py; docs/protocol.md 2.3).

A real ChatServer in the test's process; the tests play the balancer: a socket from 127.0.0.1
that writes the header, then the client's bytes (TLS, or plaintext frames).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from securechat.crypto import public_key_pem
from securechat.protocol import encode_frame
from securechat.server import ChatServer
from securechat.server.proxyheader import V2_SIGNATURE
from securechat.tls import client_context
from tests.support.rawclient import RawClient, identity_key, running_server
from tests.support.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(60)
BALANCER = "127.0.0.1/32"


def header(source: str, port: int = 40000) -> bytes:
    """A v2 PROXY header for a client at ``source`` (IPv4) reaching 127.0.0.1:5000."""
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big") + b"\x13\x88"
    return V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body


async def via_balancer(server: ChatServer, first: bytes, *, tls: bool = False) -> RawClient:
    """A connection from 127.0.0.1 that writes ``first`` (a header), then speaks TLS or plaintext frames."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(first)
    sock.setblocking(False)
    ssl = {"ssl": client_context(), "server_hostname": "127.0.0.1"} if tls else {}
    reader, writer = await asyncio.wait_for(asyncio.open_connection(sock=sock, **ssl), 10)  # type: ignore[arg-type]
    return RawClient(reader, writer)


async def hello(client: RawClient, name: str) -> dict[str, Any]:
    await client.send_frame({"type": "hello", "version": 1, "name": name,
                             "pubkey": public_key_pem(identity_key(name).public_key())})  # fmt: skip
    return await client.recv()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    async with running_server(tmp_path / "s.db", tls=False, max_per_ip=1, proxy_protocol_from=BALANCER,
                              handshake_timeout=1.0) as srv:  # fmt: skip
        yield srv


async def test_the_per_address_connection_bound_counts_the_headers_address(server: ChatServer) -> None:
    """``--max-per-ip 1``: two clients behind the one balancer address are both served, a second one from
    the same client address is refused ``server_busy`` (fails if the socket's address is used)."""
    first = await via_balancer(server, header("10.0.0.1"))
    other = await via_balancer(server, header("10.0.0.2"))
    assert (await hello(first, "alice"))["type"] == "challenge"
    assert (await hello(other, "bob"))["type"] == "challenge"
    again = await via_balancer(server, header("10.0.0.1", 40001))
    frame = await again.recv()
    assert (frame["type"], frame["code"]) == ("error", "server_busy"), frame
    for c in (first, other, again):
        await c.close()


@pytest.mark.parametrize(
    "first",
    [
        encode_frame({"type": "hello", "version": 1, "name": "alice"}),  # no header: a client going round it
        b"PROXY TCP4 10.0.0.1 127.0.0.1 1 5000 and then some more\r\n",
        V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64),  # a length above the bound
    ],
    ids=["no-header", "bad-v1", "oversized-v2"],
)
async def test_a_trusted_connection_without_a_valid_header_is_closed_with_nothing_written(
    server: ChatServer, first: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "securechat.server")
    client = await via_balancer(server, first)
    assert await client.expect_closed(5.0) == []
    assert any("from a trusted balancer: " in r.getMessage() for r in caplog.records)
    assert server.session_names() == []  # never admitted


async def test_a_header_that_does_not_complete_is_dropped_at_the_handshake_timeout(server: ChatServer) -> None:
    client = await via_balancer(server, header("10.0.0.1")[:20])
    assert await client.expect_closed(5.0) == []  # handshake_timeout=1.0; not held open past it


async def test_a_header_from_an_address_not_listed_is_not_tls(tmp_path: Path) -> None:
    """From outside ``--proxy-protocol-from`` a header is not read: it is bytes that are not TLS."""
    async with running_server(tmp_path / "s.db", proxy_protocol_from="10.99.0.0/16") as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        client = RawClient(reader, writer)
        writer.write(header("10.0.0.1"))
        frame = await client.recv()
        assert (frame["type"], frame["code"]) == ("error", "tls_required"), frame
        await client.close()


async def test_over_tls_the_header_comes_first_and_the_node_logs_the_clients_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "securechat.server")
    async with running_server(tmp_path / "s.db", proxy_protocol_from=BALANCER, register_per_ip=1) as srv:
        alice = await via_balancer(srv, header("10.0.0.7", 4242), tls=True)
        await alice.login("alice")
        assert any("registered alice" in r.getMessage() and "from 10.0.0.7:4242" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        # --register-per-ip 1 applies to 10.0.0.7, not to the balancer: another client registers.
        bob = await via_balancer(srv, header("10.0.0.8"), tls=True)
        await bob.login("bob")
        # ...and a second name from 10.0.0.7 is refused.
        carol = await via_balancer(srv, header("10.0.0.7", 4243), tls=True)
        challenge = await carol.hello("carol", identity_key("carol"))
        assert carol.handshake is not None and not carol.handshake.receive_frame(challenge)
        await carol.send_raw(carol.handshake.data_to_send())
        refusal = await carol.recv()
        assert (refusal["type"], refusal["code"]) == ("error", "registration_limited"), refusal
        for c in (alice, bob, carol):
            await c.close()


async def test_bytes_after_the_header_in_the_same_read_reach_the_connection(server: ChatServer) -> None:
    hello_frame = encode_frame({"type": "hello", "version": 1, "name": "alice",
                                "pubkey": public_key_pem(identity_key("alice").public_key())})  # fmt: skip
    client = await via_balancer(server, header("10.0.0.1") + hello_frame)
    assert (await client.recv())["type"] == "challenge"
    await client.close()


async def test_connections_waiting_for_a_header_count_against_max_connections(tmp_path: Path) -> None:
    """With ``--max-connections 1`` one connection that has not sent its header yet holds the one slot for
    waiting: the next trusted connection is closed at once, not held until the handshake timeout."""
    async with running_server(tmp_path / "s.db", tls=False, max_connections=1, proxy_protocol_from=BALANCER,
                              handshake_timeout=30.0) as srv:  # fmt: skip
        waiting = await via_balancer(srv, b"")
        other = await via_balancer(srv, b"")
        assert await other.expect_closed(5.0) == []  # well before the 30 s handshake timeout
        await waiting.send_raw(header("10.0.0.1"))  # the first one goes on once its header comes
        assert (await hello(waiting, "alice"))["type"] == "challenge"
        await waiting.close()



def test_a_connection_reset_before_it_is_accepted_is_closed_not_taken_for_an_untrusted_one(tmp_path: Path) -> None:
    """HAProxy's health check sends its LOCAL header and resets at once; a node on uvloop that accepts it
    after the reset cannot learn its address. It is closed quietly, not taken for a client from outside
    the networks (whose header is answered ``tls_required`` and logged as a client that does not speak
    TLS, every 2 s per node). The node is stopped (SIGSTOP) while the connection comes and goes."""
    pytest.importorskip("uvloop")  # the default loop takes the address from accept(), which still has it
    node = ServerProcess(tmp_path / "s.db", ["--proxy-protocol-from", BALANCER, "--log-level", "debug"])
    try:
        port = node.wait_listening()
        node.proc.send_signal(signal.SIGSTOP)
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(V2_SIGNATURE + b"\x20\x00\x00\x00")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, before the node accepts
        finally:
            node.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not any("gone before it was accepted" in line for line in node.lines):
            assert time.monotonic() < deadline, node.stderr
            time.sleep(0.02)
        assert not any("does not speak TLS" in line for line in node.lines), node.stderr
    finally:
        node.kill()


async def test_a_local_header_is_served_with_the_balancers_address(server: ChatServer) -> None:
    """``LOCAL`` (a health check's): the connection is served and counted under the balancer's own address,
    so with ``--max-per-ip 1`` a second one is refused ``server_busy`` while a client's header still passes."""
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    check = await via_balancer(server, local)
    assert (await hello(check, "alice"))["type"] == "challenge"
    again = await via_balancer(server, local)
    frame = await again.recv()
    assert (frame["type"], frame["code"]) == ("error", "server_busy"), frame
    client = await via_balancer(server, header("10.0.0.1"))
    assert (await hello(client, "bob"))["type"] == "challenge"
    for c in (check, again, client):
        await c.close()
