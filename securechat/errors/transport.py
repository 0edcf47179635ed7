"""Errors of the TLS layer under the frames (docs/protocol.md section 2.1)."""

from __future__ import annotations

from .base import SecurechatError


class TransportError(SecurechatError):  # the transport (TLS)
    """The TLS layer under the frames failed, or refused the other end."""


class TlsFailed(TransportError):
    """A TLS handshake or record failed; ``first_bytes`` are the first bytes the peer sent (for diagnosis)."""

    def __init__(self, detail: str, first_bytes: bytes = b"") -> None:
        super().__init__(detail)
        self.detail = detail
        self.first_bytes = first_bytes

    def __str__(self) -> str:
        return f"TLS failed: {self.detail}"


class NotTls(TransportError):
    """A connection to a TLS server did not start with a TLS record (a plaintext client, or garbage)."""

    def __init__(self, first_bytes: bytes) -> None:
        super().__init__(first_bytes.hex())
        self.first_bytes = first_bytes

    def __str__(self) -> str:
        return f"the peer does not speak TLS (first bytes {self.first_bytes[:8].hex()})"


class BadProxyHeader(TransportError):
    """A connection from a trusted balancer did not begin with a valid PROXY header (docs/protocol.md 2.3)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"bad PROXY header: {self.reason}"


class ServerRefused(TransportError):
    """The client will not talk to the server at ``server`` (host:port); retrying cannot help."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(detail)
        self.server = server
        self.detail = detail  # also what str() gives


class WrongTransport(ServerRefused):
    """The server speaks ``server_speaks`` ("plaintext" or "TLS") and we speak the other."""

    def __init__(self, server: str, server_speaks: str, detail: str) -> None:
        super().__init__(server, detail)
        self.server_speaks = server_speaks


class BadServerCertificate(ServerRefused):
    """The server's certificate is expired, not yet valid, or unreadable."""


class ServerIdentityRefused(ServerRefused):
    """The server presents ``presented``, not the identity pinned for its address (or given in advance).

    ``source`` is ``"pinned"`` (the known-servers file) or ``"expected"`` (``--server-fingerprint``);
    ``accept`` is the one command that accepts ``presented`` once the user has checked it.
    """

    def __init__(self, server: str, presented: str, wanted: str, *, source: str, accept: str) -> None:
        what = "one pinned for it" if source == "pinned" else "one given with --server-fingerprint"
        super().__init__(server, f"the server at {server} presents identity {presented}, not the {what} ({wanted})")
        self.presented, self.wanted, self.source, self.accept = presented, wanted, source, accept
