"""One load client: the library's handshake, then a byte-level message path.

A :class:`LoadClient` logs in through the client library's own
:class:`~securechat.client.connection.ClientConnection` (``hello``, the signed
``auth``, ``welcome``: the handshake exists once). After ``welcome`` it never
parses JSON: frames are split on their length prefix and classified with byte
searches by :meth:`securechat.bench.worker.Worker.on_frames`, and the ``send``
frames are pre-built :class:`Route` bytes with only the envelope id replaced.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from .. import crypto
from ..client.connection import ClientConnection, Dropped, ServerError, Welcomed
from ..errors import ProtocolError
from ..protocol import decode_body, encode_body

if TYPE_CHECKING:  # the worker makes its clients; only the type goes this way
    from .worker import Worker

TEXT = ("Benchmark message: the quick brown fox jumps over the lazy dog, again and again. " * 3)[:200]
_ID_PLACEHOLDER = "f" * 32


@dataclass
class Route:
    """Pre-built bytes of a ``send`` frame to one recipient, split around the envelope id."""

    head: bytes
    tail: bytes

    def frame(self, msg_id: bytes) -> bytes:
        return self.head + msg_id + self.tail


def build_route(
    sender_key: crypto.PrivateKey, sender: str, recipient: str, recipient_key: crypto.PublicKey
) -> Route:
    envelope = crypto.seal_envelope(
        sender_key, recipient_key, sender, recipient, TEXT, msg_id=_ID_PLACEHOLDER
    )
    body = encode_body({"type": "send", "to": recipient, "envelope": envelope})
    head, tail = body.split(_ID_PLACEHOLDER.encode(), 1)
    return Route(head=len(body).to_bytes(4, "big") + head, tail=tail)


@dataclass
class ClientSpec:
    name: str
    key_index: int
    targets: list[str] = field(default_factory=list)  # recipients, round robin (senders only)
    uid: int = 0  # unique per sender in the whole run: first 8 hex digits of its ids


class HandshakeError(Exception):
    pass


class LoadClient(asyncio.Protocol):
    """One protocol client; the worker owns the counters it updates."""

    def __init__(self, worker: Worker, spec: ClientSpec, key: crypto.PrivateKey) -> None:
        self.worker = worker
        self.spec = spec
        self.handshake = ClientConnection(spec.name, key)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.handshake_waiter: asyncio.Future[None] | None = None
        self.handshake_error: HandshakeError | None = None
        self.open = False
        self.closed = asyncio.get_running_loop().create_future()
        self.routes: list[Route] = []
        self.next_route = 0
        self.seq = 0
        self.inflight = 0
        self.sending = False

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.handshake.data_to_send())  # the hello

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.worker.dropped += 1
        else:
            self._handshake_step(HandshakeError("connection closed during handshake"))
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        bodies: list[bytes] = []
        while n - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if end > n:
                break
            bodies.append(bytes(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        if not bodies:
            return
        if self.open:
            self.worker.on_frames(self, bodies)
        else:
            self._handshake_frames(bodies)

    # --- handshake ----------------------------------------------------------------

    def _handshake_frames(self, bodies: list[bytes]) -> None:
        """Hand frames to the ClientConnection until ``welcome``; the rest go the byte-level way."""
        for index, body in enumerate(bodies):
            try:
                events = self.handshake.receive_frame(decode_body(body))
            except ProtocolError as exc:
                self._handshake_step(HandshakeError(f"bad frame from the server: {exc}"))
                return
            if self.transport is not None:
                self.transport.write(self.handshake.data_to_send())  # the auth, after the challenge
            for event in events:
                if isinstance(event, Welcomed):
                    self.open = True
                    self._handshake_step()
                    leftover = bodies[index + 1 :]  # queued messages or presence
                    if leftover:
                        self.worker.on_frames(self, leftover)
                    return
                if isinstance(event, ServerError):
                    error = event.error
                    self._handshake_step(HandshakeError(f"server error {error.code}: {error.message}"))
                    return
                if isinstance(event, Dropped):
                    self._handshake_step(HandshakeError(event.reason))
                    return
        self._handshake_step()

    def _handshake_step(self, error: HandshakeError | None = None) -> None:
        """Wake :meth:`login`: the server answered (or failed it)."""
        if error is not None and self.handshake_error is None:
            self.handshake_error = error
        waiter = self.handshake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def login(self, timeout: float) -> None:
        """Wait until ``welcome``, at most ``timeout`` seconds for each answer of the server."""
        while not self.open:
            if self.handshake_error is not None:
                raise self.handshake_error
            self.handshake_waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.handshake_waiter, timeout)

    # --- sending ----------------------------------------------------------------------

    def next_id(self) -> bytes:
        self.seq += 1
        return b"%08x%024x" % (self.spec.uid, self.seq)

    def next_frames(self, count: int) -> list[bytes]:
        frames = []
        routes = self.routes
        for _ in range(count):
            route = routes[self.next_route]
            self.next_route = (self.next_route + 1) % len(routes)
            frames.append(route.frame(self.next_id()))
        return frames


def received_frame(msg_id: bytes, sender: bytes) -> bytes:
    """A ``received`` frame built from bytes (no JSON encoder on the message path)."""
    body = b'{"type":"received","id":"' + msg_id + b'","from":"' + sender + b'"}'
    return len(body).to_bytes(4, "big") + body
