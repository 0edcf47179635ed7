"""The server's TLS identity: a key and a certificate, made on first start (docs/protocol.md section 2.1).

Without ``--tls-cert``/``--tls-key`` the server keeps its identity beside the
database: ``<db>.tls-key.pem`` and ``<db>.tls-cert.pem`` (``server.db`` gives
``server.tls-key.pem``), both 0600, created on first start with an ECDSA P-256
key (the cheapest handshake signature, so logins stay cheap) and a self-signed
certificate valid for :data:`VALIDITY`. Given files are used as they are, and
never created. The identity clients pin is the SHA-256 of the certificate's
SubjectPublicKeyInfo, so a certificate renewed over the same key keeps it.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..files import make_private_dir, write_private_file
from ..names import format_fingerprint
from ..tls import server_context, spki_identity
from .config import ServerConfig

log = logging.getLogger("securechat.server")

VALIDITY: Final = datetime.timedelta(days=3650)
# Backdated so that a client whose clock is a little behind does not see a future certificate.
BACKDATE: Final = datetime.timedelta(days=1)
COMMON_NAME: Final = "securechat server"


class IdentityError(ValueError):
    """The identity files cannot be used; the message says what to do (the CLI prints it as one line)."""


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The files, and the identity clients pin."""

    cert_path: Path
    key_path: Path
    identity: bytes  # SHA-256 of the certificate's DER SubjectPublicKeyInfo
    not_after: datetime.datetime
    created: bool = False

    @property
    def fingerprint(self) -> str:
        return self.identity.hex()

    def context(self) -> ssl.SSLContext:
        """The TLS server context; :class:`IdentityError` if the key does not match the certificate."""
        try:
            return server_context(self.cert_path, self.key_path)
        except (ssl.SSLError, OSError) as exc:
            raise IdentityError(
                f"cannot use {self.cert_path} with {self.key_path} ({_why(exc)}); "
                "are they a certificate and its own key, in PEM?"
            ) from None


def identity_for(config: ServerConfig) -> ServerIdentity:
    """The server's TLS identity: the given files, or the pair beside the database (made on first start)."""
    if config.tls_cert is not None and config.tls_key is not None:
        return load_or_create(config.tls_cert, config.tls_key, create=False)
    return load_or_create(*default_paths(config.db_path), create=True)


def default_paths(db_path: Path) -> tuple[Path, Path]:
    """``(certificate, key)`` beside the database."""
    stem = db_path.with_suffix("") if db_path.suffix else db_path
    return stem.with_name(stem.name + ".tls-cert.pem"), stem.with_name(stem.name + ".tls-key.pem")


def load_or_create(cert_path: Path, key_path: Path, *, create: bool, now: datetime.datetime | None = None) -> ServerIdentity:
    """The identity in these files; with ``create``, made first if neither file exists.

    Raises :class:`IdentityError` (one line: what is wrong and what to do) for a
    missing half, an unreadable or expired certificate.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if create and not have_cert and not have_key:
        return _create(cert_path, key_path, now)
    if not (have_cert and have_key):
        missing = cert_path if not have_cert else key_path
        hint = "delete the other file to make a new identity" if create else "give both --tls-cert and --tls-key"
        raise IdentityError(f"TLS identity: {missing} does not exist ({hint})")
    cert = _read_certificate(cert_path)
    if now > cert.not_valid_after_utc:
        raise IdentityError(
            f"the TLS certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: renew it over the "
            "same key (clients keep their pin), or delete both files for a new identity (clients then refuse it "
            "until each user accepts it)"
        )
    _warn_if_loose(key_path)
    return ServerIdentity(cert_path, key_path, spki_identity(cert), cert.not_valid_after_utc)


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise IdentityError(f"cannot read the TLS certificate {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise IdentityError(f"{path} is not a PEM certificate ({exc})") from None


def _create(cert_path: Path, key_path: Path, now: datetime.datetime) -> ServerIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    make_private_dir(key_path.parent)
    make_private_dir(cert_path.parent)
    write_private_file(key_path, key_pem)
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    identity = ServerIdentity(cert_path, key_path, spki_identity(cert), cert.not_valid_after_utc, created=True)
    log.info("created a TLS identity in %s and %s: %s", cert_path, key_path, format_fingerprint(identity.fingerprint))
    return identity


def _warn_if_loose(key_path: Path) -> None:
    try:
        mode = stat.S_IMODE(os.stat(key_path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("the TLS key %s is readable by others (mode %04o); chmod 600 it", key_path, mode)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):  # OpenSSL's reason, when it gives one, else what it was doing
        return str(exc.reason or "OpenSSL cannot read them").lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
