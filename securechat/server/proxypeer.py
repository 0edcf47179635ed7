"""The asyncio shell that reads a trusted balancer's PROXY header before the peer sees any byte.

:class:`HeaderFirst` is the protocol of a socket accepted while ``--proxy-protocol-from`` is set.
From an address outside those networks it hands the socket to its
:class:`~securechat.server.transport.Peer` at once (a header from there is just bytes that
are not TLS: ``tls_required``). From inside them the header must come first
(:mod:`~securechat.server.proxyheader`): its source address becomes the peer's, for
admission, every per-address bound and the log, and the bytes after it go to the peer. A
connection without a valid header, or whose header does not complete within the handshake
timeout, is closed without a byte written. At most ``--max-connections`` connections wait for
their header at once; past that the next one is closed at once.
A connection whose address is unknown (reset before uvloop accepted it, as HAProxy's health
checks are) is closed: it cannot be told trusted or not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import BadProxyHeader
from .proxyheader import NeedMore, Network, parse_proxy_header, trusted

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")


class Waiting:
    """The connections from trusted networks whose header has not come yet, across the server."""

    def __init__(self, networks: tuple[Network, ...], timeout: float, limit: int) -> None:
        self.networks = networks
        self.timeout = timeout
        self.limit = limit
        self.count = 0


class HeaderFirst(asyncio.Protocol):
    """Until the header is read, the protocol of a socket; then the transport is handed to ``peer``."""

    def __init__(self, peer: Peer, waiting: Waiting) -> None:
        self.peer = peer
        self.waiting = waiting
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.balancer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        if not peername:  # reset before it was accepted (HAProxy's health checks end so): whose it was is unknown
            log.debug("a connection was gone before it was accepted: closed")
            transport.close()
            return
        host = str(peername[0])
        if not trusted(host, self.waiting.networks):
            transport.set_protocol(self.peer)
            self.peer.connection_made(transport)
            return
        self.balancer = f"{host}:{peername[1]}"
        waiting = self.waiting
        if waiting.count >= waiting.limit:
            log.info("connection %s: %d connections already wait for a PROXY header: closed", self.balancer, waiting.count)
            transport.close()
            return
        self.transport = transport  # type: ignore[assignment]
        waiting.count += 1
        self.timer = asyncio.get_running_loop().call_later(waiting.timeout, self._late)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.timer is None:
            return
        self.buffer += data
        try:
            header = parse_proxy_header(self.buffer)
        except BadProxyHeader as exc:
            self._drop(f"{exc}")
            return
        if isinstance(header, NeedMore):
            return
        self._stop_waiting()
        self.buffer = b""
        transport.set_protocol(self.peer)
        self.peer.connection_made(transport, header.source)
        if header.rest and not transport.is_closing():
            self.peer.data_received(header.rest)

    def eof_received(self) -> bool:
        self._drop("closed before its PROXY header", quiet=not self.buffer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()

    def _late(self) -> None:
        self.timer = None
        self.waiting.count -= 1
        self._drop("no PROXY header within the handshake timeout")

    def _drop(self, why: str, *, quiet: bool = False) -> None:
        self._stop_waiting()
        log.log(logging.DEBUG if quiet else logging.INFO, "connection %s from a trusted balancer: %s", self.balancer, why)
        if self.transport is not None:
            self.transport.abort()

    def _stop_waiting(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.waiting.count -= 1
