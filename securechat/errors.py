"""The one exception tree of securechat.

::

    SecurechatError
    ├── ProtocolError                 the peer broke the wire protocol
    │   ├── FrameError                framing: fatal, the connection closes
    │   │   ├── FrameTooLarge         length prefix of 0 or above max_frame
    │   │   └── BadFrame              not UTF-8 / not JSON / not an object / no type
    │   ├── BadRequest                a well-framed frame whose fields are wrong
    │   └── RoomRefused               a room change or request the rules refuse; ``code`` says which
    ├── BadKey                        a public key that is not RSA/65537/>=2048 or not one PEM block
    ├── EnvelopeRejected              an envelope failed a check; ``reason`` says which
    │   ├── MalformedEnvelope         missing field, wrong type, bad base64
    │   ├── UnsupportedVersion        ``v`` is not 1
    │   ├── WrongRecipient            ``to`` is not our name
    │   ├── SenderMismatch            ``from`` differs from the frame's ``from``
    │   ├── RoomMismatch              a room envelope's ``room`` differs from the frame's ``room``
    │   ├── UnknownState              a room envelope names a membership state we do not hold
    │   ├── NotAMember                a room envelope's sender is not a member of its state
    │   ├── MemberMismatch            a room envelope's keys are not for exactly its state's members
    │   ├── UnknownSender             no key to verify the sender with
    │   ├── SenderKeyChanged          the sender's key differs from the pinned one
    │   ├── BadSignature              PSS verification failed
    │   ├── UnwrapFailed              OAEP unwrap of the AES key failed
    │   ├── DecryptFailed             AES-GCM tag check failed
    │   └── BadPlaintext              plaintext is not the JSON object {"text": str}
    ├── UsageError                    a local mistake: what the user or the caller asked for (never sent)
    │   ├── InvalidName               a typed name that is not a valid name
    │   ├── InvalidRoomName           a typed room name that is not '#' and a valid name
    │   ├── InvalidFingerprint        a typed fingerprint that is not 64 hex digits
    │   └── MessageTooLong            a message that does not fit one frame
    ├── QueueFull                     server side: a recipient's offline queue is at its cap
    ├── ServerErrorReply              the server answered with an ``error`` frame
    ├── TransportError                the TLS layer under the frames (docs/protocol.md section 2.1)
    │   ├── TlsFailed                 the handshake or a record failed; ``first_bytes`` holds what came first
    │   ├── NotTls                    server side: the peer's first byte is not a TLS record
    │   └── ServerRefused             client side: we will not talk to this server (no retry)
    │       ├── WrongTransport        the server speaks plaintext where we speak TLS, or the reverse
    │       ├── BadServerCertificate  expired, not yet valid, or unreadable
    │       └── ServerIdentityRefused its identity is not the pinned (or the expected) one
    ├── KeyStoreError                 the client's home directory: keys, pins, files
    │   ├── InsecurePermissions       private key or directory readable by others
    │   ├── WrongPassphrase           the private key did not decrypt
    │   ├── IdentityInUse             another process is running as this identity in this home
    │   ├── NameTaken                 a new name is registered on the server already: no key is made
    │   └── KeyChanged                a contact's key differs from the pinned one
    └── SessionClosed                 the client session is closed or not connected
        └── RequestUnanswered         a request went out and its answer never came (connection lost, timeout)
"""

from __future__ import annotations


class SecurechatError(Exception):
    """Root of every exception securechat raises on purpose."""


# --- wire protocol -----------------------------------------------------------


class ProtocolError(SecurechatError):
    """The peer broke the protocol: ``code`` (docs/protocol.md section 9) and ``fatal`` (the connection closes)."""

    code: str = "bad_request"
    fatal: bool = False

    def __init__(self, detail: str, *, code: str | None = None, fatal: bool | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if fatal is not None:
            self.fatal = fatal

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class FrameError(ProtocolError):
    """A framing error; always fatal."""

    code = "bad_frame"
    fatal = True


class FrameTooLarge(FrameError):
    """The length prefix is 0 or larger than ``max_frame``."""

    code = "frame_too_large"

    def __init__(self, size: int, max_frame: int) -> None:
        self.size = size
        self.max_frame = max_frame
        if size == 0:
            super().__init__("frame length 0 is not allowed")
            self.code = "bad_frame"
        else:
            super().__init__(f"frame of {size} bytes exceeds the limit of {max_frame} bytes")


class BadFrame(FrameError):
    """The body is not UTF-8 JSON with an object top level and a string ``type``."""

    code = "bad_frame"


class BadRequest(ProtocolError):
    """A frame whose fields do not match its type's schema (non-fatal by default)."""

    code = "bad_request"


class RoomRefused(ProtocolError):
    """A room change or request that the rules of docs/protocol.md section 11 refuse.

    ``code`` is the wire error code (section 11.8: ``not_allowed``, ``not_member``,
    ``room_full``, ``bad_entry``, ...); the server answers with it, a client shows it.
    """

    code = "bad_entry"


class BadKey(SecurechatError):  # keys and envelopes
    """A public key that protocol v1 does not accept."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"bad key: {self.detail}"


class EnvelopeRejected(SecurechatError):
    """An envelope failed one of the recipient's checks.

    ``reason`` is the short machine-readable name shown in ``rejected`` events.
    """

    reason: str = "rejected"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class MalformedEnvelope(EnvelopeRejected):
    reason = "malformed"


class UnsupportedVersion(EnvelopeRejected):
    reason = "bad_version"


class WrongRecipient(EnvelopeRejected):
    reason = "bad_recipient"


class SenderMismatch(EnvelopeRejected):
    reason = "sender_mismatch"


class RoomMismatch(EnvelopeRejected):
    reason = "room_mismatch"


class UnknownState(EnvelopeRejected):
    reason = "unknown_state"


class NotAMember(EnvelopeRejected):
    reason = "not_member"


class MemberMismatch(EnvelopeRejected):
    reason = "member_mismatch"


class UnknownSender(EnvelopeRejected):
    reason = "unknown_sender"


class SenderKeyChanged(EnvelopeRejected):
    reason = "key_changed"


class BadSignature(EnvelopeRejected):
    reason = "bad_signature"


class UnwrapFailed(EnvelopeRejected):
    reason = "unwrap_failed"


class DecryptFailed(EnvelopeRejected):
    reason = "decrypt_failed"


class BadPlaintext(EnvelopeRejected):
    reason = "bad_plaintext"


# --- local mistakes ----------------------------------------------------------


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
        from .names import NAME_RULE, shown  # names imports this module

        return f"{shown(self.typed)} is not a valid name ({NAME_RULE})"


class InvalidRoomName(UsageError):
    """A typed room name that does not match the room rule (docs/protocol.md section 11.1)."""

    code = "invalid_name"

    def __init__(self, typed: str) -> None:
        super().__init__(typed)
        self.typed = typed

    def __str__(self) -> str:
        from .names import ROOM_RULE, shown  # names imports this module

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


# --- server side ---------------------------------------------------------------


class QueueFull(SecurechatError):
    """A recipient's offline queue is at its message-count or byte cap."""

    def __init__(self, recipient: str, count: int, size: int, limit: int, limit_bytes: int) -> None:
        super().__init__(recipient)
        self.recipient = recipient
        self.count = count
        self.size = size
        self.limit = limit
        self.limit_bytes = limit_bytes

    def __str__(self) -> str:
        return (
            f"the queue for '{self.recipient}' is full "
            f"({self.count}/{self.limit} messages, {self.size}/{self.limit_bytes} bytes)"
        )


# --- client side ---------------------------------------------------------------


class ServerErrorReply(SecurechatError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str, *, fatal: bool = False, rid: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.rid = rid

    def __str__(self) -> str:
        return f"server error {self.code}: {self.message}"


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


# --- the client's files ------------------------------------------------------------


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
