"""What a client session tells its user interface, and what the UI may ask of it.

The session (``securechat.client``) emits these immutable events; the line
and ``--json`` front ends and the full-screen UI only render them and turn
keystrokes into :class:`SessionAPI` calls. Nothing here imports
prompt_toolkit or touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import BadServerCertificate, ServerIdentityRefused, ServerRefused, WrongTransport
from .records import ContactInfo, HistoryEntry, TrustState

ConnectionStateName = Literal["connecting", "online", "reconnecting", "offline"]


@dataclass(frozen=True, slots=True)
class Ready:
    """Authenticated: the server sent ``welcome``."""

    name: str
    fingerprint: str
    new: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """Connection state for the status bar; ``retry_in`` seconds while reconnecting."""

    state: ConnectionStateName
    retry_in: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class KeyGenerating:
    """First run for a name: a key pair is being generated (takes a moment)."""

    name: str
    bits: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """An own message was sealed and handed to the connection (state: sending)."""

    msg_id: str
    to: str
    ts: int
    text: str
    payload: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An incoming envelope passed every check."""

    sender: str
    msg_id: str
    ts: int
    text: str
    payload: str
    server_ts: int | None = None


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """An incoming envelope failed a check; never shown as text."""

    sender: str
    msg_id: str | None
    reason: str
    detail: str = ""
    payload: str | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """The server acknowledged an own message: ``queued`` (stored) or ``delivered``."""

    msg_id: str
    to: str
    status: Literal["queued", "delivered"]


@dataclass(frozen=True, slots=True)
class KeyChangedAlert:
    """A contact's key differs from the pinned one; nothing is sent to them until trusted."""

    name: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ContactPinned:
    """A contact's key was seen for the first time and pinned (or re-pinned after trust)."""

    name: str
    fingerprint: str
    trust: TrustState = "unverified"


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    online: bool


@dataclass(frozen=True, slots=True)
class UsersListed:
    users: tuple[UserEntry, ...]


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    name: str
    online: bool


@dataclass(frozen=True, slots=True)
class ServerPinned:
    """First TLS connection to ``server`` (host:port): its identity was pinned (docs/protocol.md 2.1)."""

    server: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ServerRefusedAlert:
    """The client will not talk to ``server``: the session ends, without retrying.

    ``reason``: ``identity_changed`` (not the pinned identity), ``identity_mismatch`` (not
    ``--server-fingerprint``), ``plaintext_server``, ``bad_certificate`` or ``tls_failed``.
    For the two identity reasons, ``wanted`` is the pinned or expected identity,
    ``presented`` the server's and ``accept`` the command that accepts it once checked.
    """

    server: str
    reason: str
    detail: str
    presented: str | None = None
    wanted: str | None = None
    accept: str | None = None

    @classmethod
    def of(cls, exc: ServerRefused) -> ServerRefusedAlert:
        if isinstance(exc, ServerIdentityRefused):
            reason = "identity_changed" if exc.source == "pinned" else "identity_mismatch"
            return cls(exc.server, reason, exc.detail, exc.presented, exc.wanted, exc.accept)
        if isinstance(exc, WrongTransport):
            return cls(exc.server, "plaintext_server", exc.detail)
        if isinstance(exc, BadServerCertificate):
            return cls(exc.server, "bad_certificate", exc.detail)
        return cls(exc.server, "tls_failed", exc.detail)


@dataclass(frozen=True, slots=True)
class ErrorReported:
    """An error frame from the server, or a local failure worth showing."""

    code: str
    message: str
    fatal: bool = False
    msg_id: str | None = None


SessionEvent = (
    Ready
    | ConnectionChanged
    | KeyGenerating
    | MessageSent
    | MessageReceived
    | MessageRejected
    | Acked
    | KeyChangedAlert
    | ContactPinned
    | UsersListed
    | PresenceChanged
    | ServerPinned
    | ServerRefusedAlert
    | ErrorReported
)

EventListener = Callable[[SessionEvent], None]


class SessionAPI(Protocol):
    """The calls a front end makes on a client session."""

    async def run(self) -> None:
        """Connect, authenticate and serve until :meth:`close`; reconnects with backoff."""
        ...

    async def close(self) -> None:
        """Stop reconnecting and close the connection (pending sends stay in the outbox)."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def online(self) -> bool:
        """True while authenticated to the server (``/whois`` asks it then, else reads the pin)."""
        ...

    @property
    def plaintext(self) -> bool:
        """True when the session does not use TLS (``--plaintext``): the UI warns about it."""
        ...

    def add_listener(self, listener: EventListener) -> None: ...

    async def send(self, to: str, text: str) -> str:
        """Seal and send; returns the message id. Queued in the outbox while offline."""
        ...

    async def lookup(self, name: str) -> ContactInfo:
        """Ask the server for ``name``'s key; pin it on first sight, alert if it changed."""
        ...

    def unacknowledged(self) -> int:
        """How many own messages the server has not acknowledged yet (they stay in the outbox)."""
        ...

    async def list_users(self) -> None:
        """Ask the server for the directory; the answer arrives as :class:`UsersListed`."""
        ...

    def contact(self, name: str) -> ContactInfo: ...

    def trust(self, name: str) -> None:
        """Accept the pending changed key of ``name`` (after a :class:`KeyChangedAlert`)."""
        ...

    def verify(self, name: str, fingerprint: str) -> bool:
        """Mark ``name`` verified if ``fingerprint`` matches the pinned key; False if not."""
        ...

    def history(self, peer: str, limit: int = 200) -> list[HistoryEntry]:
        """The last ``limit`` entries of the conversation with ``peer``, oldest first."""
        ...
