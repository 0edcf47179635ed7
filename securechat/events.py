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
from .rooms.log import RoomState

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
    """An incoming envelope passed every check.

    A room message names its ``room``; ``readers_gone`` are the names it was also
    sealed for who are no longer members as we see the room (the sender was behind:
    docs/protocol.md 11.7).
    """

    sender: str
    msg_id: str
    ts: int
    text: str
    payload: str
    server_ts: int | None = None
    room: str | None = None
    readers_gone: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """An incoming envelope failed a check; never shown as text."""

    sender: str
    msg_id: str | None
    reason: str
    detail: str = ""
    payload: str | None = None
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """The server acknowledged an own message: ``queued`` (stored), ``delivered`` or ``undeliverable``.

    ``undeliverable``: the recipient's client failed on it again and again and the
    server set it aside (docs/protocol.md, "Delivery"); it is not resent.

    For a room message ``to`` is the room and ``member`` the member this ack is about;
    ``delivered`` of ``total`` members have it so far (``total`` is 0 until the server
    has said whom it routed the message to). ``member`` "" (and ``delivered``): the server routed
    the room message to nobody, the sender being the room's only member; there is nothing to wait for.
    """

    msg_id: str
    to: str
    status: Literal["queued", "delivered", "undeliverable"]
    member: str | None = None
    delivered: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class RoomChanged:
    """A verified change of a room's membership (docs/protocol.md 11.7), or its state (``change`` "state").

    ``change`` is created, added, removed, joined, left, admin or state; ``by`` signed
    the change (None for "state").
    """

    room: str
    change: str
    name: str | None
    by: str | None
    members: tuple[str, ...]
    admins: tuple[str, ...]
    seq: int
    kind: str = "invite"


@dataclass(frozen=True, slots=True)
class RoomRejected:
    """A room change we could not verify, a fork, or a server that lists us out of a room without a
    signed change: refused, the view we hold is kept."""

    room: str
    reason: str
    detail: str = ""
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class RoomListing:
    room: str
    kind: str
    member: bool
    members: int


@dataclass(frozen=True, slots=True)
class RoomsListed:
    """The rooms the server lists for us (ours and the open ones), for ``/rooms``."""

    rooms: tuple[RoomListing, ...]


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
    """One page of the directory (docs/protocol.md, "The directory"); ``more``: names follow its last."""

    users: tuple[UserEntry, ...]
    more: bool = False


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
    retried: bool = False  # about the send ``msg_id``: the outbox keeps it and sends it again (else it failed)


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
    | RoomChanged
    | RoomRejected
    | RoomsListed
)

EventListener = Callable[[SessionEvent], None]


class RoomAPI(Protocol):
    """What a front end asks of a session's rooms (docs/protocol.md 11.7).

    The changes sign an entry on the room's verified head and wait for the server;
    they raise :class:`~securechat.errors.RoomRefused` (the rules, checked here first,
    or the server's answer), :class:`~securechat.errors.ServerErrorReply` or
    :class:`~securechat.errors.SessionClosed`. Every verified change is also a
    :class:`RoomChanged` event.
    """

    async def create(self, room: str, open_room: bool) -> None: ...

    async def join(self, room: str) -> None: ...

    async def add(self, room: str, name: str) -> None: ...

    async def remove(self, room: str, name: str) -> None: ...

    async def admin(self, room: str, name: str) -> None: ...

    async def leave(self, room: str) -> None: ...

    def state(self, room: str) -> RoomState | None:
        """The room as verified here (None if we hold no such room)."""
        ...

    def held(self) -> list[RoomState]:
        """Every room held here, sorted by name."""
        ...

    async def list_rooms(self) -> None:
        """Ask the server for our rooms and the open ones; the answer arrives as :class:`RoomsListed`."""
        ...


class SessionAPI(Protocol):
    """The calls a front end makes on a client session."""

    @property
    def rooms(self) -> RoomAPI:
        """Rooms: create, join, change, list (docs/protocol.md 11)."""
        ...

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

    async def list_users(self, after: str = "", prefix: str = "") -> UsersListed:
        """One page of the directory: at most 200 names above ``after`` that start with ``prefix``."""
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
