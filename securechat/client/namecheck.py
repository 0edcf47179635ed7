"""Is a name free on a server? ``check_name`` before ``hello`` (docs/protocol.md section 4, step 0).

The client asks this before it offers a passphrase or makes a key for a new
name, so that a taken name is said at once and nothing is claimed.
:class:`NameCheck` is the protocol side (bytes in, the answer out, bytes to
send); :func:`name_registered` is its thin asyncio shell.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from ..errors import BadRequest, ServerErrorReply
from ..protocol import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, validate_server_frame
from ..tls import pad_write
from .link import open_tls
from .servers import ServerTrust

READ_CHUNK: Final = 65536
_RID: Final = "1"


class NameCheck:
    """One ``check_name`` exchange, sans I/O: :meth:`receive_data` gives the answer once it is in."""

    def __init__(self, name: str, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.name = name
        self._decoder = FrameDecoder(max_frame)
        self._outgoing = encode_frame({"type": "check_name", "name": name, "rid": _RID})

    def data_to_send(self) -> bytes:
        data, self._outgoing = self._outgoing, b""
        return data

    def receive_data(self, data: bytes) -> bool | None:
        """True if the name is registered, False if it is free, None while the answer is not in.

        Raises :class:`ServerErrorReply` for an ``error`` from the server and a
        :class:`~securechat.errors.ProtocolError` for bytes that are not a valid answer.
        """
        for frame in self._decoder.feed(data):
            validate_server_frame(frame)
            answer = _answer(frame, self.name)
            if answer is not None:
                return answer
        return None

    def receive_eof(self) -> None:
        raise BadRequest("the server closed the connection before it answered check_name")


def _answer(frame: dict[str, Any], name: str) -> bool | None:
    if frame["type"] == "error":
        raise ServerErrorReply(frame["code"], frame["message"], fatal=frame.get("fatal") is True)
    if frame["type"] == "name_status" and frame["name"] == name:
        registered: bool = frame["registered"]
        return registered
    return None  # anything else is not for us (clients ignore unknown frames)


async def name_registered(host: str, port: int, name: str, timeout: float, trust: ServerTrust | None = None) -> bool:
    """Ask the server at ``host:port`` whether ``name`` is registered; raises ``OSError``,
    ``TimeoutError`` or a :class:`~securechat.errors.SecurechatError` when it cannot tell.

    Over TLS (``trust`` given) the server's identity is checked as the session checks it,
    without pinning a first one: the session pins and shows it.
    """
    check = NameCheck(name)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        tls = None if trust is None else (await open_tls(reader, writer, host, port, timeout, trust, pin=False))[0]
        try:
            data = check.data_to_send()
            writer.write(data if tls is None else tls.encrypt(pad_write(data)))
            while True:
                data = await reader.read(READ_CHUNK)
                if data and tls is not None:
                    data = tls.receive(data)
                    if not data and not tls.closed:
                        continue  # TLS records without application bytes
                if not data:
                    check.receive_eof()
                answer = check.receive_data(data)
                if answer is not None:
                    return answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
