"""Known servers and the rule that checks a server's TLS identity (securechat/client/servers.py)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from securechat.client.servers import KnownServers, ServerTrust, server_address
from securechat.errors import BadServerCertificate, InsecurePermissions, KeyStoreError, ServerIdentityRefused
from securechat.server.identity import load_or_create
from tests.support.hostile import fake_identity


@pytest.fixture
def other(tmp_path: Path) -> tuple[bytes, str]:
    """Another server's certificate (DER) and identity."""
    ident = load_or_create(tmp_path / "c.pem", tmp_path / "k.pem", create=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(ident.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    return der, ident.fingerprint


def _der() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(fake_identity().cert_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_addresses() -> None:
    assert server_address("Chat.Example.ORG", 5000) == "chat.example.org:5000"
    assert server_address("::1", 5000) == server_address("[::1]", 5000) == "[::1]:5000"


def test_first_use_pins_then_the_same_passes_and_another_is_refused(tmp_path: Path, other: tuple[bytes, str]) -> None:
    known = KnownServers(tmp_path / "known_servers")
    trust = ServerTrust(known, accept="securechat-client trust-server")
    identity, new = trust.check("h:1", _der())
    assert new and identity == fake_identity().identity
    assert known.get("h:1") == fake_identity().fingerprint
    assert os.stat(known.path).st_mode & 0o777 == 0o600
    assert trust.check("h:1", _der()) == (identity, False)
    with pytest.raises(ServerIdentityRefused) as info:
        trust.check("h:1", other[0])
    refused = info.value
    assert (refused.source, refused.wanted, refused.presented) == ("pinned", fake_identity().fingerprint, other[1])
    assert refused.accept == f"securechat-client trust-server h:1 {other[1]}"
    assert known.get("h:1") == fake_identity().fingerprint  # the pin did not move
    # Another address is another pin.
    assert trust.check("h:2", other[0])[1] is True


def test_an_expected_fingerprint_is_checked_before_any_pin(tmp_path: Path, other: tuple[bytes, str]) -> None:
    known = KnownServers(tmp_path / "known_servers")
    with pytest.raises(ServerIdentityRefused) as info:
        ServerTrust(known, expected=other[1]).check("h:1", _der())
    assert info.value.source == "expected" and not known.path.exists()
    assert ServerTrust(known, expected=fake_identity().fingerprint).check("h:1", _der())[1] is True


def test_replace_keeps_the_other_addresses(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known_servers")
    known.pin("a:1", "a" * 64)
    known.pin("b:2", "b" * 64)
    known.replace("a:1", "c" * 64)
    assert known.entries() == {"a:1": "c" * 64, "b:2": "b" * 64}
    assert known.path.read_text().startswith("# securechat known servers")


def test_a_damaged_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "known_servers"
    path.write_text("a:1 " + "a" * 64 + "\nnot a line\n")
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="line 2 is not 'HOST:PORT FINGERPRINT'"):
        KnownServers(path).entries()


def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known_servers")
    known.pin("a:1", "a" * 64)
    known.path.chmod(0o666)
    with pytest.raises(InsecurePermissions):
        known.get("a:1")


def test_an_expired_certificate_is_refused_before_the_pin(tmp_path: Path) -> None:
    later = datetime.datetime(2300, 1, 1, tzinfo=datetime.UTC)
    trust = ServerTrust(KnownServers(tmp_path / "known_servers"), clock=lambda: later)
    with pytest.raises(BadServerCertificate, match="expired on"):
        trust.check("h:1", _der())
    assert not trust.known.path.exists()
