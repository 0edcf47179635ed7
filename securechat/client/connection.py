"""The client's side of one connection, sans I/O (in the style of h11's ``Connection``).

:class:`ClientConnection` takes the bytes the server sent (:meth:`~ClientConnection.receive_data`,
:meth:`~ClientConnection.receive_eof`) and returns what they mean as events; what the
client must send waits in :meth:`~ClientConnection.data_to_send`. It owns the handshake of
docs/protocol.md section 4 ("Session start"): the ``hello`` is queued when the object is
made, the ``auth`` answer (:func:`securechat.crypto.sign_auth`) when a ``challenge``
arrives. It validates every server frame (:func:`securechat.protocol.validate_server_frame`)
and never raises for anything the server sends: a bad frame is a :class:`Notice` and is
skipped, a framing error fails the connection and the rest of the input is discarded.

Nothing here reads a socket, a clock or the client's storage: the session
(``session.py``), the bench's load generator and the tests' raw client all drive it.

States (what the client waits for) and phases (how the connection is doing)::

    AWAIT_CHALLENGE --challenge--> AWAIT_WELCOME --welcome--> OPEN
    phase: HANDSHAKE ------------------------------------------> OPEN
           any state: framing error, bad challenge, welcome for another name,
                      fatal error before welcome                 -> FAILED
           any state: end of the server's stream                  -> CLOSED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .. import crypto
from ..encoding import b64decode, b64encode
from ..envelope import is_message_id, is_timestamp
from ..errors import ProtocolError, ServerErrorReply
from ..names import is_valid_name, is_valid_room
from ..protocol import DEFAULT_MAX_FRAME, PROTOCOL_VERSION, FrameDecoder, encode_frame, validate_server_frame
from ..rooms.frames import ROOM_SERVER_TYPES

BAD_SERVER_FRAME: Final = "bad_server_frame"


class State(enum.Enum):
    """What the client waits for next."""

    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_WELCOME = "await_welcome"
    OPEN = "open"


class Phase(enum.Enum):
    """How the connection is doing; only HANDSHAKE and OPEN read any more input."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    FAILED = "failed"  # we gave up on the server's bytes: the caller closes the socket
    CLOSED = "closed"  # the server ended its stream


# The server frame types each state acts on, and the state each leads to. A valid frame
# of any other type is ignored (docs/protocol.md section 4: clients ignore unknown types;
# before welcome, only the handshake matters).
TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    State.AWAIT_CHALLENGE: {"challenge": State.AWAIT_WELCOME, "error": State.AWAIT_CHALLENGE},
    State.AWAIT_WELCOME: {"welcome": State.OPEN, "error": State.AWAIT_WELCOME},
    State.OPEN: {
        kind: State.OPEN
        for kind in ("key", "users", "presence", "message", "ack", "error", "pong", *sorted(ROOM_SERVER_TYPES))
    },
}


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should hear about: a frame that was skipped, or why we failed."""

    code: str
    message: str
    fatal: bool = False
    frame_type: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class Dropped:
    """The connection is unusable (phase FAILED or CLOSED); ``reason`` says why."""

    reason: str
    frame_type: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The server accepted our ``auth``; ``new`` when this login registered the name."""

    new: bool
    frame_type: ClassVar[str] = "welcome"


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` frame; ``error.fatal`` means the server closes the connection after it."""

    error: ServerErrorReply
    frame_type: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """A ``key`` frame: the server's answer to ``lookup``."""

    name: str
    pubkey: str
    rid: str | None
    frame_type: ClassVar[str] = "key"


@dataclass(frozen=True, slots=True)
class UsersAnswer:
    """A ``users`` frame: the server's answer to ``list``."""

    users: tuple[tuple[str, bool], ...]
    more: bool  # names follow the last one (absent before paging: the whole directory)
    rid: str | None
    frame_type: ClassVar[str] = "users"


@dataclass(frozen=True, slots=True)
class PresencePush:
    """A ``presence`` frame."""

    name: str
    online: bool
    frame_type: ClassVar[str] = "presence"


@dataclass(frozen=True, slots=True)
class MessageFrame:
    """A ``message`` frame we can answer ``received`` to; its envelope is not checked yet."""

    sender: str
    envelope: dict[str, Any]
    server_ts: int | None
    room: str | None = None  # a room message (docs/protocol.md 11.4)
    frame_type: ClassVar[str] = "message"

    @property
    def msg_id(self) -> str:
        msg_id: str = self.envelope["id"]
        return msg_id


@dataclass(frozen=True, slots=True)
class AckFrame:
    """An ``ack`` frame: the fate of a message we sent (``member``: a room message's copy for one member)."""

    msg_id: str
    to: str
    status: str
    member: str | None = None
    frame_type: ClassVar[str] = "ack"


@dataclass(frozen=True, slots=True)
class RoomFrame:
    """A ``room_update``, ``room_sent`` or ``room_list`` frame, its fields checked (docs/protocol.md 11.4)."""

    kind: str
    frame: dict[str, Any]

    @property
    def frame_type(self) -> str:
        return self.kind

    @property
    def rid(self) -> str | None:
        return _rid(self.frame)


ConnectionEvent = (
    Notice | Dropped | Welcomed | ServerError | KeyAnswer | UsersAnswer | PresencePush | MessageFrame | AckFrame
    | RoomFrame
)


def _rid(frame: Mapping[str, Any]) -> str | None:
    rid = frame.get("rid")
    return rid if isinstance(rid, str) else None


def _answerable_message(frame: Mapping[str, Any]) -> MessageFrame | None:
    """A ``message`` we can confirm (valid ``from`` and envelope ``id``), whatever else is wrong.

    Its envelope's own checks run in the inbox, so a bad one is shown as rejected and
    confirmed rather than redelivered for ever (docs/protocol.md section 7).
    """
    envelope = frame.get("envelope")
    sender = frame.get("from")
    if not (is_valid_name(sender) and isinstance(envelope, dict) and is_message_id(envelope.get("id"))):
        return None
    room = frame.get("room")
    if room is not None and not is_valid_room(room):
        return None
    assert isinstance(sender, str)
    server_ts = frame.get("server_ts")
    return MessageFrame(sender, envelope, server_ts if is_timestamp(server_ts) else None, room)


# --- the connection -------------------------------------------------------------------


class ClientConnection:
    """One connection as the client sees it: bytes in, events out, bytes to send.

    Over TLS the caller sets :attr:`server_identity` (what the handshake showed) before
    the ``challenge`` can arrive: ``auth`` is then signed over it (docs/protocol.md
    section 6.1, v2). Left None, it is plaintext: v1.
    """

    def __init__(self, name: str, private_key: crypto.PrivateKey, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.name = name
        self._key = private_key
        self._decoder = FrameDecoder(max_frame)
        self.server_identity: bytes | None = None
        self._outgoing = bytearray()
        self.state = State.AWAIT_CHALLENGE
        self.phase = Phase.HANDSHAKE
        self.fatal: ServerErrorReply | None = None  # the server's fatal error, if it sent one
        self.server_id: bytes | None = None
        pubkey = crypto.public_key_pem(private_key.public_key())
        self._queue({"type": "hello", "version": PROTOCOL_VERSION, "name": name, "pubkey": pubkey})

    # --- bytes out ----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued to send since the last call (the caller writes it)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def send(self, frame: Mapping[str, Any]) -> None:
        """Queue a request frame; once the connection has failed or closed, it goes nowhere."""
        if self.phase is Phase.HANDSHAKE:
            raise RuntimeError(f"cannot send {frame.get('type')!r} before welcome ({self.state.name})")
        if self.phase is Phase.OPEN:
            self._queue(frame)

    def _queue(self, frame: Mapping[str, Any]) -> None:
        self._outgoing += encode_frame(frame)

    # --- bytes in ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ConnectionEvent]:
        """The events that ``data`` completes, in order."""
        events: list[ConnectionEvent] = []
        if not self.reading:
            return events
        try:
            frames = self._decoder.feed(data)
            for frame in frames:
                events += self.receive_frame(frame)
            if frames and self.reading:
                # The decoder hands out the good frames before a framing error and raises
                # it on the next call: ask for it now rather than at the next read.
                self._decoder.feed(b"")
        except ProtocolError as exc:
            notice = Notice(exc.code, f"bad frame from the server: {exc.detail}", fatal=True)
            events += self._fail(f"bad frame from the server ({exc.code})", notice)
        return events

    def receive_eof(self) -> list[ConnectionEvent]:
        """The server ended its stream."""
        if not self.reading:
            return []
        self.phase = Phase.CLOSED
        code = f" ({self.fatal.code})" if self.fatal is not None else ""
        return [Dropped(f"the server closed the connection{code}")]

    @property
    def reading(self) -> bool:
        """True while input still means something (phase HANDSHAKE or OPEN)."""
        return self.phase is Phase.HANDSHAKE or self.phase is Phase.OPEN

    def receive_frame(self, frame: dict[str, Any]) -> list[ConnectionEvent]:
        """The events of one decoded frame (for callers that split frames themselves)."""
        if not self.reading:
            return []
        kind = frame.get("type")
        if kind == "message" and self.state is State.OPEN:
            message = _answerable_message(frame)
            if message is not None:
                return [message]
        try:
            validate_server_frame(frame)
        except ProtocolError as exc:
            return [Notice(BAD_SERVER_FRAME, f"{str(kind)[:40]}: {exc.detail}")]
        assert isinstance(kind, str)
        following = TRANSITIONS[self.state].get(kind)
        if following is None:
            return []  # unknown, or not for this state: ignored
        events = self._handle(kind, frame)
        if self.reading:
            self.state = following
        return events

    def _handle(self, kind: str, frame: dict[str, Any]) -> list[ConnectionEvent]:
        match kind:
            case "challenge":
                return self._answer_challenge(frame)
            case "welcome":
                return self._welcome(frame)
            case "error":
                return self._error(frame)
            case "key":
                return [KeyAnswer(frame["name"], frame["pubkey"], _rid(frame))]
            case "users":
                users = tuple((user["name"], user["online"]) for user in frame["users"])
                return [UsersAnswer(users, frame.get("more", False), _rid(frame))]
            case "presence":
                return [PresencePush(frame["name"], frame["online"])]
            case "message":
                message = _answerable_message(frame)
                return [message] if message is not None else []
            case "ack":
                return [AckFrame(frame["id"], frame["to"], frame["status"], frame.get("member"))]
            case "room_update" | "room_sent" | "room_list":
                return [RoomFrame(kind, frame)]
        return []  # pong: nothing to do, it only proves the server is alive

    # --- the handshake ------------------------------------------------------------------

    def _answer_challenge(self, frame: dict[str, Any]) -> list[ConnectionEvent]:
        try:
            server_id = b64decode(frame["server_id"])
            nonce = b64decode(frame["nonce"])
        except ValueError:
            notice = Notice(BAD_SERVER_FRAME, "the server's challenge is not valid base64")
            return self._fail("bad challenge from the server", notice)
        self.server_id = server_id
        signature = crypto.sign_auth(self._key, server_id, self.name, nonce, self.server_identity)
        self._queue({"type": "auth", "signature": b64encode(signature)})
        return []

    def _welcome(self, frame: dict[str, Any]) -> list[ConnectionEvent]:
        if frame["name"] != self.name:
            notice = Notice(BAD_SERVER_FRAME, f"the server welcomed '{frame['name']}', not us")
            return self._fail("welcome for another name", notice)
        events: list[ConnectionEvent] = []
        if frame["fingerprint"] != crypto.fingerprint(self._key.public_key()):
            events.append(Notice(BAD_SERVER_FRAME, "the server reports a different fingerprint for our key"))
        self.phase = Phase.OPEN
        events.append(Welcomed(frame.get("new") is True))
        return events

    def _error(self, frame: dict[str, Any]) -> list[ConnectionEvent]:
        fatal = frame.get("fatal") is True
        error = ServerErrorReply(frame["code"], frame["message"], fatal=fatal, rid=_rid(frame))
        if not fatal:
            return [ServerError(error)]
        self.fatal = error
        if self.phase is Phase.HANDSHAKE:
            return [ServerError(error), *self._fail(f"the server refused us: {error}")]
        # After welcome the server closes the connection right after a fatal error; what it
        # sent before the close is still read (receive_eof names the code).
        return [ServerError(error)]

    def _fail(self, reason: str, notice: Notice | None = None) -> list[ConnectionEvent]:
        self.phase = Phase.FAILED
        return [notice, Dropped(reason)] if notice is not None else [Dropped(reason)]
