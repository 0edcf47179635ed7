"""The state database of one identity: pinned keys, accepted ids, the outbox and the history.

One SQLite file in the identity's directory (:mod:`securechat.client.home` creates
it with mode 0600 and checks it before this module opens it), written with
``synchronous=FULL`` (WAL), so an accepted ``(from, id)`` or an outbox entry is on
disk before the session acts on it. History text is sealed at rest
(:mod:`securechat.client.history`).

Storage knows nothing of sessions or user interfaces: it shares only the plain
records of :mod:`securechat.records` with the session API.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self, cast

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..clock import now_ms
from ..errors import BadKey, KeyChanged, KeyStoreError
from ..names import parse_fingerprint
from ..records import ContactInfo, TrustState
from .awaiting import AwaitingKey
from .history import History
from .pending import PendingSends
from .roomchains import RoomChains

if TYPE_CHECKING:  # home.py opens this module's stores; only the type goes the other way
    from .home import ClientHome, Identity

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    name TEXT PRIMARY KEY,
    pubkey TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    trust TEXT NOT NULL,
    pending_pubkey TEXT,
    pending_fingerprint TEXT,
    pinned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accepted (
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (sender, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_awaiting_key (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_set_aside (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    direction TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    UNIQUE (peer, direction, msg_id)
);
CREATE INDEX IF NOT EXISTS history_peer ON history (peer, seq);
"""


@dataclass(frozen=True, slots=True)
class Pin:
    """A pinned contact key, and the pending different key if the server presented one."""

    name: str
    pubkey: str
    fingerprint: str
    trust: TrustState
    pending_pubkey: str | None = None
    pending_fingerprint: str | None = None

    def public_key(self) -> rsa.RSAPublicKey:
        return crypto.load_public_key_pem(self.pubkey)

    def info(self) -> ContactInfo:
        return ContactInfo(self.name, self.fingerprint, self.trust, self.pending_fingerprint)


class ClientStore:
    """One identity's persistent state, in a single SQLite file.

    ``identity`` may be None for commands that only need pins (``verify``);
    history then raises :class:`KeyStoreError`.
    """

    def __init__(self, path: Path, public_key: rsa.RSAPublicKey, identity: Identity | None = None) -> None:
        self.directory = path.parent
        self.name = self.directory.name
        self.public_key = public_key
        self.identity = identity
        try:
            self._db = sqlite3.connect(path, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._db:
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open '{path}': {exc}") from None
        self.pins = PinnedKeys(self)
        self.accepted = AcceptedIds(self)
        self.outbox = PendingSends(self)
        self.awaiting = AwaitingKey(self)
        self.history = History(self)
        self.rooms = RoomChains(self)

    @classmethod
    def open(
        cls,
        home: ClientHome | Path | str | None,
        name: str,
        passphrase: str | None = None,
        *,
        create: bool = True,
        bits: int = crypto.DEFAULT_KEY_BITS,
    ) -> ClientStore:
        """Load (or, with ``create``, generate on first use) ``name``'s identity and open its state."""
        from .home import ClientHome  # home.py imports this module: resolve it at call time

        home = home if isinstance(home, ClientHome) else ClientHome(home)
        return home.open_or_create(name, passphrase, create=create, bits=bits)

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.public_key)

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise KeyStoreError(f"the private key of '{self.name}' is not loaded")
        return self.identity

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:
                yield self._db
        except sqlite3.Error as exc:
            raise KeyStoreError(f"state file of '{self.name}': {exc}") from None

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"state file of '{self.name}': {exc}") from None

    def compact(self) -> None:
        """Give the space of deleted rows back to the file system (``VACUUM``, then the WAL)."""
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise KeyStoreError(f"state file of '{self.name}': {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PinnedKeys:
    """Trust on first use: name -> key; a different key is never silently re-pinned."""

    def __init__(self, store: ClientStore) -> None:
        self._store = store
        own = crypto.public_key_pem(store.public_key)
        # Our own name's key is our own, never one the server presents (a room's bundled keys, a lookup):
        # else a server could pin a key of its own for us and sign room changes "by" us.
        self._own = Pin(store.name, own, crypto.fingerprint(store.public_key), "verified")

    def get(self, name: str) -> Pin | None:
        if name == self._own.name:
            return self._own
        rows = self._store.query(
            "SELECT name, pubkey, fingerprint, trust, pending_pubkey, pending_fingerprint "
            "FROM contacts WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        n, pem, fp, trust, ppem, pfp = rows[0]
        return Pin(n, pem, fp, cast(TrustState, trust), ppem, pfp)

    def all(self) -> list[Pin]:
        names = [row[0] for row in self._store.query("SELECT name FROM contacts ORDER BY name")]
        return [pin for pin in map(self.get, names) if pin is not None]

    def pin(self, name: str, pubkey_pem: str) -> Pin:
        """Pin ``pubkey_pem`` for ``name`` on first sight; raise :class:`KeyChanged` if it differs.

        A differing key is recorded as pending (trust ``changed``) so :meth:`trust`
        can accept it; until then the old pin stays in force.
        """
        key = crypto.load_public_key_pem(pubkey_pem)  # BadKey for anything unacceptable
        pem = crypto.public_key_pem(key)
        fp = crypto.fingerprint(key)
        current = self.get(name)
        if current is self._own and not hmac.compare_digest(current.fingerprint, fp):
            raise BadKey(f"the key presented for '{name}' is not this identity's own key")
        if current is None:
            with self._store.transaction() as db:
                db.execute(
                    "INSERT INTO contacts (name, pubkey, fingerprint, trust, pinned_at) VALUES (?, ?, ?, ?, ?)",
                    (name, pem, fp, "unverified", now_ms()),
                )
            return Pin(name, pem, fp, "unverified")
        if hmac.compare_digest(current.fingerprint, fp):
            if current.trust == "changed":
                raise KeyChanged(name, current.fingerprint, current.pending_fingerprint or fp)
            return current
        with self._store.transaction() as db:
            db.execute(
                "UPDATE contacts SET trust = 'changed', pending_pubkey = ?, pending_fingerprint = ? WHERE name = ?",
                (pem, fp, name),
            )
        raise KeyChanged(name, current.fingerprint, fp)

    def trust(self, name: str) -> Pin | None:
        """Accept the pending changed key of ``name``; it becomes the (unverified) pin."""
        current = self.get(name)
        if current is None or current.trust != "changed" or current.pending_pubkey is None:
            return current
        with self._store.transaction() as db:
            db.execute(
                "UPDATE contacts SET pubkey = pending_pubkey, fingerprint = pending_fingerprint, "
                "trust = 'unverified', pending_pubkey = NULL, pending_fingerprint = NULL, pinned_at = ? "
                "WHERE name = ?",
                (now_ms(), name),
            )
        return self.get(name)

    def verify(self, name: str, fingerprint: str) -> bool:
        """Mark ``name`` verified if ``fingerprint`` matches its key.

        While a key change is pending only the *new* key's fingerprint counts,
        and matching it accepts that key (verified out of band is stronger than trust).
        """
        current = self.get(name)
        if current is None:
            return False
        wanted = parse_fingerprint(fingerprint)
        if current.trust == "changed":
            if current.pending_fingerprint is None or not hmac.compare_digest(
                current.pending_fingerprint, wanted
            ):
                return False
            self.trust(name)
        elif not hmac.compare_digest(current.fingerprint, wanted):
            return False
        with self._store.transaction() as db:
            db.execute("UPDATE contacts SET trust = 'verified' WHERE name = ?", (name,))
        return True

    def info(self, name: str) -> ContactInfo:
        pin = self.get(name)
        return pin.info() if pin is not None else ContactInfo(name, None, None)


class AcceptedIds:
    """The ``(from, id)`` pairs already accepted: replays are confirmed, not shown again."""

    def __init__(self, store: ClientStore) -> None:
        self._store = store

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return bool(self._store.query("SELECT 1 FROM accepted WHERE sender = ? AND msg_id = ?", pair))

    def add(self, sender: str, msg_id: str) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO accepted (sender, msg_id, at) VALUES (?, ?, ?)",
                (sender, msg_id, now_ms()),
            )
