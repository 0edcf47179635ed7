"""The client's home directory: identity key, pinned contacts, accepted ids, outbox, history.

Layout (one subdirectory per own name)::

    HOME/                       0700 when we create it
      NAME/                     0700, refused if group/others can access it
        identity.pem            0600, PKCS#8 PEM private key (passphrase-encrypted if one was given)
        identity.pub.pem        0600, the public key, so ``fingerprint`` needs no passphrase
        state.sqlite3           0600, contacts, accepted ids, outbox, history

The SQLite file is written with ``synchronous=FULL`` (WAL), so an accepted
``(from, id)`` or an outbox entry is on disk before the session acts on it.
History text is sealed with AES-256-GCM under a random history key that is
stored OAEP-wrapped with the identity key: it is exactly as protected as the
private key itself.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto
from .clock import now_ms
from .encoding import lp
from .envelope import GCM_NONCE_SIZE
from .errors import (
    BadKey,
    DecryptFailed,
    InsecurePermissions,
    KeyChanged,
    KeyStoreError,
    UnwrapFailed,
    WrongPassphrase,
)
from .names import parse_fingerprint, parse_typed_name
from .records import ContactInfo, HistoryEntry, TrustState

PRIVATE_KEY_FILE: Final = "identity.pem"
PUBLIC_KEY_FILE: Final = "identity.pub.pem"
STATE_FILE: Final = "state.sqlite3"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
HISTORY_LABEL: Final = b"securechat-history-v1"
HISTORY_KEY_META: Final = "history_key"
SCHEMA_VERSION: Final = 1

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


def default_home() -> Path:
    """``$SECURECHAT_HOME``, else the platform's per-user application directory."""
    env = os.environ.get("SECURECHAT_HOME")
    if env:
        return Path(env).expanduser()
    import click  # only for get_app_dir; the library otherwise has no CLI dependency

    return Path(click.get_app_dir("securechat"))


# --- files ------------------------------------------------------------------------------


def check_private_path(path: Path, wanted: int) -> None:
    """Refuse, like ssh, a key file or directory that group or others can access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyStoreError(f"'{path}' does not exist") from None
    except OSError as exc:
        raise KeyStoreError(f"cannot read '{path}': {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecurePermissions(str(path), mode, wanted)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KeyStoreError(f"'{path}' is not owned by the current user")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (tmp + fsync + rename) with mode 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have removed bits; never added any
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# --- the identity -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """An own name with its private key."""

    name: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def public_pem(self) -> str:
        return crypto.public_key_pem(self.public_key)

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.public_key)


class ClientHome:
    """The home directory holding one identity directory per own name."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_home()

    def identity_dir(self, name: str) -> Path:
        return self.root / parse_typed_name(name)

    def has_identity(self, name: str) -> bool:
        return (self.identity_dir(name) / PRIVATE_KEY_FILE).exists()

    def key_is_encrypted(self, name: str) -> bool:
        """True if the stored private key needs a passphrase."""
        path = self.identity_dir(name) / PRIVATE_KEY_FILE
        try:
            head = path.read_bytes()[:64]
        except OSError as exc:
            raise KeyStoreError(f"cannot read '{path}': {exc.strerror}") from None
        return b"ENCRYPTED" in head

    def create_identity(
        self, name: str, passphrase: str | None = None, *, bits: int = crypto.DEFAULT_KEY_BITS
    ) -> Identity:
        """Generate and store a new key for ``name``; refuses to overwrite an existing one."""
        directory = self.identity_dir(name)
        if (directory / PRIVATE_KEY_FILE).exists():
            raise KeyStoreError(f"an identity for '{directory.name}' already exists in '{directory}'")
        try:
            if not self.root.exists():
                self.root.mkdir(mode=DIR_MODE, parents=True)
            if not directory.exists():
                directory.mkdir(mode=DIR_MODE)
                os.chmod(directory, DIR_MODE)
        except OSError as exc:
            raise KeyStoreError(f"cannot create '{directory}': {exc.strerror}") from None
        check_private_path(directory, DIR_MODE)
        key = crypto.generate_private_key(bits)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
            if passphrase
            else serialization.NoEncryption()
        )
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        identity = Identity(directory.name, key)
        try:
            write_private_file(directory / PUBLIC_KEY_FILE, identity.public_pem.encode("ascii"))
            write_private_file(directory / PRIVATE_KEY_FILE, private_pem)
        except OSError as exc:
            raise KeyStoreError(f"cannot write the key in '{directory}': {exc.strerror}") from None
        return identity

    def check_identity(self, name: str) -> Path:
        """The identity directory of ``name``, after checking it exists and is private."""
        directory = self.identity_dir(name)
        if not (directory / PRIVATE_KEY_FILE).exists():
            raise KeyStoreError(
                f"no identity '{directory.name}' in '{self.root}' "
                f"(run 'securechat-client --name {directory.name}' once to create it)"
            )
        check_private_path(directory, DIR_MODE)
        check_private_path(directory / PRIVATE_KEY_FILE, FILE_MODE)
        return directory

    def load_identity(self, name: str, passphrase: str | None = None) -> Identity:
        """Load the private key of ``name``; checks permissions and the passphrase."""
        directory = self.check_identity(name)
        data = (directory / PRIVATE_KEY_FILE).read_bytes()
        encrypted = b"ENCRYPTED" in data[:64]
        if encrypted and not passphrase:
            raise KeyStoreError(
                f"the key of '{directory.name}' is protected by a passphrase; "
                "give it (or set SECURECHAT_PASSPHRASE)"
            )
        password = passphrase.encode("utf-8") if encrypted and passphrase else None
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except ValueError:
            if encrypted:
                raise WrongPassphrase() from None
            raise KeyStoreError(f"'{directory / PRIVATE_KEY_FILE}' is not a readable private key") from None
        except TypeError as exc:
            raise KeyStoreError(f"cannot load '{directory / PRIVATE_KEY_FILE}': {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyStoreError(f"'{directory / PRIVATE_KEY_FILE}' is not an RSA key")
        try:
            crypto.check_public_key(key.public_key())
        except BadKey as exc:
            raise KeyStoreError(f"'{directory / PRIVATE_KEY_FILE}': {exc}") from None
        return Identity(directory.name, key)

    def load_public_key(self, name: str) -> rsa.RSAPublicKey:
        """The public half of ``name``'s identity (no passphrase needed)."""
        directory = self.check_identity(name)
        try:
            return crypto.load_public_key_pem((directory / PUBLIC_KEY_FILE).read_text("ascii"))
        except (OSError, UnicodeDecodeError, BadKey) as exc:
            raise KeyStoreError(f"cannot read the public key of '{directory.name}': {exc}") from None

    def open_store(self, name: str, identity: Identity | None = None) -> KeyStore:
        """Open the per-identity state (pins, accepted ids, outbox, history)."""
        directory = self.check_identity(name)
        public_key = identity.public_key if identity is not None else self.load_public_key(name)
        return KeyStore(directory, public_key, identity)


# --- the per-identity state ----------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A sealed message the server has not acknowledged yet."""

    msg_id: str
    recipient: str
    envelope: dict[str, Any]
    created: int


class KeyStore:
    """One identity's persistent state, in a single SQLite file (mode 0600).

    ``identity`` may be None for commands that only need pins (``verify``);
    history then raises :class:`KeyStoreError`.
    """

    def __init__(
        self, directory: Path, public_key: rsa.RSAPublicKey, identity: Identity | None = None
    ) -> None:
        self.directory = directory
        self.name = directory.name
        self.public_key = public_key
        self.identity = identity
        path = directory / STATE_FILE
        try:
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyStoreError(f"cannot create '{path}': {exc.strerror}") from None
        check_private_path(path, FILE_MODE)
        try:
            self._db = sqlite3.connect(path, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._db:
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open '{path}': {exc}") from None
        self._history_key: bytes | None = None
        self.pins = PinnedKeys(self)
        self.accepted = AcceptedIds(self)
        self.outbox = Outbox(self)
        self.history = History(self)

    @classmethod
    def open(
        cls,
        home: ClientHome | Path | str | None,
        name: str,
        passphrase: str | None = None,
        *,
        create: bool = True,
        bits: int = crypto.DEFAULT_KEY_BITS,
    ) -> KeyStore:
        """Load (or, with ``create``, generate on first use) ``name``'s identity and open its state."""
        home = home if isinstance(home, ClientHome) else ClientHome(home)
        if create and not home.has_identity(name):
            identity = home.create_identity(name, passphrase, bits=bits)
        else:
            identity = home.load_identity(name, passphrase)
        return home.open_store(name, identity)

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

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def history_key(self) -> bytes:
        """The AES key sealing history rows; created on first use, stored OAEP-wrapped."""
        if self._history_key is not None:
            return self._history_key
        identity = self.require_identity()
        rows = self.query("SELECT v FROM meta WHERE k = ?", (HISTORY_KEY_META,))
        if rows:
            try:
                key = crypto.oaep_unwrap(identity.private_key, bytes(rows[0][0]))
            except UnwrapFailed:
                raise KeyStoreError("the history key does not unwrap with this identity key") from None
        else:
            key = os.urandom(crypto.AES_KEY_SIZE)
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO meta (k, v) VALUES (?, ?)",
                    (HISTORY_KEY_META, crypto.oaep_wrap(identity.public_key, key)),
                )
        self._history_key = key
        return key


class PinnedKeys:
    """Trust on first use: name -> key; a different key is never silently re-pinned."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    def get(self, name: str) -> Pin | None:
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

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return bool(self._store.query("SELECT 1 FROM accepted WHERE sender = ? AND msg_id = ?", pair))

    def add(self, sender: str, msg_id: str) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO accepted (sender, msg_id, at) VALUES (?, ?, ?)",
                (sender, msg_id, now_ms()),
            )


class Outbox:
    """Sealed messages waiting for their ``ack``, resent with the same id after a reconnect."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    def add(self, recipient: str, envelope: dict[str, Any]) -> None:
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, recipient, envelope, created) VALUES (?, ?, ?, ?)",
                (envelope["id"], recipient, json.dumps(envelope, separators=(",", ":")), now_ms()),
            )

    def remove(self, msg_id: str) -> OutboxEntry | None:
        entry = self.get(msg_id)
        if entry is not None:
            with self._store.transaction() as db:
                db.execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,))
        return entry

    def get(self, msg_id: str) -> OutboxEntry | None:
        rows = self._store.query(
            "SELECT msg_id, recipient, envelope, created FROM outbox WHERE msg_id = ?", (msg_id,)
        )
        return self._entry(rows[0]) if rows else None

    def entries(self) -> list[OutboxEntry]:
        rows = self._store.query("SELECT msg_id, recipient, envelope, created FROM outbox ORDER BY seq")
        return [self._entry(row) for row in rows]

    def __len__(self) -> int:
        return int(self._store.query("SELECT COUNT(*) FROM outbox")[0][0])

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> OutboxEntry:
        return OutboxEntry(row[0], row[1], json.loads(row[2]), row[3])


class History:
    """Per-conversation history; each row's content sealed with AES-256-GCM.

    The peer, direction and id stay in clear (to find rows) and are bound to
    the sealed content as associated data, so rows cannot be swapped.
    """

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    @staticmethod
    def _aad(peer: str, direction: str, msg_id: str) -> bytes:
        return lp(HISTORY_LABEL, peer, direction, msg_id)

    def _seal(self, entry: HistoryEntry) -> tuple[bytes, bytes]:
        nonce = os.urandom(GCM_NONCE_SIZE)
        body = json.dumps({"ts": entry.ts, "text": entry.text, "status": entry.status}).encode("utf-8")
        sealed = crypto.gcm_seal(
            self._store.history_key(), nonce, body, self._aad(entry.peer, entry.direction, entry.msg_id)
        )
        return nonce, sealed

    def add(self, entry: HistoryEntry, *, accepted: bool = False) -> None:
        """Store ``entry``; with ``accepted``, also record its ``(peer, id)`` as accepted.

        Both in one transaction: a crash between two commits would keep the id as
        accepted (so every redelivery is confirmed and dropped) with no history
        row and nothing shown, losing the message.
        """
        nonce, sealed = self._seal(entry)
        with self._store.transaction() as db:
            if accepted:
                db.execute(
                    "INSERT OR IGNORE INTO accepted (sender, msg_id, at) VALUES (?, ?, ?)",
                    (entry.peer, entry.msg_id, now_ms()),
                )
            db.execute(
                "INSERT OR IGNORE INTO history (peer, direction, msg_id, nonce, sealed) VALUES (?, ?, ?, ?, ?)",
                (entry.peer, entry.direction, entry.msg_id, nonce, sealed),
            )

    def get(self, peer: str, direction: Literal["in", "out"], msg_id: str) -> HistoryEntry | None:
        rows = self._store.query(
            "SELECT peer, direction, msg_id, nonce, sealed FROM history "
            "WHERE peer = ? AND direction = ? AND msg_id = ?",
            (peer, direction, msg_id),
        )
        return self._open(rows[0]) if rows else None

    def set_status(self, peer: str, msg_id: str, status: str) -> bool:
        """Update an own message's status; False if there is no such message."""
        current = self.get(peer, "out", msg_id)
        if current is None:
            return False
        if current.status == status:
            return True
        updated = HistoryEntry(current.peer, "out", msg_id, current.ts, current.text, status)
        nonce, sealed = self._seal(updated)
        with self._store.transaction() as db:
            db.execute(
                "UPDATE history SET nonce = ?, sealed = ? WHERE peer = ? AND direction = 'out' AND msg_id = ?",
                (nonce, sealed, peer, msg_id),
            )
        return True

    def recent(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        rows = self._store.query(
            "SELECT peer, direction, msg_id, nonce, sealed FROM history WHERE peer = ? ORDER BY seq DESC LIMIT ?",
            (peer, max(0, limit)),
        )
        return [self._open(row) for row in reversed(rows)]

    def peers(self) -> list[str]:
        return [row[0] for row in self._store.query("SELECT DISTINCT peer FROM history ORDER BY peer")]

    def _open(self, row: tuple[Any, ...]) -> HistoryEntry:
        peer, direction, msg_id, nonce, sealed = row
        try:
            body = json.loads(
                crypto.gcm_open(
                    self._store.history_key(), bytes(nonce), bytes(sealed), self._aad(peer, direction, msg_id)
                )
            )
        except DecryptFailed:
            raise KeyStoreError(f"a history entry with '{peer}' is corrupt or was tampered with") from None
        return HistoryEntry(
            peer, direction, msg_id, int(body["ts"]), str(body["text"]), str(body.get("status", ""))
        )
