"""The relay's hot path in one process, over fake transports: repeatable, and profilable with cProfile.

``python -m securechat.bench.hotpath [--pairs 100] [--window 20] [--messages 200000] [--profile FILE]``

A real :class:`~securechat.server.ChatServer` (SQLite store in a temporary
directory) gets its peers from its own protocol factory, each connected to a
:class:`FakeTransport` that keeps what the server writes. Clients log in with
the client library's handshake; then, round after round, every sender's
``window`` ``send`` frames arrive in one read, the loop runs once (the server
flushes), each receiver's ``message`` frames are answered with ``received``
in one read, and the ``ack`` frames are counted. Only the server's own calls
are timed (``data_received`` and the loop iteration that flushes), in CPU time
of this process: the figure is the Python cost per message delivered, without
the kernel's share of the socket calls and without scheduling noise. Every
frame the server writes is decoded by the client's strict decoder and
checked as a client checks it, outside the timed part.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import crypto
from ..client.connection import ClientConnection, Welcomed
from ..protocol import FrameDecoder, validate_server_frame
from ..server import ChatServer, ServerConfig
from .loadclient import build_route, received_frame

SETTLE_ROUNDS = 500  # rounds without sends that the last acks may take, each after a pause of SETTLE_PAUSE
SETTLE_PAUSE = 0.01


class FakeTransport:
    """Enough of ``asyncio.Transport`` for a server peer; keeps every write."""

    _ports = iter(range(10_000, 60_000))

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self._peername = ("127.0.0.1", next(self._ports))

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peername if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeClient:
    """One logged-in client: its server peer, its transport, and a strict decoder for what it gets."""

    def __init__(self, server: ChatServer, name: str, key: crypto.PrivateKey) -> None:
        self.name = name
        self.key = key
        self.conn = ClientConnection(name, key)
        self.transport = FakeTransport()
        self.peer = server.new_peer()
        self.peer.connection_made(self.transport)  # type: ignore[arg-type]
        self.decoder = FrameDecoder()

    async def login(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        self.peer.data_received(self.conn.data_to_send())
        while time.monotonic() < deadline:
            await asyncio.sleep(0)
            data = self.transport.take()
            if not data:
                continue
            events = self.conn.receive_data(data)
            if any(isinstance(e, Welcomed) for e in events):
                return
            out = self.conn.data_to_send()
            if out:
                self.peer.data_received(out)
        raise TimeoutError(f"{self.name} did not log in")

    def frames(self) -> list[dict[str, Any]]:
        """What the server wrote since the last call, strictly decoded and checked as a client would."""
        frames = self.decoder.feed(self.transport.take())
        for frame in frames:
            validate_server_frame(frame)
        return frames


async def _setup(db: Path, pairs: int) -> tuple[ChatServer, list[tuple[FakeClient, FakeClient]]]:
    # Plaintext: the fake transports carry the relay's own frames (the TLS layer is not what is measured here).
    server = ChatServer(ServerConfig(port=0, db_path=db, rate=1e9, burst=10**9, max_connections=10**6, max_per_ip=10**6,
                                     register_per_ip=10**9, register_per_key=10**9, register_rate=10**9, tls=False))
    await server.start()
    keys = [crypto.generate_private_key(2048) for _ in range(2)]
    clients = []
    for i in range(pairs):
        sender, receiver = FakeClient(server, f"s{i}", keys[0]), FakeClient(server, f"r{i}", keys[1])
        await sender.login()
        await receiver.login()
        clients.append((sender, receiver))
    return server, clients


class HotPath:
    """Rounds of ``window`` messages per pair; counts the server's CPU time only."""

    def __init__(self, clients: list[tuple[FakeClient, FakeClient]], window: int, check: bool) -> None:
        self.clients = clients
        self.window = window
        self.check = check
        self.routes = {
            sender.name: build_route(sender.key, sender.name, receiver.name, receiver.key.public_key())
            for sender, receiver in clients
        }
        self.seq = 0
        self.server_cpu = 0.0
        self.delivered = 0

    async def _timed(self, step: Callable[[], None], pause: float = 0.0) -> None:
        t0 = time.process_time()
        step()
        await asyncio.sleep(pause)  # the loop iteration that flushes what was queued
        self.server_cpu += time.process_time() - t0

    async def settle(self, expected: int) -> None:
        """Rounds without new sends until ``expected`` messages are acked ``delivered``: a message that found its
        recipient's window full went to the store (acked ``queued``) and comes back from it, in the store's own
        time (timed in CPU, as everything the server does: a pause of the loop counts only the work done in it)."""
        for _ in range(SETTLE_ROUNDS):
            if self.delivered >= expected:
                return
            await self._timed(lambda: None, pause=SETTLE_PAUSE)
            await self.round(window=0)
        raise RuntimeError(f"delivered {self.delivered} of {expected} after {SETTLE_ROUNDS} rounds without sends")

    async def round(self, window: int | None = None) -> None:
        sends = []
        for sender, _ in self.clients:
            route = self.routes[sender.name]
            frames = []
            for _ in range(self.window if window is None else window):
                self.seq += 1
                frames.append(route.frame(b"%032x" % self.seq))
            sends.append((sender, b"".join(frames)))

        def feed_sends() -> None:
            for sender, data in sends:
                sender.peer.data_received(data)

        await self._timed(feed_sends)
        replies = []
        for _, receiver in self.clients:
            got = self._messages(receiver)
            replies.append((receiver, b"".join(received_frame(i, s) for i, s in got)))

        def feed_replies() -> None:
            for receiver, data in replies:
                receiver.peer.data_received(data)

        await self._timed(feed_replies)
        for sender, _ in self.clients:
            self.delivered += self._acks(sender)

    def _messages(self, receiver: FakeClient) -> list[tuple[bytes, bytes]]:
        if not self.check:
            return _scan_messages(receiver.transport.take())
        return [(f["envelope"]["id"].encode(), f["from"].encode()) for f in receiver.frames() if f["type"] == "message"]

    def _acks(self, sender: FakeClient) -> int:
        if not self.check:
            return sender.transport.take().count(b'"status":"delivered"')
        return sum(1 for f in sender.frames() if f["type"] == "ack" and f["status"] == "delivered")


def _scan_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(data):
        end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
        body = data[pos + 4 : end]
        pos = end
        if body.startswith(b'{"type":"message"'):
            sender = body[26 : body.index(b'"', 26)]
            i = body.index(b'"id":"') + 6
            out.append((body[i : i + 32], sender))
    return out


async def run(pairs: int, window: int, messages: int, check: bool, profile: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="securechat-hotpath-") as tmp:
        server, clients = await _setup(Path(tmp) / "hot.db", pairs)
        try:
            bench = HotPath(clients, window, check)
            for _ in range(3):  # warm up
                await bench.round()
            await bench.settle(3 * pairs * window)
            bench.server_cpu = 0.0
            bench.delivered = 0
            rounds = max(1, messages // (pairs * window))
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            expected = rounds * pairs * window
            for _ in range(rounds):
                await bench.round()
            await bench.settle(expected)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)  # type: ignore[arg-type]
            if bench.delivered != expected:
                raise RuntimeError(f"delivered {bench.delivered} of {expected}")
            return {"delivered": bench.delivered, "server_us_per_msg": bench.server_cpu / bench.delivered * 1e6}
        finally:
            await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m securechat.bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--window", type=int, default=20, help="send frames per sender per read")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="decode every frame the server writes (slower)")
    parser.add_argument("--profile", help="write cProfile stats of one repetition here")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    figures = []
    for rep in range(args.reps):
        result = asyncio.run(run(args.pairs, args.window, args.messages, args.check, args.profile if rep == 0 else None))
        figures.append(result["server_us_per_msg"])
        print(f"rep {rep + 1}: {result['server_us_per_msg']:.2f} us of server CPU per message ({result['delivered']:,} delivered)")
    figures.sort()
    print(f"median {figures[len(figures) // 2]:.2f} us/msg (min {figures[0]:.2f}, max {figures[-1]:.2f})")
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
