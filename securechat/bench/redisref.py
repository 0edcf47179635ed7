"""The Redis pub/sub reference: the bench's payloads published to channels and read by subscribers.

RESP is spoken directly; publishers pipeline under a window of replies, and
subscribers only count the ``message`` markers they read.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .loadclient import Route, build_route
from .worker import sleep_until

if TYPE_CHECKING:  # the worker runs this mode; only the type goes this way
    from .worker import Worker

_REDIS_MESSAGE = b"$7\r\nmessage\r\n"


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisSubscriber(asyncio.Protocol):
    def __init__(self, worker: Worker, channel: bytes) -> None:
        self.worker = worker
        self.channel = channel
        self.tail = b""
        self.subscribed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(_resp(b"SUBSCRIBE", self.channel))

    def data_received(self, data: bytes) -> None:
        chunk = self.tail + data
        if not self.subscribed.done() and b"subscribe" in chunk:
            self.subscribed.set_result(None)
        count = chunk.count(_REDIS_MESSAGE)
        if count and self.worker.measuring:
            self.worker.redis_received += count
        # Keep a short tail so a marker split across two reads is still counted once.
        keep = len(_REDIS_MESSAGE) - 1
        tail = chunk[-keep:]
        self.tail = tail if _REDIS_MESSAGE[:1] in tail else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.dropped += 1


class RedisPublisher(asyncio.Protocol):
    def __init__(self, worker: Worker, channel: bytes, payload: Route, uid: int) -> None:
        self.worker = worker
        self.channel = channel
        self.payload = payload
        self.uid = uid
        self.seq = 0
        self.inflight = 0
        self.sending = False
        self.transport: asyncio.Transport | None = None
        self.head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.inflight -= data.count(b"\r\n")
        if self.sending:
            self.top_up()

    def top_up(self) -> None:
        room = self.worker.window - self.inflight
        if room <= 0 or self.transport is None:
            return
        self.inflight += room
        out = []
        prefix = b"%08x" % self.uid
        size = len(self.payload.head) + 32 + len(self.payload.tail)
        for _ in range(room):
            self.seq += 1
            out.append(
                b"%s$%d\r\n%s\r\n" % (self.head, size, self.payload.frame(prefix + b"%024x" % self.seq))
            )
        self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def run_redis(worker: Worker, job: dict[str, Any], conn: Connection) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = job["host"], job["port"]
    subs: list[RedisSubscriber] = []
    pubs: list[RedisPublisher] = []
    key = worker.keys[0]
    for pair in job["pairs"]:
        channel = pair["receiver"].encode()
        subs.append(await _connect(loop, RedisSubscriber(worker, channel), host, port))
    await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in subs)), 10)
    for pair in job["pairs"]:
        payload = build_route(key, pair["sender"], pair["receiver"], key.public_key())
        channel = pair["receiver"].encode()
        pubs.append(await _connect(loop, RedisPublisher(worker, channel, payload, pair["uid"]), host, port))
    conn.send(("ready", {"connected": len(subs) + len(pubs), "failed": 0, "failures": []}))
    go = await loop.run_in_executor(None, conn.recv)
    await sleep_until(go["t_go"])
    for pub in pubs:
        pub.sending = True
        pub.top_up()
    await worker.measuring_window(go)
    for pub in pubs:
        pub.sending = False
    await asyncio.sleep(0.05)
    conn.send(("drained", {}))
    await loop.run_in_executor(None, conn.recv)
    transports = [p.transport for p in subs] + [p.transport for p in pubs]
    for transport in transports:
        if transport is not None:
            transport.close()
    return worker.result()


_P = TypeVar("_P", bound=asyncio.Protocol)


async def _connect(loop: asyncio.AbstractEventLoop, protocol: _P, host: str, port: int) -> _P:
    await loop.create_connection(lambda: protocol, host, port)
    return protocol
