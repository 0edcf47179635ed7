"""Section 6: room fan-out through a real ``securechat-server`` (docs/protocol.md 11.6).

One sender and ``members - 1`` readers log in (the library's
:class:`~securechat.client.connection.ClientConnection` handshake), the sender
creates a room and adds every reader (signed entries, checked by the server),
then pipelines room messages; every reader confirms each copy with
``received``. Given nodes over Redis (:class:`~securechat.bench.nodes.NodeSet`),
the sender is on the first node and every reader on the last, so each copy
crosses nodes; the CPU is then the nodes' together. Measured: member deliveries per second (copies confirmed) and
the server's CPU per delivery (its user + system time over the stream).

The envelope is sealed once for the room's members (RSA-3072 wraps) and only its
id is changed per message: the server checks a room envelope's structure, its
state and the sender's membership, never a signature (it has no reason to), so
the copies cost it what real messages cost; the readers do not open them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

from .. import crypto
from ..client.connection import ClientConnection, Dropped, ServerError, Welcomed
from ..protocol import FrameDecoder, encode_frame
from ..rooms.log import ZERO_HEAD, RoomState, apply
from ..rooms.sealing import seal_room, sign_entry
from .nodes import NodeSet
from .servers import ServerProcess

_ID_PLACEHOLDER: Final = "e" * 32
TIMEOUT: Final = 120.0


@dataclass
class Member:
    name: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(1 << 20))
    got: int = 0

    async def frames(self) -> list[dict[str, Any]]:
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionError(f"{self.name}: the server closed the connection")
        return self.decoder.feed(data)


async def _login(port: int, name: str, key: crypto.PrivateKey) -> Member:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    member = Member(name, reader, writer)
    handshake = ClientConnection(name, key)
    writer.write(handshake.data_to_send())
    while True:
        for frame in await member.frames():
            events = handshake.receive_frame(frame)
            writer.write(handshake.data_to_send())
            for event in events:
                if isinstance(event, Welcomed):
                    return member
                if isinstance(event, ServerError | Dropped):
                    raise ConnectionError(f"{name}: login failed: {event}")


async def _ask(member: Member, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame`` with a rid and return the answer carrying it (an error raises)."""
    rid = f"r{time.monotonic_ns()}"
    member.writer.write(encode_frame({**frame, "rid": rid}))
    while True:
        for got in await member.frames():
            if got.get("rid") == rid:
                if got["type"] == "error":
                    raise RuntimeError(f"{frame['type']}: {got['code']} {got['message']}")
                return got


async def _make_room(admin: Member, key: crypto.PrivateKey, room: str, readers: list[str]) -> RoomState:
    state: RoomState | None = None
    changes = [("create", admin.name, "invite")] + [("add", name, "") for name in readers]
    for op, name, kind in changes:
        seq, prev = (state.seq + 1, state.head) if state is not None else (0, ZERO_HEAD)
        entry = sign_entry(key, room, seq, prev, op, admin.name, name, kind, int(time.time() * 1000))
        kind_of = "room_create" if op == "create" else "room_append"
        for attempt in range(100):  # room changes have their own rate (10/s): wait it out
            try:
                await _ask(admin, {"type": kind_of, "entry": entry.to_json()})
                break
            except RuntimeError as exc:
                if "rate_limited" not in str(exc) or attempt == 99:
                    raise
                await asyncio.sleep(0.2)
        state = apply(state, entry)
    assert state is not None
    return state


async def _read_all(member: Member, sender: bytes, expected: int) -> None:
    """Confirm every copy as it comes, until ``expected`` arrived."""
    while member.got < expected:
        out = bytearray()
        for frame in await member.frames():
            if frame["type"] == "message":
                member.got += 1
                body = b'{"type":"received","id":"%s","from":"%s"}' % (frame["envelope"]["id"].encode(), sender)
                out += len(body).to_bytes(4, "big") + body
        if out:
            member.writer.write(out)


async def _drain_sender(sender: Member, stop: asyncio.Event) -> None:
    """The sender's acks and room_sent frames are read (and dropped) so its socket never fills."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(sender.frames(), 0.5)
        except TimeoutError:
            continue


async def fan_out(
    server: ServerProcess | NodeSet, keys: list[crypto.PrivateKey], members: int, messages: int
) -> dict[str, Any]:
    """One stream of ``messages`` room messages to a room of ``members``; deliveries/s and server CPU."""
    stamp = f"{time.monotonic_ns() % 10**9:09d}"
    names = [f"fo{stamp}s"] + [f"fo{stamp}r{i:03d}" for i in range(1, members)]
    ports = [server.port] + [getattr(server, "receiver_port", server.port)] * (members - 1)
    logged = await asyncio.gather(*(_login(ports[i], n, keys[i % len(keys)]) for i, n in enumerate(names)))
    sender, readers = logged[0], logged[1:]
    room = f"#fo{stamp}"
    state = await _make_room(sender, keys[0], room, names[1:])
    public = {name: keys[i % len(keys)].public_key() for i, name in enumerate(names)}
    envelope = seal_room(keys[0], public, state, sender.name, "fan-out " * 20, msg_id=_ID_PLACEHOLDER)
    head, tail = encode_frame({"type": "room_send", "room": room, "envelope": envelope})[4:].split(
        _ID_PLACEHOLDER.encode(), 1
    )
    frames = []
    for i in range(messages):
        body = head + b"%032x" % (int(stamp) * 10**6 + i) + tail
        frames.append(len(body).to_bytes(4, "big") + body)
    stop = asyncio.Event()
    draining = asyncio.create_task(_drain_sender(sender, stop))
    cpu0, t0 = server.cpu(), time.perf_counter()
    reading = [asyncio.create_task(_read_all(r, sender.name.encode(), messages)) for r in readers]
    for frame in frames:
        sender.writer.write(frame)
        await sender.writer.drain()
    await asyncio.wait_for(asyncio.gather(*reading), TIMEOUT)
    seconds, cpu = time.perf_counter() - t0, server.cpu() - cpu0
    stop.set()
    await draining
    for member in logged:
        member.writer.close()
    deliveries = messages * (members - 1)
    return {
        "members": members,
        "messages": messages,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / seconds,
        "server_cpu_us_per_delivery": cpu / deliveries * 1e6,
        "message_frame_bytes": len(frames[0]),
    }


def run(server: ServerProcess | NodeSet, keys: list[crypto.PrivateKey], *, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for members in (10, 100):
        messages = (20 if quick else 300) if members == 10 else (5 if quick else 60)
        out[f"members{members}"] = asyncio.run(fan_out(server, keys, members, messages))
    return out
