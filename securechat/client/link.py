"""One TCP connection to the server, driving a :class:`~securechat.client.connection.ClientConnection`.

The asyncio half of the sans-I/O split: it reads bytes and hands them to the
connection object, and writes whatever that object queued. Every rule about what
the bytes mean lives in ``connection.py``. Over TLS (the default, docs/protocol.md
section 2.1) the bytes go through a :class:`~securechat.tls.TlsChannel`: the
handshake completes and :class:`~securechat.client.servers.ServerTrust` accepts the
server's identity before the first frame leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from typing import Any, Final

from ..errors import ServerRefused, TlsFailed, WrongTransport
from ..tls import TlsChannel, client_context, pad_write, plaintext_frame, sni_name
from .connection import ClientConnection, ConnectionEvent, Dropped
from .servers import ServerTrust, server_address

READ_CHUNK: Final = 65536


class LinkDropped(Exception):
    """The connection is unusable; ``str()`` says why (the session reconnects)."""


class Link:
    """A stream pair, the connection object it drives and, over TLS, the channel between them."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: ClientConnection,
        tls: TlsChannel | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.connection = connection
        self.tls = tls
        self.pinned: str | None = None  # the server identity pinned by this connection (first use)

    @classmethod
    async def open(
        cls, host: str, port: int, timeout: float, connection: ClientConnection, trust: ServerTrust | None = None
    ) -> Link:
        """Connect (nothing is written yet); over TLS, also shake hands and check the server's identity.

        Raises ``OSError`` or ``TimeoutError`` (worth retrying), or :class:`ServerRefused` (not).
        """
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_CHUNK * 2), timeout
        )
        if trust is None:
            return cls(reader, writer, connection)
        tls, identity, new = await open_tls(reader, writer, host, port, timeout, trust)
        connection.server_identity = identity
        link = cls(reader, writer, connection, tls)
        link.pinned = identity.hex() if new else None
        return link

    def flush(self) -> None:
        """Write what the connection queued (nothing once the socket is closing)."""
        data = self.connection.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(self.tls.encrypt(pad_write(data)) if self.tls is not None else data)

    def send(self, frame: Mapping[str, Any]) -> None:
        self.connection.send(frame)
        self.flush()

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    async def read_events(self, timeout: float | None) -> list[ConnectionEvent]:
        """The events of the next bytes; raises :class:`LinkDropped` after ``timeout`` s of silence."""
        try:
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout)
        except TimeoutError:
            raise LinkDropped(f"nothing heard from the server for {timeout:g} s") from None
        if data and self.tls is not None:
            try:
                data = self.tls.receive(data)
            except TlsFailed as exc:
                raise LinkDropped(str(exc)) from None
            if not data and not self.tls.closed:
                return []  # TLS records without application bytes
        if not data:  # end of stream (or the server's close_notify)
            return self.connection.receive_eof() or [Dropped("the server closed the connection")]
        events = self.connection.receive_data(data)
        self.flush()  # the handshake's answers
        return events

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def open_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    timeout: float,
    trust: ServerTrust,
    *,
    pin: bool = True,
) -> tuple[TlsChannel, bytes, bool]:
    """Shake hands over a new stream pair and check the server's identity (closing it on failure).

    Returns the channel, the identity ``auth`` binds to, and whether it was pinned just now.
    """
    server = server_address(host, port)
    tls = TlsChannel(client_context(), server_side=False, server_hostname=sni_name(host))
    try:
        await asyncio.wait_for(_handshake(reader, writer, tls, server), timeout)
        identity, new = trust.check(server, tls.peer_certificate(), pin=pin)
    except BaseException:
        writer.close()
        raise
    return tls, identity, new


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: TlsChannel, server: str) -> None:
    """Run the TLS handshake; a failure says which end speaks what (docs/protocol.md section 2.1)."""
    while True:
        writer.write(tls.data_to_send())
        if tls.ready:
            return
        data = await reader.read(READ_CHUNK)
        if not data:
            raise ConnectionResetError(
                f"the server at {server} closed the connection during the TLS handshake"
                " (a load balancer does so while none of its nodes is up)"
            )
        try:
            tls.receive(data)
        except TlsFailed as exc:
            if plaintext_frame(exc.first_bytes) is not None:
                raise WrongTransport(
                    server,
                    "plaintext",
                    f"the server at {server} speaks plaintext securechat, not TLS "
                    "(connect with --plaintext only if you trust every network on the way)",
                ) from None
            raise ServerRefused(server, f"the TLS handshake with the server at {server} failed: {exc.detail}") from None


def raise_if_dropped(event: ConnectionEvent) -> None:
    """End the connection's handling at a :class:`Dropped` event."""
    if isinstance(event, Dropped):
        raise LinkDropped(event.reason)


def why_not_connected(exc: OSError | TimeoutError, timeout: float) -> str:
    """Why a connect failed, in the words a user can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running, and on this port?)"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return exc.strerror or str(exc) or type(exc).__name__
