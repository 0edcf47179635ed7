"""The client's home directory: one directory per own name, its key files, and their permissions.

Layout::

    HOME/                       0700 when we create it
      NAME/                     0700, refused if group/others can access it
        identity.pem            0600, PKCS#8 PEM private key (passphrase-encrypted if one was given)
        identity.pub.pem        0600, the public key, so ``fingerprint`` needs no passphrase
        state.sqlite3           0600, the state database (:mod:`securechat.client.state`)
        lock                    0600, held (flock) by the one chat running as NAME; holds its pid

Like ssh, a key file or directory that group or others can access is refused
(:class:`~securechat.errors.InsecurePermissions`) before anything is read from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import crypto
from ..errors import BadKey, IdentityInUse, InsecurePermissions, KeyStoreError, WrongPassphrase
from ..files import FILE_MODE, write_private_file
from ..names import parse_typed_name
from .state import ClientStore

PRIVATE_KEY_FILE: Final = "identity.pem"
PUBLIC_KEY_FILE: Final = "identity.pub.pem"
STATE_FILE: Final = "state.sqlite3"
LOCK_FILE: Final = "lock"
# The holder writes its pid just after taking the lock; a refused start waits this long to read it.
LOCK_PID_WAIT: Final = 1.0
DIR_MODE: Final = 0o700


def default_home() -> Path:
    """``$SECURECHAT_HOME``, else the platform's per-user application directory."""
    env = os.environ.get("SECURECHAT_HOME")
    if env:
        return Path(env).expanduser()
    import click  # only for get_app_dir; the library otherwise has no CLI dependency

    return Path(click.get_app_dir("securechat"))


# --- private files ------------------------------------------------------------------------


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


def _private_state_file(directory: Path) -> Path:
    """The state database's path, created empty with mode 0600 if missing, then checked."""
    path = directory / STATE_FILE
    try:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise KeyStoreError(f"cannot create '{path}': {exc.strerror}") from None
    check_private_path(path, FILE_MODE)
    return path


# --- one process per identity ------------------------------------------------------------


class IdentityLock:
    """An exclusive ``flock`` on ``NAME/lock``: the kernel drops it when the process ends, crash included."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def take_lock(directory: Path) -> IdentityLock:
    """Lock ``directory`` for this process; :class:`IdentityInUse` (with the holder's pid) if taken."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise KeyStoreError(f"cannot open '{path}': {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(fd)
        os.close(fd)
        raise IdentityInUse(directory.name, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return IdentityLock(fd, path)


def _holder_pid(fd: int) -> int | None:
    deadline = time.monotonic() + LOCK_PID_WAIT
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)  # the holder is between flock() and write()


# --- identities ---------------------------------------------------------------------------


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
        self._private_dir(directory)
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

    def _private_dir(self, directory: Path) -> Path:
        """``directory`` (and the home above it), created 0700 if missing, then checked."""
        try:
            if not self.root.exists():
                self.root.mkdir(mode=DIR_MODE, parents=True)
            if not directory.exists():
                directory.mkdir(mode=DIR_MODE)
                os.chmod(directory, DIR_MODE)
        except OSError as exc:
            raise KeyStoreError(f"cannot create '{directory}': {exc.strerror}") from None
        check_private_path(directory, DIR_MODE)
        return directory

    def lock(self, name: str) -> IdentityLock:
        """Take ``name``'s lock (creating its directory on a first run); :class:`IdentityInUse` if held."""
        return take_lock(self._private_dir(self.identity_dir(name)))

    def remove_unused(self, name: str) -> None:
        """Remove ``name``'s directory if it holds nothing but the lock (a first start that stopped early)."""
        directory = self.identity_dir(name)
        with contextlib.suppress(OSError):
            (directory / LOCK_FILE).unlink()
            directory.rmdir()  # fails, and keeps everything, if anything else is in it

    def discard_identity(self, name: str) -> None:
        """Remove a key that was never used: made on this start and refused by the server."""
        directory = self.identity_dir(name)
        for suffix in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, STATE_FILE, STATE_FILE + "-wal", STATE_FILE + "-shm"):
            (directory / suffix).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (directory / LOCK_FILE).unlink()
            directory.rmdir()

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

    def open_store(self, name: str, identity: Identity | None = None) -> ClientStore:
        """Open the per-identity state (pins, accepted ids, outbox, history).

        Without ``identity`` only the public key is loaded: enough for pins (``verify``),
        not for history, which is sealed with a key wrapped by the private key.
        """
        directory = self.check_identity(name)
        public_key = identity.public_key if identity is not None else self.load_public_key(name)
        return ClientStore(_private_state_file(directory), public_key, identity)

    def open_or_create(
        self,
        name: str,
        passphrase: str | None = None,
        *,
        create: bool = True,
        bits: int = crypto.DEFAULT_KEY_BITS,
    ) -> ClientStore:
        """Load (or, with ``create``, generate on first use) ``name``'s identity and open its state."""
        if create and not self.has_identity(name):
            identity = self.create_identity(name, passphrase, bits=bits)
        else:
            identity = self.load_identity(name, passphrase)
        return self.open_store(name, identity)
