"""Redis behind Sentinel: ``redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT/MASTER/DB``.

The sentinels are asked for the current primary (``SENTINEL
get-master-addr-by-name``) before every connection, in the order given; so
after a failover every reconnect of the link and of the subscriber goes to the
new primary. A sentinel can lag (it missed the failover, or was cut off): the
address it names is asked its ``ROLE`` first, and one that is not ``master``
(the old primary, now a replica) is logged and passed over for the next
sentinel's answer; if no sentinel names a ``master``, the connection fails and
is tried again with the caller's backoff. The password, if any, is the data
nodes' (the sentinels are asked without one).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final

import hiredis

from .rediscommands import pack
from .rediswire import CONNECT_TIMEOUT
from .resp import RedisAddress

log = logging.getLogger("securechat.server.redis")

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


async def _ask(host: str, port: int, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` on a new connection and return their replies (errors as values)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
    try:
        writer.write(b"".join(pack(c) for c in commands))
        parser = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < len(commands):
            if (reply := parser.gets()) is not False:
                replies.append(reply)
                continue
            data = await asyncio.wait_for(reader.read(4096), CONNECT_TIMEOUT)
            if not data:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            parser.feed(data)
    finally:
        writer.close()
    return replies


async def ask_sentinel(host: str, port: int, master: str) -> tuple[str, int] | None:
    """The primary one sentinel names for ``master``, or None (it does not know it); ``ConnectionRefusedError``
    saying why if the sentinel answers with an error (``NOAUTH``: a sentinel with a password)."""
    (reply,) = await _ask(host, port, [("SENTINEL", "get-master-addr-by-name", master)])
    if isinstance(reply, hiredis.ReplyError):
        raise ConnectionRefusedError(f"refused SENTINEL get-master-addr-by-name ({reply})")
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    return reply[0].decode(), int(reply[1])


async def role_of(where: tuple[str, int], address: RedisAddress) -> str:
    """What the Redis at ``where`` says it is (``master``, ``slave``), logged in as the nodes are."""
    auth = [address.hello_commands("securechat-role")[0]] if address.password is not None else []
    *said, role = await _ask(*where, [*auth, ("ROLE",)])
    for reply in (*said, role):
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionRefusedError(f"{where[0]}:{where[1]} refused ROLE: {reply}")
    return str(role[0].decode())


async def current_primary(address: RedisAddress) -> tuple[str, int]:
    """The primary the first sentinel names whose ``ROLE`` is master; ``OSError`` if none does."""
    errors = []
    for host, port in address.sentinels:
        try:
            found = await ask_sentinel(host, port, address.master)
            role = await role_of(found, address) if found is not None else ""
        except (OSError, TimeoutError, hiredis.ProtocolError) as exc:
            errors.append(f"{host}:{port}: {exc or type(exc).__name__}")
            continue
        if found is None:
            errors.append(f"{host}:{port}: no primary named {address.master!r}")
        elif role != "master":
            log.warning(
                "sentinel %s:%d names %s:%d as the primary of %r, but its ROLE is %s: asking the next sentinel",
                host, port, *found, address.master, role,
            )  # fmt: skip
            errors.append(f"{host}:{port}: named {found[0]}:{found[1]}, a {role}")
        else:
            return found
    raise ConnectionRefusedError(f"no sentinel named a primary ({'; '.join(errors)})")
