"""A raw protocol v1 client: frames as dicts, one at a time (the tests' and the tools' own).

``RawClient`` speaks frames directly, so a caller can send anything, including
bytes that are not frames at all; only its handshake (``hello``, ``login``) is
the client library's own :class:`~securechat.client.connection.ClientConnection`.

Like the server and the client, it speaks TLS unless asked for plaintext
(``RawClient.connect(port, tls=False)``): its bytes then go through asyncio's
own ``ssl`` transport, a second TLS implementation beside the server's memory
BIOs, and its ``auth`` is bound to the identity the handshake showed
(docs/protocol.md section 6.1). It trusts the server it is pointed at.
Its checks are ``assert``s: it serves tests and measurements, never users.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ..client.connection import ClientConnection, Phase
from ..crypto import generate_private_key
from ..protocol import HEADER_SIZE, FrameDecoder, decode_body, encode_frame
from ..tls import client_context, inspect_certificate

DEFAULT_TIMEOUT = 5.0


@functools.cache
def identity_key(owner: str = "alice") -> rsa.RSAPrivateKey:
    """An RSA-2048 key per ``owner`` label, generated once per test session."""
    return generate_private_key(2048)


class RawClient:
    """One TCP connection speaking protocol v1 frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int = 1 << 24) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_frame)
        self.frames: list[dict[str, Any]] = []
        self.name: str | None = None
        self.server_id: bytes | None = None
        self.handshake: ClientConnection | None = None  # the client library's side of the handshake
        # The server identity the TLS handshake showed (None over plaintext): what auth is bound to.
        self.server_identity: bytes | None = None
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.server_identity = inspect_certificate(ssl_object.getpeercert(binary_form=True), "test").identity

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", *, tls: bool = True, source: str | None = None) -> RawClient:
        """``source``: the local address to connect from (127.0.0.x, to be another client than 127.0.0.1)."""
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_context() if tls else None, local_addr=local), DEFAULT_TIMEOUT
        )
        return cls(reader, writer)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        self.writer.write(encode_frame(frame))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame; raises ``TimeoutError`` or ``ConnectionError`` (EOF)."""
        async with asyncio.timeout(timeout):
            while not self.frames:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def recv_type(self, kind: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next frame of type ``kind``, skipping others (presence, ...)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind:
                    return frame

    async def expect_error(self, code: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        frame = await self.recv_type("error", timeout)
        assert frame["code"] == code, frame
        return frame

    async def expect_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Read until EOF (or reset); returns frames that arrived before it."""
        seen: list[dict[str, Any]] = []
        seen.extend(self.frames)
        self.frames.clear()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return seen
                if not data:
                    return seen
                seen.extend(self.decoder.feed(data))

    async def expect_silence(self, timeout: float = 0.2, ignore: tuple[str, ...] = ("presence",)) -> None:
        """Assert that no frame but ``ignore``d types arrives within ``timeout``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (left := end - loop.time()) > 0:
            try:
                frame = await self.recv(left)
            except TimeoutError:
                return
            if frame["type"] not in ignore:
                raise AssertionError(f"unexpected frame {frame}")

    async def hello(self, name: str, key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
        """Start the real handshake (``ClientConnection``'s ``hello``); returns the server's next frame.

        ``extra`` fields go into the ``hello`` on top of the real ones. A test that
        answers the challenge itself (a bad signature, another server's id...) stops here.
        """
        self.handshake = ClientConnection(name, key)
        self.handshake.server_identity = self.server_identity
        hello = self.handshake.data_to_send()
        if extra:
            hello = encode_frame({**decode_body(hello[HEADER_SIZE:]), **extra})
        await self.send_raw(hello)
        return await self.recv()

    async def login(self, name: str, key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        """hello / challenge / auth / welcome, as ``ClientConnection`` does it; returns the welcome frame.

        The frames are read here (raw, as any test sees them) and handed to the
        connection object, which answers the challenge; afterwards this client
        sends whatever a test asks for.
        """
        challenge = await self.hello(name, key or identity_key(name))
        assert challenge["type"] == "challenge", challenge
        assert self.handshake is not None
        events = self.handshake.receive_frame(challenge)
        assert not events, events  # a challenge we cannot answer
        self.server_id = self.handshake.server_id
        await self.send_raw(self.handshake.data_to_send())
        welcome = await self.recv()
        assert welcome["type"] == "welcome", welcome
        events = self.handshake.receive_frame(welcome)
        assert self.handshake.phase is Phase.OPEN, events
        self.name = name
        return welcome

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def envelope(sender: str, to: str, msg_id: str, ts: int = 1) -> dict[str, Any]:
    """A well-shaped (not cryptographically valid) envelope: the server never opens it."""
    return {"v": 1, "from": sender, "to": to, "id": msg_id, "ts": ts,
            "key": "AAAA", "nonce": "AAAAAAAAAAAAAAAA", "ct": "AAAAAAAAAAAAAAAAAAAAAA==", "sig": "AAAA"}


def msg_id(n: int) -> str:
    return f"{n:032x}"


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def json_frame(obj: Any) -> bytes:
    return raw_frame(json.dumps(obj).encode())


@contextlib.asynccontextmanager
async def clients(port: int, *names: str, tls: bool = True) -> AsyncIterator[list[RawClient]]:
    """Logged-in clients, each with ``identity_key(name)``; closed on exit."""
    out: list[RawClient] = []
    try:
        for name in names:
            c = await RawClient.connect(port, tls=tls)
            out.append(c)
            await c.login(name, identity_key(name))
        yield out
    finally:
        for c in out:
            await c.close()
