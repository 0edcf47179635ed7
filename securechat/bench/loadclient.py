"""One load client: the library's handshake, then a byte-level message path.

A :class:`LoadClient` logs in through the client library's own
:class:`~securechat.client.connection.ClientConnection` (``hello``, the signed
``auth``, ``welcome``: the handshake exists once). After ``welcome`` it never
parses JSON: frames are split on their length prefix and classified with byte
searches by :meth:`securechat.bench.worker.Worker.on_frames`, and the ``send``
frames are pre-built :class:`Route` bytes with only the envelope id replaced.

Against a TLS server (``tls=True``) the bytes go through the library's own
:class:`~securechat.tls.TlsChannel`, and every write is padded as a real client
pads it (docs/protocol.md sections 2.1 and 2.2); the load client trusts the
server it was pointed at (the pin check costs the client, not the server).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from .. import crypto
from ..client.connection import ClientConnection, Dropped, ServerError, Welcomed
from ..errors import ProtocolError, TlsFailed
from ..protocol import decode_body, encode_body
from ..tls import TlsChannel, client_context, inspect_certificate, pad_write

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
    port: int = 0  # the node this client connects to (0: the job's port)


class HandshakeError(Exception):
    pass


class LoadClient(asyncio.Protocol):
    """One protocol client; the worker owns the counters it updates."""

    def __init__(self, worker: Worker, spec: ClientSpec, key: crypto.PrivateKey, tls: bool = False) -> None:
        self.worker = worker
        self.spec = spec
        self.handshake = ClientConnection(spec.name, key)
        self.tls = TlsChannel(client_context(), server_side=False) if tls else None
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
        if self.tls is None:
            self.transport.write(self.handshake.data_to_send())  # the hello
        else:
            self.transport.write(self.tls.data_to_send())  # the ClientHello; the hello waits for the handshake

    def write(self, data: bytes) -> None:
        """Frames to the server (padded and encrypted over TLS)."""
        transport = self.transport
        if transport is None:
            return
        tls = self.tls
        transport.write(data if tls is None else tls.encrypt(pad_write(data)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.worker.dropped += 1
        else:
            self._handshake_step(HandshakeError("connection closed during handshake"))
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            data = self._decrypt(data)
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

    def _decrypt(self, data: bytes) -> bytes:
        tls = self.tls
        assert tls is not None
        was_ready = tls.ready
        try:
            plain = tls.receive(data)
        except TlsFailed as exc:
            self._handshake_step(HandshakeError(str(exc)))
            if self.transport is not None:
                self.transport.close()
            return b""
        if tls.ready and not was_ready:
            certificate = inspect_certificate(tls.peer_certificate() or b"", "bench")
            self.handshake.server_identity = certificate.identity
            tls.send(pad_write(self.handshake.data_to_send()))  # the hello, bound to the identity
        out = tls.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        return plain

    # --- handshake ----------------------------------------------------------------

    def _handshake_frames(self, bodies: list[bytes]) -> None:
        """Hand frames to the ClientConnection until ``welcome``; the rest go the byte-level way."""
        for index, body in enumerate(bodies):
            try:
                events = self.handshake.receive_frame(decode_body(body))
            except ProtocolError as exc:
                self._handshake_step(HandshakeError(f"bad frame from the server: {exc}"))
                return
            self.write(self.handshake.data_to_send())  # the auth, after the challenge
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
