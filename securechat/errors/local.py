"""Local errors: mistakes in what was asked, the client's files, a session that is closed."""

from __future__ import annotations

from .base import SecurechatError


class UsageError(SecurechatError):
    """Something asked of us locally is invalid and nothing was sent (h11's LocalProtocolError).

    A typo is the user's to fix, not the peer's fault; ``code`` names it in ``--json`` error lines.
    """

    code: str = "bad_input"


class InvalidName(UsageError):
    """A typed name that does not match the name rule (docs/protocol.md section 3)."""

    code = "invalid_name"

    def __init__(self, typed: str) -> None:
        super().__init__(typed)
        self.typed = typed

    def __str__(self) -> str:
        from ..names import NAME_RULE, shown  # names imports this module

        return f"{shown(self.typed)} is not a valid name ({NAME_RULE})"


class InvalidRoomName(UsageError):
    """A typed room name that does not match the room rule (docs/protocol.md section 11.1)."""

    code = "invalid_name"

    def __init__(self, typed: str) -> None:
        super().__init__(typed)
        self.typed = typed

    def __str__(self) -> str:
        from ..names import ROOM_RULE, shown  # names imports this module

        return f"{shown(self.typed)} is not a valid room name ({ROOM_RULE})"


class InvalidFingerprint(UsageError):
    """A typed fingerprint that is not 64 hex digits once separators are removed."""

    code = "invalid_fingerprint"

    def __init__(self, typed: str) -> None:
        super().__init__(typed)
        self.typed = typed

    def __str__(self) -> str:
        return "a fingerprint is 64 hex digits (spaces, colons and dashes are ignored)"


class MessageTooLong(UsageError):
    """A message whose sealed frame would exceed the frame limit."""

    code = "too_long"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"the message is too long for one frame ({self.size} bytes sealed, the limit is {self.limit})"


class KeyStoreError(SecurechatError):
    """A problem with the client's home directory or the files in it."""


class InsecurePermissions(KeyStoreError):
    """A private key or its directory is accessible to other users."""

    def __init__(self, path: str, mode: int, wanted: int) -> None:
        super().__init__(path)
        self.path = path
        self.mode = mode
        self.wanted = wanted

    def __str__(self) -> str:
        return (
            f"permissions {self.mode:04o} for '{self.path}' are too open; "
            f"it must not be accessible by others (chmod {self.wanted:04o} '{self.path}')"
        )


class WrongPassphrase(KeyStoreError):
    """The passphrase does not decrypt the private key."""

    def __str__(self) -> str:
        return "wrong passphrase for the private key"


class IdentityInUse(KeyStoreError):
    """Another process holds the lock of this identity in this home (``pid`` if it said)."""

    def __init__(self, name: str, pid: int | None) -> None:
        super().__init__(name)
        self.name = name
        self.pid = pid

    def __str__(self) -> str:
        return f"{self.name} is already running in this home (pid {self.pid if self.pid else 'unknown'})"


class NameTaken(KeyStoreError):
    """The server has the name already (``check_name``): nothing was asked, made or kept for it."""


class KeyChanged(KeyStoreError):
    """A contact presented a key that differs from the one pinned for them."""

    def __init__(self, name: str, old_fingerprint: str, new_fingerprint: str) -> None:
        super().__init__(name)
        self.name = name
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = new_fingerprint

    def __str__(self) -> str:
        return (
            f"the key of '{self.name}' changed from {self.old_fingerprint} to "
            f"{self.new_fingerprint}; nothing is sent to them until you trust the new key"
        )


class SessionClosed(SecurechatError):
    """The client session is not connected or has been closed."""


class RequestUnanswered(SessionClosed):
    """A request was sent and its answer did not come: the connection went, or the wait timed out.

    Asking again later may well work, so what depended on it is kept and retried, never given up.
    """
