"""Which servers the client trusts: pinned TLS identities per address, like ssh's ``known_hosts``.

``HOME/known_servers`` (0600, beside the identity directories, shared by every
own name in that home) holds one line per address::

    # securechat known servers: HOST:PORT SERVER-IDENTITY (docs/protocol.md section 2.1)
    127.0.0.1:5000 3f2a9c01...(64 hex digits)

:class:`ServerTrust` applies the rule of docs/protocol.md section 2.1 to what a
TLS handshake showed: the certificate within its dates, the identity equal to
``--server-fingerprint`` if one was given, and equal to the pin of the address,
or pinned now if the address has none. Anything else is a
:class:`~securechat.errors.ServerRefused` that names the one command accepting
the presented identity (``securechat-client trust-server``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import InvalidFingerprint, KeyStoreError, ServerIdentityRefused
from ..files import FILE_MODE, write_private_file
from ..names import parse_fingerprint
from ..tls import check_validity, inspect_certificate
from .home import check_private_path

KNOWN_SERVERS_FILE: Final = "known_servers"
HEADER: Final = "# securechat known servers: HOST:PORT SERVER-IDENTITY (docs/protocol.md section 2.1)\n"
ACCEPT_COMMAND: Final = "securechat-client trust-server"


def server_address(host: str, port: int) -> str:
    """The key of an address in the file: ``host:port``, an IPv6 host in brackets, names in lower case."""
    host = host.strip("[]").lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KnownServers:
    """The pinned server identities of one client home."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_home(cls, home: Path) -> KnownServers:
        return cls(home / KNOWN_SERVERS_FILE)

    def entries(self) -> dict[str, str]:
        """Address -> identity (64 hex digits); a later line for an address wins."""
        try:
            check_private_path(self.path, FILE_MODE)
            text = self.path.read_text("ascii")
        except KeyStoreError:
            if not self.path.exists():
                return {}
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"cannot read '{self.path}': {exc}") from None
        found: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise InvalidFingerprint(line)
                found[parts[0]] = parse_fingerprint(parts[1])
            except InvalidFingerprint:
                raise KeyStoreError(f"'{self.path}' line {number} is not 'HOST:PORT FINGERPRINT'") from None
        return found

    def get(self, server: str) -> str | None:
        return self.entries().get(server)

    def pin(self, server: str, identity: str) -> None:
        """Add a first pin (an append: two clients pinning at once lose nothing)."""
        line = f"{server} {identity}\n"
        if not self.path.exists():
            write_private_file(self.path, (HEADER + line).encode("ascii"))
            return
        check_private_path(self.path, FILE_MODE)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, server: str, identity: str) -> None:
        """Pin ``identity`` for ``server`` in place of any earlier pin (the file is rewritten atomically)."""
        kept = [f"{address} {fp}\n" for address, fp in self.entries().items() if address != server]
        write_private_file(self.path, (HEADER + "".join(kept) + f"{server} {identity}\n").encode("ascii"))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class ServerTrust:
    """How a TLS client decides to talk to a server (docs/protocol.md section 2.1).

    ``expected`` is ``--server-fingerprint``; ``accept`` is how the refusal spells the
    command that accepts a new identity (with the ``--home`` the user runs with).
    """

    known: KnownServers
    expected: str | None = None
    accept: str = ACCEPT_COMMAND
    clock: Callable[[], datetime.datetime] = field(default=_now)

    def check(self, server: str, certificate: bytes | None, *, pin: bool = True) -> tuple[bytes, bool]:
        """The identity to bind ``auth`` to, and whether it was pinned just now; raises ServerRefused.

        ``pin=False`` (``check_name``, before the session) checks against a pin or
        ``--server-fingerprint`` the same way but leaves a first identity for the session to pin and show.
        """
        info = inspect_certificate(certificate or b"", server)
        check_validity(info, server, self.clock())
        presented = info.fingerprint
        accept = f"{self.accept} {server} {presented}"
        if self.expected is not None and presented != self.expected:
            raise ServerIdentityRefused(server, presented, self.expected, source="expected", accept=accept)
        pinned = self.known.get(server)
        if pinned is None:
            if pin:
                self.known.pin(server, presented)
            return info.identity, pin
        if pinned != presented:
            raise ServerIdentityRefused(server, presented, pinned, source="pinned", accept=accept)
        return info.identity, False
