"""TLS 1.3 under the frames, sans I/O (docs/protocol.md section 2.1).

:class:`TlsChannel` is one end of a TLS connection over two memory BIOs: TLS
bytes in (:meth:`~TlsChannel.receive`) give application bytes out, application
bytes in (:meth:`~TlsChannel.send`) give TLS bytes to write
(:meth:`~TlsChannel.data_to_send`). The server's asyncio shell, the client's
link and the bench's load generator all drive it; nothing here touches a socket.

Why our own shell rather than asyncio's ``ssl=`` transport: the latter
allocates a 256 KiB read buffer per connection (``sslproto.SSLProtocol``), and
the server must hold ten thousand idle connections in a few KiB each. Memory
BIOs keep the capacity of the largest single write they ever held, so both
directions go through them in slices of at most :data:`SLICE` bytes.

Also here: the size padding of what goes through TLS (section 2.2), the two TLS contexts (TLS 1.3 only, no tickets, no certificate
authority: the client pins the server's key instead), the server identity of a
certificate (SHA-256 of its SubjectPublicKeyInfo) and its validity check, and
the first-byte tests that tell a TLS peer from a plaintext one.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import BadRequest, BadServerCertificate, FrameTooLarge, NotTls, ProtocolError, TlsFailed
from .protocol import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE, FrameDecoder

TLS_HANDSHAKE_RECORD: Final = 0x16  # the first byte of every TLS connection's first record
TLS_MAJOR_VERSION: Final = 0x03  # the second byte of a TLS record header
# Both BIOs see at most this much at once (a TLS record's plaintext is at most 16 KiB).
SLICE: Final = 16 * 1024
# What a failed handshake keeps of the peer's first bytes, to recognise a plaintext server.
FIRST_BYTES_KEPT: Final = 1024
TLS_REQUIRED_MESSAGE: Final = "this server speaks TLS: connect without --plaintext"
TLS_UNSUPPORTED_MESSAGE: Final = "this server speaks plaintext securechat, not TLS: connect with --plaintext"


# --- contexts -------------------------------------------------------------------------


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The server's context: TLS 1.3 only, this certificate and key, no session tickets.

    Raises ``ssl.SSLError`` or ``OSError`` for unreadable or mismatched files.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_path, key_path)
    context.num_tickets = 0  # no resumption: tickets would cost every login an encryption for nothing
    return context


def client_context() -> ssl.SSLContext:
    """The client's context: TLS 1.3 only; no certificate authority and no host name check (the key is pinned)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # CertificateVerify still proves the key; the pin decides
    return context


def sni_name(host: str) -> str | None:
    """The host to send as SNI: a DNS name, never an address (RFC 6066)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host or None
    return None


# --- certificates and identities --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the client checks of a server certificate."""

    identity: bytes  # SHA-256 of the DER SubjectPublicKeyInfo (docs/protocol.md section 2.1)
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def fingerprint(self) -> str:
        """The identity as 64 lowercase hex digits."""
        return self.identity.hex()


def spki_identity(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def inspect_certificate(der: bytes, server: str) -> CertificateInfo:
    """Parse a DER certificate; raise :class:`BadServerCertificate` if it cannot be read."""
    try:
        cert = x509.load_der_x509_certificate(der)
        identity = spki_identity(cert)
        return CertificateInfo(identity, cert.not_valid_before_utc, cert.not_valid_after_utc)
    except (ValueError, TypeError) as exc:
        raise BadServerCertificate(server, f"the server at {server} presents an unreadable certificate ({exc})") from None


def check_validity(info: CertificateInfo, server: str, now: datetime.datetime) -> None:
    """Raise :class:`BadServerCertificate` unless ``now`` is within the certificate's validity."""
    if now > info.not_after:
        raise BadServerCertificate(
            server,
            f"the certificate of the server at {server} expired on {info.not_after:%Y-%m-%d %H:%M} UTC; "
            "its operator must renew it",
        )
    if now < info.not_before:
        raise BadServerCertificate(
            server,
            f"the certificate of the server at {server} is not valid before {info.not_before:%Y-%m-%d %H:%M} "
            "UTC (check this computer's clock)",
        )


# --- telling the transports apart (docs/protocol.md section 2.1, "Mismatched ends") -------


def starts_like_tls(first: bytes) -> bool:
    """True if a connection's first byte is a TLS handshake record's (a frame's is 0x00)."""
    return bool(first) and first[0] == TLS_HANDSHAKE_RECORD


def tls_length_prefix(size: int) -> bool:
    """True if a frame length prefix is really a TLS record header (0x16 0x03 ...)."""
    return size >> 16 == TLS_HANDSHAKE_RECORD << 8 | TLS_MAJOR_VERSION


def tls_at_plaintext(exc: FrameTooLarge) -> ProtocolError:
    """What a plaintext server answers a first length prefix that is too large: ``tls_unsupported`` for TLS."""
    if not tls_length_prefix(exc.size):
        return exc
    return BadRequest(TLS_UNSUPPORTED_MESSAGE, code="tls_unsupported", fatal=True)


def plaintext_frame(first_bytes: bytes) -> dict[str, Any] | None:
    """The first securechat frame in ``first_bytes`` (what a plaintext server sent a TLS client), or None."""
    try:
        frames = FrameDecoder().feed(first_bytes)
    except ProtocolError:
        return None
    return frames[0] if frames else None


# --- size padding (docs/protocol.md section 2.2) ------------------------------------------

PAD_MIN: Final = 256
PAD_STEP: Final = 16 * 1024
PAD_BYTE: Final = b" "


def padded_size(n: int) -> int:
    """The bucket of a write of ``n`` bytes: 256, a power of two up to 16 KiB, then a multiple of 16 KiB."""
    if n <= PAD_MIN:
        return PAD_MIN
    if n <= PAD_STEP:
        return 1 << (n - 1).bit_length()
    return -(-n // PAD_STEP) * PAD_STEP


def pad_last_frame(frames: bytes, extra: int, max_body: int) -> bytes:
    """``frames`` (whole frames) with ``extra`` spaces after the last frame's JSON, its prefix grown to match.

    The last body never grows past ``max_body``: the padding stops there. A caller
    padding a write of ``n`` bytes passes ``extra = padded_size(n) - n``.
    """
    size = len(frames)
    pos = 0
    while True:  # find the last frame's header
        (body,) = HEADER.unpack_from(frames, pos)
        end = pos + HEADER_SIZE + body
        if end >= size:
            break
        pos = end
    if end != size:
        raise ValueError("pad_last_frame needs whole frames")
    extra = min(extra, max_body - body)
    if extra <= 0:
        return frames
    return b"".join((frames[:pos], HEADER.pack(body + extra), frames[pos + HEADER_SIZE :], PAD_BYTE * extra))


def pad_write(data: bytes, max_body: int = DEFAULT_MAX_FRAME) -> bytes:
    """A write of whole frames padded to its bucket (docs/protocol.md section 2.2)."""
    if not data:
        return data
    return pad_last_frame(data, padded_size(len(data)) - len(data), max_body)


# --- one end of a TLS connection ----------------------------------------------------------


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")


class TlsChannel:
    """One end of a TLS connection, sans I/O: TLS bytes in and out, application bytes in and out.

    Application bytes sent before the handshake completes wait and go out with
    the first records after it. A peer's ``close_notify`` sets :attr:`closed`.
    Every failure raises :class:`TlsFailed` (the alert we owe the peer is then in
    :meth:`data_to_send`); a server channel whose peer's first byte is not TLS
    raises :class:`NotTls` instead.
    """

    __slots__ = (
        "_early", "_first", "_incoming", "_obj", "_outgoing", "_server_side", "_writes", "closed", "closing", "ready",
    )

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        self._early: list[bytes] = []  # application bytes sent before the handshake completed
        self._writes: list[bytes] = []  # TLS bytes for the peer
        self._first = b""  # the peer's first bytes, until the handshake completes
        self.ready = False  # the handshake completed
        self.closed = False  # the peer sent close_notify
        self.closing = False  # we sent close_notify: nothing more goes out
        if not server_side:
            self._handshake()  # the ClientHello

    # --- TLS bytes in ---------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Take TLS bytes from the peer; the application bytes they complete (maybe none)."""
        if not self.ready:
            if self._server_side and not self._first and data and not starts_like_tls(data):
                raise NotTls(bytes(data[:16]))
            if len(self._first) < FIRST_BYTES_KEPT:
                self._first += data[: FIRST_BYTES_KEPT - len(self._first)]
        plain: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(data), SLICE):
            self._incoming.write(view[start : start + SLICE])
            if self.ready or self._handshake():
                self._read(plain)
        return plain[0] if len(plain) == 1 else b"".join(plain)

    def _handshake(self) -> bool:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            self._collect()
            return False
        except ssl.SSLError as exc:
            self._collect()  # the alert
            raise TlsFailed(_reason(exc), self._first) from None
        self.ready = True
        self._first = b""
        early, self._early = self._early, []
        for data in early:
            self._write(data)
        self._collect()
        return True

    def _read(self, plain: list[bytes]) -> None:
        read = self._obj.read
        while True:
            try:
                chunk = read(SLICE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self.closed = True
                return
            except ssl.SSLError as exc:
                self._collect()
                raise TlsFailed(_reason(exc)) from None
            if not chunk:
                self.closed = True
                return
            plain.append(chunk)

    # --- application bytes in, TLS bytes out --------------------------------------------

    def send(self, data: bytes) -> None:
        """Encrypt ``data`` for the peer (held until the handshake completes)."""
        if not data or self.closing:
            return
        if not self.ready:
            self._early.append(bytes(data))
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        write, read, writes = self._obj.write, self._outgoing.read, self._writes
        if len(data) <= SLICE:
            write(data)
            writes.append(read())
            return
        view = memoryview(data)
        for start in range(0, len(data), SLICE):
            write(view[start : start + SLICE])
            writes.append(read())

    def encrypt(self, data: bytes) -> bytes:
        """:meth:`send` then :meth:`data_to_send`, in one call (the server's write path)."""
        self.send(data)
        return self.data_to_send()

    def close(self) -> None:
        """Queue a ``close_notify`` for the peer (after anything already sent); once."""
        if not self.ready or self.closing:
            return
        self.closing = True
        try:
            self._obj.unwrap()
        except ssl.SSLError:
            pass  # the peer's close_notify has not come (it need not)
        self._collect()

    def _collect(self) -> None:
        if self._outgoing.pending:
            self._writes.append(self._outgoing.read())

    def data_to_send(self) -> bytes:
        """TLS bytes for the peer, in order; the queue is then empty."""
        writes = self._writes
        if not writes:
            return b""
        self._writes = []
        return writes[0] if len(writes) == 1 else b"".join(writes)

    # --- what the handshake established ------------------------------------------------

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), once the handshake completed; the client reads the server's."""
        return self._obj.getpeercert(binary_form=True) if self.ready else None

    def version(self) -> str | None:
        return self._obj.version()
