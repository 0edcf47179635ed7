"""The client's home directory: key files and modes, passphrases, pins, accepted ids, outbox, history."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from securechat import crypto
from securechat.client.home import PRIVATE_KEY_FILE, STATE_FILE, ClientHome
from securechat.client.state import ClientStore
from securechat.errors import (
    BadKey,
    InsecurePermissions,
    InvalidName,
    KeyChanged,
    KeyStoreError,
    WrongPassphrase,
)
from securechat.names import format_fingerprint
from securechat.records import HistoryEntry

BITS = 2048


@pytest.fixture(scope="module")
def other_keys() -> list[crypto.PrivateKey]:
    return [crypto.generate_private_key(BITS) for _ in range(2)]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_then_reuse_with_private_modes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with ClientStore.open(home, "Alice", bits=BITS) as store:
        first = store.fingerprint
        assert store.name == "alice"
    directory = home / "alice"
    assert mode(directory) == 0o700
    assert mode(directory / PRIVATE_KEY_FILE) == 0o600
    assert mode(directory / STATE_FILE) == 0o600
    assert (directory / PRIVATE_KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not list(directory.glob(".*.tmp"))
    with ClientStore.open(home, "alice") as again:
        assert again.fingerprint == first
    assert ClientHome(home).load_public_key("alice").public_numbers() == again.public_key.public_numbers()


def test_no_identity_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no identity 'bob'"):
        ClientStore.open(tmp_path, "bob", create=False)
    with pytest.raises(InvalidName, match="not a valid name"):
        ClientHome(tmp_path).identity_dir("../etc")


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660])
def test_loose_key_file_refused(tmp_path: Path, loose: int) -> None:
    ClientStore.open(tmp_path, "alice", bits=BITS).close()
    key = tmp_path / "alice" / PRIVATE_KEY_FILE
    os.chmod(key, loose)
    with pytest.raises(InsecurePermissions) as info:
        ClientStore.open(tmp_path, "alice")
    assert "chmod 0600" in str(info.value) and str(key) in str(info.value)


def test_loose_directory_refused(tmp_path: Path) -> None:
    ClientStore.open(tmp_path, "alice", bits=BITS).close()
    os.chmod(tmp_path / "alice", 0o755)
    with pytest.raises(InsecurePermissions, match="chmod 0700"):
        ClientStore.open(tmp_path, "alice")


def test_passphrase_right_wrong_missing(tmp_path: Path) -> None:
    home = ClientHome(tmp_path)
    identity = home.create_identity("alice", "correct horse", bits=BITS)
    assert home.key_is_encrypted("alice")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "alice" / PRIVATE_KEY_FILE).read_bytes()
    assert home.load_identity("alice", "correct horse").fingerprint == identity.fingerprint
    with pytest.raises(WrongPassphrase):
        home.load_identity("alice", "wrong")
    with pytest.raises(KeyStoreError, match="passphrase"):
        home.load_identity("alice")
    # The public half needs no passphrase.
    assert crypto.fingerprint(home.load_public_key("alice")) == identity.fingerprint


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    home = ClientHome(tmp_path)
    home.create_identity("alice", bits=BITS)
    with pytest.raises(KeyStoreError, match="already exists"):
        home.create_identity("alice", bits=BITS)


def test_tofu_pin_change_trust_verify(tmp_path: Path, other_keys: list[crypto.PrivateKey]) -> None:
    old_pem = crypto.public_key_pem(other_keys[0].public_key())
    new_pem = crypto.public_key_pem(other_keys[1].public_key())
    old_fp = crypto.fingerprint(other_keys[0].public_key())
    new_fp = crypto.fingerprint(other_keys[1].public_key())
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        pin = store.pins.pin("bob", old_pem)
        assert (pin.fingerprint, pin.trust) == (old_fp, "unverified")
        assert store.pins.pin("bob", old_pem).fingerprint == old_fp  # same key: no change
        with pytest.raises(KeyChanged) as info:
            store.pins.pin("bob", new_pem)
        assert (info.value.old_fingerprint, info.value.new_fingerprint) == (old_fp, new_fp)
    # Never silently re-pinned, also after a restart.
    with ClientStore.open(tmp_path, "alice") as store:
        stored = store.pins.get("bob")
        assert stored is not None and stored.fingerprint == old_fp and stored.trust == "changed"
        assert stored.pending_fingerprint == new_fp
        with pytest.raises(KeyChanged):
            store.pins.pin("bob", new_pem)
        assert not store.pins.verify("bob", old_fp)  # only the pending key counts while changed
        trusted = store.pins.trust("bob")
        assert trusted is not None and (trusted.fingerprint, trusted.trust) == (new_fp, "unverified")
        assert trusted.pending_fingerprint is None
        assert not store.pins.verify("bob", old_fp)
        assert store.pins.verify("bob", format_fingerprint(new_fp).upper())
        assert store.pins.info("bob").trust == "verified"
        assert store.pins.info("carol").fingerprint is None


def test_verify_accepts_pending_key(tmp_path: Path, other_keys: list[crypto.PrivateKey]) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        store.pins.pin("bob", crypto.public_key_pem(other_keys[0].public_key()))
        with pytest.raises(KeyChanged):
            store.pins.pin("bob", crypto.public_key_pem(other_keys[1].public_key()))
        assert store.pins.verify("bob", crypto.fingerprint(other_keys[1].public_key()))
        assert store.pins.info("bob").trust == "verified"
        assert store.pins.info("bob").fingerprint == crypto.fingerprint(other_keys[1].public_key())


def test_pin_rejects_bad_key(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        with pytest.raises(BadKey):
            store.pins.pin("bob", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
        assert store.pins.get("bob") is None


def test_accepted_ids_persist(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        assert ("bob", "a" * 32) not in store.accepted
        store.accepted.add("bob", "a" * 32)
        store.accepted.add("bob", "a" * 32)  # idempotent
    with ClientStore.open(tmp_path, "alice") as store:
        assert ("bob", "a" * 32) in store.accepted
        assert ("carol", "a" * 32) not in store.accepted


def test_outbox_persists_in_order(tmp_path: Path, other_keys: list[crypto.PrivateKey]) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        assert store.identity is not None
        envelopes = [
            crypto.seal_envelope(
                store.identity.private_key, other_keys[0].public_key(), "alice", "bob", f"m{i}"
            )
            for i in range(3)
        ]
        for env in envelopes:
            store.outbox.add("bob", env)
        assert store.outbox.remove(envelopes[1]["id"]) is not None
        assert store.outbox.remove(envelopes[1]["id"]) is None
        # discard and `in` (a settled room message's row is dropped unread): a row, once.
        store.outbox.add("bob", envelopes[1])
        assert envelopes[1]["id"] in store.outbox and "f" * 32 not in store.outbox
        assert store.outbox.discard(envelopes[1]["id"]) and not store.outbox.discard(envelopes[1]["id"])
        assert envelopes[1]["id"] not in store.outbox
    with ClientStore.open(tmp_path, "alice") as store:
        entries = store.outbox.entries()
        assert [e.msg_id for e in entries] == [envelopes[0]["id"], envelopes[2]["id"]]
        assert entries[0].envelope == envelopes[0] and entries[0].recipient == "bob"
        assert len(store.outbox) == 2


def test_history_encrypted_at_rest(tmp_path: Path) -> None:
    secret = "the eagle lands at midnight"
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        store.history.add(HistoryEntry("bob", "out", "1" * 32, 1000, secret, "sending"))
        store.history.add(HistoryEntry("bob", "in", "2" * 32, 2000, "reply " + secret))
        assert store.history.set_status("bob", "1" * 32, "delivered")
        assert not store.history.set_status("bob", "3" * 32, "delivered")
    raw = b"".join(p.read_bytes() for p in (tmp_path / "alice").iterdir() if p.is_file())
    assert secret.encode() not in raw
    with ClientStore.open(tmp_path, "alice") as store:
        entries = store.history.recent("bob")
        assert [(e.direction, e.text, e.status) for e in entries] == [
            ("out", secret, "delivered"),
            ("in", "reply " + secret, ""),
        ]
        assert store.history.recent("bob", limit=1)[0].direction == "in"
        assert store.history.recent("carol") == []


def test_history_needs_the_private_key(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        store.history.add(HistoryEntry("bob", "in", "1" * 32, 1, "hi"))
    with ClientHome(tmp_path).open_store("alice") as store, pytest.raises(KeyStoreError, match="not loaded"):
        store.history.recent("bob")  # only the public half is loaded


def test_history_rows_cannot_be_swapped(tmp_path: Path) -> None:
    with ClientStore.open(tmp_path, "alice", bits=BITS) as store:
        store.history.add(HistoryEntry("bob", "in", "1" * 32, 1, "to bob"))
        with store.transaction() as db:
            db.execute("UPDATE history SET peer = 'mallory' WHERE peer = 'bob'")
        with pytest.raises(KeyStoreError, match="tampered"):
            store.history.recent("mallory")
