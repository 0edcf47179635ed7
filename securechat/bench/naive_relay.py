"""The baseline: a minimal asyncio streams relay written the obvious way.

It speaks enough of protocol v1 for the bench's clients and does the routing
naively: every frame is parsed with :mod:`json`, every outgoing frame is
serialised afresh, and every write is followed by ``await drain()``.

It does *less* than ``securechat-server``: the handshake answers ``hello``
with a random challenge and ``auth`` with ``welcome`` without checking the
signature or the key, nothing is stored, there are no limits, no validation
of the envelope and no offline queue. Run it with
``python -m securechat.bench.naive_relay --port 0``; it prints
``listening on HOST:PORT`` to stderr like the real server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import os
import sys
import time
from typing import Any


class NaiveRelay:
    def __init__(self) -> None:
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.pending: dict[tuple[str, str], str] = {}  # (recipient, id) -> sender

    async def send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        writer.write(len(body).to_bytes(4, "big") + body)
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name: str | None = None
        try:
            while True:
                header = await reader.readexactly(4)
                frame = json.loads(await reader.readexactly(int.from_bytes(header, "big")))
                kind = frame.get("type")
                if kind == "hello":
                    name = frame["name"]
                    await self.send(
                        writer,
                        {
                            "type": "challenge",
                            "server_id": base64.b64encode(os.urandom(16)).decode(),
                            "nonce": base64.b64encode(os.urandom(32)).decode(),
                        },
                    )
                elif kind == "auth" and name is not None:
                    self.writers[name] = writer
                    await self.send(writer, {"type": "welcome", "name": name, "fingerprint": "", "new": True})
                elif kind == "send" and name is not None:
                    envelope = frame["envelope"]
                    target = self.writers.get(frame["to"])
                    if target is None:
                        await self.send(
                            writer, {"type": "error", "code": "unknown_user", "message": "", "fatal": False}
                        )
                        continue
                    self.pending[(frame["to"], envelope["id"])] = name
                    await self.send(
                        target,
                        {
                            "type": "message",
                            "from": name,
                            "server_ts": int(time.time() * 1000),
                            "envelope": envelope,
                        },
                    )
                elif kind == "received" and name is not None:
                    sender = self.pending.pop((name, frame["id"]), None)
                    sender_writer = self.writers.get(sender) if sender else None
                    if sender_writer is not None:
                        await self.send(
                            sender_writer,
                            {"type": "ack", "id": frame["id"], "to": name, "status": "delivered"},
                        )
                elif kind == "ping":
                    await self.send(writer, {"type": "pong"})
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
            pass
        finally:
            if name is not None and self.writers.get(name) is writer:
                del self.writers[name]
            writer.close()


async def serve(host: str, port: int) -> None:
    relay = NaiveRelay()
    server = await asyncio.start_server(relay.handle, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (default: the standard loop)")
    args = parser.parse_args(argv)
    if args.uvloop:
        uvloop = importlib.import_module("uvloop")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
