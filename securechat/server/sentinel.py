"""Redis behind Sentinel: ``redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT/MASTER/DB``.

The sentinels are asked for the current primary (``SENTINEL
get-master-addr-by-name``) before every connection, the first one that answers
wins; so after a failover every reconnect of the link and of the subscriber
goes to the new primary. The password, if any, is the data nodes' (the
sentinels are asked without one).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Final

import hiredis

from .resp import CONNECT_TIMEOUT, RedisAddress, pack

SCHEME: Final = "redis+sentinel://"


def sentinel_address(url: str) -> RedisAddress:
    """Parse a ``redis+sentinel://`` URL; raises ``ValueError`` saying what is wrong with it."""
    parts = urllib.parse.urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"bad Redis URL {url!r}: expected redis+sentinel://HOST:PORT,HOST:PORT/MASTER/DB")
    sentinels: list[tuple[str, int]] = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad Redis URL {url!r}: each sentinel is HOST:PORT, got {item!r}")
        sentinels.append((host, int(port)))
    password = urllib.parse.unquote(parts.password) if parts.password else None
    db = int(path[1]) if len(path) == 2 else 0
    return RedisAddress(db=db, password=password, sentinels=tuple(sentinels), master=path[0])


async def ask_sentinel(host: str, port: int, master: str) -> tuple[str, int] | None:
    """The primary one sentinel names for ``master``, or None (it does not know it)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    try:
        writer.write(pack(("SENTINEL", "get-master-addr-by-name", master)))
        parser = hiredis.Reader()
        while (reply := parser.gets()) is False:
            data = await asyncio.wait_for(reader.read(4096), CONNECT_TIMEOUT)
            if not data:
                raise ConnectionResetError("the sentinel closed the connection")
            parser.feed(data)
    finally:
        writer.close()
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    return reply[0].decode(), int(reply[1])


async def current_primary(address: RedisAddress) -> tuple[str, int]:
    """Where the primary is now, from the first sentinel that answers; ``OSError`` if none does."""
    errors = []
    for host, port in address.sentinels:
        try:
            found = await ask_sentinel(host, port, address.master)
        except (OSError, TimeoutError, hiredis.ProtocolError) as exc:
            errors.append(f"{host}:{port}: {exc or type(exc).__name__}")
            continue
        if found is not None:
            return found
        errors.append(f"{host}:{port}: no primary named {address.master!r}")
    raise ConnectionRefusedError(f"no sentinel named the primary ({'; '.join(errors)})")
