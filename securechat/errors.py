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
    ├── KeyStoreError                 the client's home directory: keys, pins, files
    │   ├── InsecurePermissions       private key or directory readable by others
    │   ├── WrongPassphrase           the private key did not decrypt
    │   └── KeyChanged                a contact's key differs from the pinned one
    └── SessionClosed                 the client session is closed or not connected
        └── RequestUnanswered         a request went out and its answer never came (connection lost, timeout)
"""

from __future__ import annotations


class SecurechatError(Exception):
    """Root of every exception securechat raises on purpose."""


# --- wire protocol -----------------------------------------------------------


class ProtocolError(SecurechatError):
    """The peer sent something the protocol does not allow.

    ``code`` is the wire error code (docs/protocol.md section 9), ``fatal`` whether the
    connection must close after reporting it.
    """

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


# --- keys and envelopes ------------------------------------------------------


class BadKey(SecurechatError):
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
    """Something we were asked to do locally is invalid; nothing was sent.

    The local counterpart of :class:`ProtocolError` (h11's LocalProtocolError):
    a typo is the user's to fix, not the peer's fault. ``code`` names it for
    the ``--json`` mode's error lines.
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
