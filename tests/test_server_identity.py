"""The server's TLS identity files (securechat/server/identity.py)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from securechat.server import ServerConfig
from securechat.server.identity import IdentityError, default_paths, identity_for, load_or_create


def test_made_once_beside_the_database_and_kept(tmp_path: Path) -> None:
    config = ServerConfig(db_path=tmp_path / "server.db")
    first = identity_for(config)
    assert first.created
    assert (first.cert_path.name, first.key_path.name) == ("server.tls-cert.pem", "server.tls-key.pem")
    for path in (first.cert_path, first.key_path):
        assert os.stat(path).st_mode & 0o777 == 0o600
    again = identity_for(config)
    assert not again.created and again.identity == first.identity
    assert again.not_after > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3000)
    again.context()  # a usable TLS context


def test_given_files_are_never_made(tmp_path: Path) -> None:
    config = ServerConfig(db_path=tmp_path / "s.db", tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    with pytest.raises(IdentityError, match="does not exist"):
        identity_for(config)
    assert not (tmp_path / "c.pem").exists()


def test_a_missing_half_is_not_replaced(tmp_path: Path) -> None:
    cert, key = default_paths(tmp_path / "s.db")
    load_or_create(cert, key, create=True)
    key.unlink()
    with pytest.raises(IdentityError, match="delete the other file"):
        load_or_create(cert, key, create=True)


def test_an_expired_certificate_says_what_to_do(tmp_path: Path) -> None:
    cert, key = default_paths(tmp_path / "s.db")
    made = load_or_create(cert, key, create=True)
    with pytest.raises(IdentityError, match="expired on .* renew it over the same key"):
        load_or_create(cert, key, create=True, now=made.not_after + datetime.timedelta(days=1))


def test_both_files_or_neither(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        ServerConfig(db_path=tmp_path / "s.db", tls_cert=tmp_path / "c.pem").validate()


@pytest.mark.parametrize(("db", "cert"), [("server.db", "server.tls-cert.pem"), ("data", "data.tls-cert.pem")])
def test_default_names(tmp_path: Path, db: str, cert: str) -> None:
    assert default_paths(tmp_path / db)[0].name == cert
