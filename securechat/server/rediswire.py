"""One connection to Redis: bytes in, hiredis replies (errors as values) out, in order.

:class:`Wire` is the socket both the command link (:class:`~securechat.server.resp.RedisLink`)
and the subscriber (:class:`~securechat.server.redisbus.RedisBus`) stand on; :func:`open_wire`
connects it where the address says (asking the sentinels first, if it names them).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import hiredis

if TYPE_CHECKING:
    from .resp import RedisAddress

log = logging.getLogger("securechat.server.redis")

CONNECT_TIMEOUT: Final = 3.0


class Wire(asyncio.Protocol):
    """One socket: bytes in, hiredis replies (errors as values) out, in order."""

    def __init__(self, on_reply: Callable[[Any], None], on_lost: Callable[[Wire], None]) -> None:
        self.reader = hiredis.Reader()
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self.on_reply(reply)
        except hiredis.ProtocolError:
            log.error("garbled reply from Redis: closing the connection")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()


async def open_wire(address: RedisAddress, wire: Wire) -> Wire:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if address.tls else None
    if address.path:
        await asyncio.wait_for(loop.create_unix_connection(lambda: wire, address.path), CONNECT_TIMEOUT)
    else:
        where = (address.host, address.port)
        if address.sentinels:  # after a failover the sentinels name the new primary
            from .sentinel import current_primary

            where = await current_primary(address)
        host = where[0] if address.tls else None
        opening = loop.create_connection(lambda: wire, *where, ssl=context, server_hostname=host)
        await asyncio.wait_for(opening, CONNECT_TIMEOUT)
    return wire
