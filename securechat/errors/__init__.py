"""The one exception tree of securechat (import every class from here).

Its branches live in ``wire`` (the protocol and the server's answers), ``envelopes``
(keys and envelopes), ``transport`` (TLS) and ``local`` (mistakes, files, sessions).

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
    ├── QueueFull                     server side: a queue, a sender's share of it or the store is full
    ├── RegistrationRefused           server side: a new name over a registration bound
    ├── ServerErrorReply              the server answered with an ``error`` frame
    ├── TransportError                the TLS layer under the frames (docs/protocol.md section 2.1)
    │   ├── TlsFailed                 the handshake or a record failed; ``first_bytes`` holds what came first
    │   ├── NotTls                    server side: the peer's first byte is not a TLS record
    │   ├── BadProxyHeader            server side: a trusted balancer's PROXY header is missing or wrong
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

from .base import SecurechatError
from .envelopes import (
    BadKey,
    BadPlaintext,
    BadSignature,
    DecryptFailed,
    EnvelopeRejected,
    MalformedEnvelope,
    MemberMismatch,
    NotAMember,
    RoomMismatch,
    SenderKeyChanged,
    SenderMismatch,
    UnknownSender,
    UnknownState,
    UnsupportedVersion,
    UnwrapFailed,
    WrongRecipient,
)
from .local import (
    IdentityInUse,
    InsecurePermissions,
    InvalidFingerprint,
    InvalidName,
    InvalidRoomName,
    KeyChanged,
    KeyStoreError,
    MessageTooLong,
    NameTaken,
    RequestUnanswered,
    SessionClosed,
    UsageError,
    WrongPassphrase,
)
from .transport import (
    BadProxyHeader,
    BadServerCertificate,
    NotTls,
    ServerIdentityRefused,
    ServerRefused,
    TlsFailed,
    TransportError,
    WrongTransport,
)
from .wire import (
    BadFrame,
    BadRequest,
    FrameError,
    FrameTooLarge,
    ProtocolError,
    QueueFull,
    RegistrationRefused,
    RoomRefused,
    ServerErrorReply,
)

__all__ = [
    "BadFrame",
    "BadKey",
    "BadPlaintext",
    "BadProxyHeader",
    "BadRequest",
    "BadServerCertificate",
    "BadSignature",
    "DecryptFailed",
    "EnvelopeRejected",
    "FrameError",
    "FrameTooLarge",
    "IdentityInUse",
    "InsecurePermissions",
    "InvalidFingerprint",
    "InvalidName",
    "InvalidRoomName",
    "KeyChanged",
    "KeyStoreError",
    "MalformedEnvelope",
    "MemberMismatch",
    "MessageTooLong",
    "NameTaken",
    "NotAMember",
    "NotTls",
    "ProtocolError",
    "QueueFull",
    "RegistrationRefused",
    "RequestUnanswered",
    "RoomMismatch",
    "RoomRefused",
    "SecurechatError",
    "SenderKeyChanged",
    "SenderMismatch",
    "ServerErrorReply",
    "ServerIdentityRefused",
    "ServerRefused",
    "SessionClosed",
    "TlsFailed",
    "TransportError",
    "UnknownSender",
    "UnknownState",
    "UnsupportedVersion",
    "UnwrapFailed",
    "UsageError",
    "WrongPassphrase",
    "WrongRecipient",
    "WrongTransport",
]
