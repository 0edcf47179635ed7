"""The raw protocol client for tests (:mod:`securechat.bench.rawclient`, shared with tools/), and
helpers that run a real ChatServer in the test's process and log clients in to it.

A test that needs the raw protocol on the wire says ``tls=False``
(``RawClient.connect(port, tls=False)``, ``running_server(db, tls=False)``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from securechat.bench.rawclient import (
    DEFAULT_TIMEOUT,
    RawClient,
    clients,
    envelope,
    identity_key,
    json_frame,
    msg_id,
    raw_frame,
)
from securechat.server import ChatServer, ServerConfig

__all__ = [
    "DEFAULT_TIMEOUT", "RawClient", "caught_up", "clients", "envelope", "identity_key", "json_frame", "msg_id",
    "raw_frame", "running_server",
]  # fmt: skip


@contextlib.asynccontextmanager
async def running_server(db_path: Path, **options: Any) -> AsyncIterator[ChatServer]:
    """A ChatServer on 127.0.0.1, an ephemeral port and ``db_path``; closed on exit (TLS unless ``tls=False``)."""
    config = ServerConfig(host="127.0.0.1", port=0, db_path=db_path, **options)
    server = ChatServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def caught_up(server: ChatServer, name: str, within: float) -> None:
    """Wait, at most ``within`` seconds, until ``name``'s session has read its stored queue, so messages reach it live."""
    async with asyncio.timeout(within):
        while not server.caught_up(name):
            await asyncio.sleep(0.01)
