"""A malicious fake relay on 127.0.0.1: a real handshake, then whatever a test scripts.

It hands out a fresh challenge, welcomes whoever answers, serves ``lookup``
from a table the test controls and then pushes scripted frames; the attack
tests drive the real client library and the real ``--json`` client with it.

It speaks TLS with an identity of its own (clients with a fresh home pin it on
first use, as they would any server they meet first), or plaintext with ``tls=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from securechat import crypto
from securechat.client import ClientSession
from securechat.client.state import ClientStore
from securechat.clock import now_ms
from securechat.encoding import b64encode
from securechat.protocol import FrameDecoder, encode_frame
from securechat.server.identity import ServerIdentity, load_or_create
from tests.support.sessions import WAIT, Client, Recorder

Script = Callable[["HostileServer", asyncio.StreamWriter], Awaitable[None]]


@functools.cache
def fake_identity() -> ServerIdentity:
    """One TLS identity for the fake relays of a test run (kept in a temporary directory)."""
    directory = Path(tempfile.mkdtemp(prefix="securechat-hostile-"))
    return load_or_create(directory / "cert.pem", directory / "key.pem", create=True)


class HostileServer:
    """A fake relay on 127.0.0.1: real handshake, scripted frames afterwards."""

    def __init__(self, *, tls: bool = True) -> None:
        self.tls: ssl.SSLContext | None = fake_identity().context() if tls else None
        self.keys: dict[str, str] = {}  # what `lookup` answers: name -> PEM
        self.hang_lookups = False  # never answer a lookup (the client's worker waits)
        self.lookup_errors: list[str] = []  # answer the next lookups with these error codes, in turn
        self.users_padding = 0  # `list` is answered with one page of this many made-up names (a frame too large)
        self.scripts: list[Script] = []  # one per connection, in order; later ones get none
        # Rooms (docs/protocol.md 11.6): what `rooms` lists and what `room_log` serves, as the test scripts them.
        self.room_listing: list[dict[str, Any]] = []
        self.room_logs: dict[str, list[dict[str, Any]]] = {}
        self.hang_room_logs = False  # never answer a room_log (the log cannot be read for now)
        self.from_client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client_key: rsa.RSAPublicKey | None = None
        self.connections = 0
        self.server_id = os.urandom(16)
        self._server: asyncio.Server | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        if self.writer is not None:
            self.writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def push(self, frame: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(encode_frame(frame))

    def message(self, sender: str, envelope: dict[str, Any]) -> None:
        self.push({"type": "message", "from": sender, "server_ts": now_ms(), "envelope": envelope})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = -1  # a session's number, counted from its first frame that is not a name check
        decoder = FrameDecoder()
        nonce = os.urandom(32)
        name = ""
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    kind = frame["type"]
                    if kind == "check_name":  # a first run asks before it makes a key: "free"
                        answer = {"type": "name_status", "name": frame["name"], "registered": False}
                        writer.write(encode_frame({**answer, "rid": frame.get("rid")}))
                        continue
                    if index < 0:
                        self.connections += 1
                        index = self.connections - 1
                        self.writer = writer
                    self.from_client.put_nowait(frame)
                    if kind == "hello":
                        name = frame["name"]
                        key = crypto.load_public_key_pem(frame["pubkey"])
                        self.client_key = key
                        self.push(
                            {
                                "type": "challenge",
                                "server_id": b64encode(self.server_id),
                                "nonce": b64encode(nonce),
                            }
                        )
                    elif kind == "auth":
                        assert self.client_key is not None
                        fp = crypto.fingerprint(self.client_key)
                        self.push({"type": "welcome", "name": name, "fingerprint": fp, "new": False})
                        if index < len(self.scripts):
                            await self.scripts[index](self, writer)
                    elif kind == "lookup" and self.hang_lookups:
                        pass
                    elif kind == "lookup" and self.lookup_errors:
                        code = self.lookup_errors.pop(0)
                        self.push({"type": "error", "code": code, "message": code, "fatal": False, "rid": frame.get("rid")})
                    elif kind == "lookup":
                        rid = frame.get("rid")
                        pem = self.keys.get(frame["name"])
                        if pem is None:
                            self.push(
                                {
                                    "type": "error",
                                    "code": "unknown_user",
                                    "message": "no",
                                    "fatal": False,
                                    "rid": rid,
                                }
                            )
                        else:
                            try:
                                fp = crypto.fingerprint(crypto.load_public_key_pem(pem))
                            except Exception:  # noqa: BLE001
                                fp = "0" * 64  # the key is the lie under test
                            self.push(
                                {
                                    "type": "key",
                                    "name": frame["name"],
                                    "pubkey": pem,
                                    "fingerprint": fp,
                                    "rid": rid,
                                }
                            )
                    elif kind == "list":
                        made_up = [{"name": f"u{i:031d}", "online": False} for i in range(self.users_padding)]
                        self.push({"type": "users", "users": made_up, "more": False, "rid": frame.get("rid")})
                    elif kind == "room_log" and self.hang_room_logs:
                        pass
                    elif kind in ("rooms", "room_log"):
                        self._answer_room(frame)
                    elif kind == "ping":
                        self.push(
                            {"type": "pong", "rid": frame.get("rid")} if "rid" in frame else {"type": "pong"}
                        )
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


    def _answer_room(self, frame: dict[str, Any]) -> None:
        """``rooms`` lists :attr:`room_listing`; ``room_log`` serves :attr:`room_logs` from ``since`` on."""
        rid = frame.get("rid")
        if frame["type"] == "rooms":
            self.push({"type": "room_list", "rooms": self.room_listing, "more": False, "rid": rid})
            return
        room = frame["room"]
        entries = [e for e in self.room_logs.get(room, []) if e["seq"] >= frame.get("since", 0)]
        self.push({"type": "room_update", "room": room, "entries": entries, "keys": {}, "more": False, "rid": rid})

    def room_update(self, room: str, entries: list[dict[str, Any]]) -> None:
        """Push entries nobody asked for (a change the server claims happened)."""
        self.push({"type": "room_update", "room": room, "entries": entries, "keys": {}, "more": False})

    def room_message(self, sender: str, envelope: dict[str, Any]) -> None:
        self.push({"type": "message", "from": sender, "room": envelope["room"], "server_ts": now_ms(),
                   "envelope": envelope})


class LoopWatch:
    """Records exceptions that reach the event loop and ERROR log records."""

    def __init__(self) -> None:
        self.unhandled: list[dict[str, Any]] = []
        self.loop = asyncio.get_running_loop()
        self._old = self.loop.get_exception_handler()
        self.loop.set_exception_handler(lambda _loop, ctx: self.unhandled.append(ctx))

    def restore(self) -> None:
        self.loop.set_exception_handler(self._old)


async def next_frame(srv: HostileServer, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            frame = await srv.from_client.get()
            if frame["type"] == kind:
                return frame


@contextlib.asynccontextmanager
async def client_of(hostile: HostileServer, home: Path, caplog: Any) -> AsyncIterator[Client]:
    """alice's real session against ``hostile``, stopped at the end, which then checks that the
    attack left no unhandled loop exception and no ERROR log line (``caplog``: pytest's fixture)."""
    watch = LoopWatch()
    store = ClientStore.open(home, "alice", bits=2048)
    session = ClientSession(store, "127.0.0.1", hostile.port, backoff_initial=0.05, backoff_max=0.2, request_timeout=5.0)
    client = Client(session, Recorder())
    session.add_listener(client.rec)
    yield client
    await client.stop()
    watch.restore()
    store.close()
    assert watch.unhandled == [], watch.unhandled
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
