"""One TCP connection to the server, driving a :class:`~securechat.client.connection.ClientConnection`.

The asyncio half of the sans-I/O split: it reads bytes and hands them to the
connection object, and writes whatever that object queued. Every rule about what
the bytes mean lives in ``connection.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from typing import Any, Final

from .connection import ClientConnection, ConnectionEvent, Dropped

READ_CHUNK: Final = 65536


class LinkDropped(Exception):
    """The connection is unusable; ``str()`` says why (the session reconnects)."""


class Link:
    """A stream pair and the connection object it drives."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: ClientConnection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.connection = connection

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, connection: ClientConnection) -> Link:
        """Connect (nothing is written yet); raises ``OSError`` or ``TimeoutError``."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_CHUNK * 2), timeout
        )
        return cls(reader, writer, connection)

    def flush(self) -> None:
        """Write what the connection queued (nothing once the socket is closing)."""
        data = self.connection.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

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
        if not data:
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
