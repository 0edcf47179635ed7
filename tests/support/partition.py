"""A TCP proxy on 127.0.0.1 that a test can cut off and heal: a network partition between one node and Redis.

While cut, the bytes of open connections are dropped in both directions (the
sockets stay open, as when packets are lost: neither end hears a reset) and new
connections are refused (the listening socket is closed). :meth:`heal` listens
again on the same port and resets the connections that were open during the
cut, as the first packet after a partition does when the other end has given
up on them.

:meth:`lose_replies_after` makes a command applied whose reply is lost: the
connection whose client sends the given bytes has its command relayed and
every later reply dropped, until :meth:`reset_muted` resets it (the client
then sees a lost connection, not knowing the command was applied).

:meth:`garble_once` changes bytes Redis sends once (the same length, so the
reply still reads as RESP): a node hears a poke as a buggy node would publish it.

:meth:`hold_from` holds what a node sends once it sends the given bytes (a
publish, say), until :meth:`release`: Redis runs it late, after what other
nodes sent meanwhile, as when that node is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class PartitionProxy:
    """Relays connections on :attr:`port` to ``target_port`` until :meth:`cut`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._mute_on: bytes | None = None
        self._muted: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []  # their replies are dropped
        self._garble: tuple[bytes, bytes] | None = None
        self.garbled = 0  # how many times :meth:`garble_once` took effect
        self._hold_on: bytes | None = None
        self._holding: tuple[tuple[asyncio.StreamWriter, asyncio.StreamWriter], list[bytes]] | None = None
        self.holding = asyncio.Event()  # set once :meth:`hold_from` took effect, until :meth:`release`

    def lose_replies_after(self, marker: bytes) -> None:
        """The next connection whose client sends ``marker`` gets no reply from then on (see the module)."""
        self._mute_on = marker

    def garble_once(self, find: bytes, replace: bytes) -> None:
        """The next bytes from Redis to a node that hold ``find`` have it replaced by ``replace`` (as long)."""
        assert len(find) == len(replace), "RESP says each string's length: a garble keeps it"
        self._garble = (find, replace)

    def hold_from(self, marker: bytes) -> None:
        """The next connection whose client sends ``marker``: that and all it sends after are held back from Redis,
        in order, until :meth:`release` (its replies still come)."""
        self._hold_on = marker

    def release(self) -> int:
        """Relay what :meth:`hold_from` held, in order, and stop holding; returns how many bytes."""
        holding, self._hold_on, self._holding = self._holding, None, None
        self.holding.clear()
        if holding is None:
            return 0
        (_, up), chunks = holding
        data = b"".join(chunks)
        up.write(data)
        return len(data)

    def reset_muted(self) -> int:
        """Reset the connections whose replies were dropped (both ends); returns how many."""
        muted, self._muted = self._muted, []
        for down, up in muted:
            down.transport.abort()
            up.transport.abort()
        return len(muted)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self.cut_off = True
        if self._server is not None:
            self._server.close()

    async def heal(self) -> None:
        stale, self._pairs = self._pairs, []
        for down, up in stale:
            for writer in (down, up):
                writer.transport.abort()
        self.cut_off = False
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for down, up in self._pairs:
            down.transport.abort()
            up.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.append(pair)
        for pump in (self._pump(reader, up_writer, pair), self._pump(up_reader, writer, pair)):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    ) -> None:
        try:
            while data := await reader.read(65536):
                if writer is pair[1] and self._hold_on is not None and self._hold_on in data and self._holding is None:
                    self._holding = (pair, [])
                    self.holding.set()
                if writer is pair[1] and self._holding is not None and self._holding[0] is pair:
                    self._holding[1].append(data)  # relayed by release(), in order
                    continue
                if writer is pair[1] and self._mute_on is not None and self._mute_on in data:
                    self._mute_on = None
                    self._muted.append(pair)  # relayed, and Redis's answers to it dropped
                elif writer is pair[0] and pair in self._muted:
                    continue
                elif writer is pair[0] and self._garble is not None and self._garble[0] in data:
                    data, self._garble = data.replace(*self._garble, 1), None
                    self.garbled += 1
                if not self.cut_off:  # lost in the partition
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.cut_off:  # a close during the cut is lost too; heal() resets the pair
                writer.transport.abort()


@contextlib.asynccontextmanager
async def partition_proxy(target_port: int) -> AsyncIterator[PartitionProxy]:
    proxy = PartitionProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
