"""A TCP proxy on 127.0.0.1 that records every byte: what the network between a client and a server sees.

Each accepted connection is relayed to the target as it is, byte for byte, and
both directions are appended to :attr:`RecordingProxy.upstream` (client to
server) and :attr:`RecordingProxy.downstream` (server to client), per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field


@dataclass
class Recording:
    """The bytes of one proxied connection, each direction in order."""

    upstream: bytearray = field(default_factory=bytearray)
    downstream: bytearray = field(default_factory=bytearray)


class RecordingProxy:
    """Listens on 127.0.0.1; every connection goes on to ``target_port``, recorded."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.recordings: list[Recording] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def all_bytes(self) -> Iterator[bytes]:
        for rec in self.recordings:
            yield bytes(rec.upstream)
            yield bytes(rec.downstream)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recording = Recording()
        self.recordings.append(recording)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer, recording.upstream)),
            asyncio.ensure_future(_pump(up_reader, writer, recording.downstream)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray) -> None:
    try:
        while data := await reader.read(65536):
            record += data
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


@contextlib.asynccontextmanager
async def recording_proxy(target_port: int) -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def tls_records(stream: bytes) -> list[tuple[int, int]]:
    """``(content type, length)`` of each TLS record in ``stream`` (a partial last record is left out)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos + 5 <= len(stream):
        kind, length = stream[pos], int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if pos + 5 + length > len(stream):
            break
        out.append((kind, length))
        pos += 5 + length
    return out
