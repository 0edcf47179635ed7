"""The asyncio shell of one TLS connection: a :class:`~securechat.server.transport.Peer` whose bytes
go through a :class:`~securechat.tls.TlsChannel` (docs/protocol.md section 2.1).

Reads are decrypted before the connection sees them and writes encrypted after
it queued them; everything else is the plain peer's. Frames written before the
handshake completes (a refusal, a fatal error) wait for it. A peer whose first
byte is not TLS gets the fatal ``tls_required`` in plaintext, the one frame it
can read; a TLS failure ends the connection after the alert OpenSSL owes the peer.
"""

from __future__ import annotations

import logging

from ..errors import NotTls, TlsFailed
from ..protocol import encode_frame, error_frame
from ..tls import TLS_REQUIRED_MESSAGE, TlsChannel, pad_write
from .connection import ServerConnection
from .transport import LINGER_SECONDS, Handler, Peer

log = logging.getLogger("securechat.server")


class TlsPeer(Peer):
    """A :class:`Peer` over TLS; ``tls`` is None once the TLS layer failed (nothing more is read)."""

    __slots__ = ("pad", "tls")

    def __init__(self, handler: Handler, conn: ServerConnection, max_out: int, tls: TlsChannel, pad: int) -> None:
        """``pad``: the largest body a write is padded to (docs/protocol.md section 2.2); 0 pads nothing."""
        super().__init__(handler, conn, max_out)
        self.tls: TlsChannel | None = tls
        self.pad = pad

    def data_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is None:
            return
        was_ready, was_closed = tls.ready, tls.closed
        try:
            plain = tls.receive(data)
        except NotTls as exc:
            self._not_tls(exc)
            return
        except TlsFailed as exc:
            self._tls_failed(exc)
            return
        out = tls.data_to_send()  # the handshake's answers, and what waited for it
        if out and not self.transport.is_closing():
            self.transport.write(out)
        if tls.ready and not was_ready and self.conn.ended:
            self._half_close()  # a refusal or a fatal error waited for the handshake: it is out now
        if plain:
            super().data_received(plain)
        if tls.closed and not was_closed:
            self.eof_received()  # close_notify: the peer is done, as at a FIN (it waits for ours)

    def _wire(self, data: bytes) -> bytes:
        tls = self.tls
        if tls is None:
            return b""
        return tls.encrypt(pad_write(data, self.pad) if self.pad else data)

    def _half_close(self) -> None:
        tls = self.tls
        if tls is not None:
            if not tls.ready or tls.closing:
                return  # what is held goes out when the handshake completes (then this runs again)
            tls.close()
            out = tls.data_to_send()
            if out and not self.transport.is_closing():
                self.transport.write(out)
        super()._half_close()

    def end(self, reason: str | None, *, abort: bool = False) -> None:
        tls = self.tls
        if tls is not None and tls.ready and not tls.closing and not abort and not self.transport.is_closing():
            tls.close()
            self.transport.write(tls.data_to_send())
        super().end(reason, abort=abort)

    def _not_tls(self, exc: NotTls) -> None:
        self.tls = None
        log.info(
            "connection %s does not speak TLS (first bytes %s; a plaintext client?): answered tls_required",
            self.conn.peer,
            exc.first_bytes[:8].hex(),
        )
        self.conn.close("not TLS")
        self.handler.release(self)
        self.transport.write(encode_frame(error_frame("tls_required", TLS_REQUIRED_MESSAGE, fatal=True)))
        Peer._half_close(self)
        self.linger = self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def _tls_failed(self, exc: TlsFailed) -> None:
        tls, self.tls = self.tls, None
        if tls is not None and not self.transport.is_closing():
            self.transport.write(tls.data_to_send())  # the alert
        log.info("connection %s: TLS failed: %s", self.conn.peer, exc.detail)
        self.end(f"TLS failed: {exc.detail}")
