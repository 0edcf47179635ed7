"""The server side of one connection, without I/O (docs/protocol.md sections 2, 4, 5, 9 and 11).

Bytes in (``receive_data``), events out (``next_event``), bytes to send (``data_to_send``), in the
style of h11's ``Connection`` and websockets' ``Protocol``. It moves through the state table of
:mod:`~securechat.server.phases` and holds the handshake (``hello`` -> ``challenge`` -> ``auth``,
verified here), the rate buckets, the pre-auth buffer bound and "fail then discard": a fatal
error queues its ``error`` frame, moves to ``FAILED`` and every later byte is ignored.

What needs the rest of the server comes out as an event: :class:`Login` (the signature verified; the server
binds the name and answers with :meth:`~ServerConnection.accept_login` or :meth:`~ServerConnection.fail`),
:class:`Send`, :class:`Received`, :class:`Lookup`, :class:`ListUsers` and :class:`RoomRequest`.
``ping`` and every frame-level error are answered here; the usual ``send`` and ``received`` are read from
their bytes (:mod:`securechat.relayframes`). The caller pulls one result at a time and handles an event
before pulling the next, so each frame meets the phase its predecessors left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Container
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..crypto import AUTH_NONCE_SIZE, fingerprint, load_public_key_pem, verify_auth
from ..encoding import b64decode, b64encode
from ..errors import BadFrame, BadKey, FrameTooLarge, ProtocolError
from ..protocol import (
    CLIENT_FRAME_CHECKS,
    FrameDecoder,
    check_auth,
    check_hello,
    check_received,
    check_send,
    decode_body,
    encode_frame,
    error_frame,
    request_id,
)
from ..relayframes import SendFields, read_received, read_send, send_fields, usual_kind
from ..rooms.frames import ROOM_CLIENT_TYPES
from ..tls import tls_at_plaintext
from .admission import ROOM_CHANGE_BURST, ROOM_CHANGE_RATE, TokenBucket
from .config import ServerConfig
from .events import (
    HANDLED,
    NEED_DATA,
    CheckName,
    Event,
    ListUsers,
    Login,
    Lookup,
    Pull,
    Received,
    RoomRequest,
    Send,
)
from .phases import OPEN_ROW, SERVER_TRANSITIONS, Phase, unexpected

log = logging.getLogger("securechat.server")

# Before `welcome` a connection may hold at most this many undecoded bytes (the largest legitimate handshake
# frame is a hello with a 16 KiB PEM); else every anonymous one could pin a max_frame body until the timeout.
PREAUTH_BUFFER_LIMIT: Final = 64 * 1024
_NO_FRAMES: Final[list[bytes | dict[str, Any]]] = []  # never written to: see ServerConnection._frames
UNREACHABLE: Final = "the server cannot reach its shared state; try again shortly"  # Redis, on several nodes


class ServerConnection:
    """One client connection's protocol state; no sockets, no event loop, no other connections.

    ``clock`` (seconds, monotonic) times the buckets and timeouts. ``handed``: the (sender, id) pairs
    handed to this session, unconfirmed, which a ``received`` confirms for free (routing sets it).
    ``identity``: the server's TLS identity, which ``auth`` is checked against (6.1, v2); None: plaintext.
    """

    __slots__ = (
        "_bucket", "_changes", "_clock", "_config", "_decoder", "_frames", "_hello", "_identity", "_login", "_lookups",
        "_next", "_nonce", "_now", "_phase", "_rate_logged", "_row", "_server_id", "_writes", "bytes_to_send",
        "handed", "last_frame", "name", "peer", "reason", "started",
    )

    def __init__(
        self, config: ServerConfig, server_id: bytes, clock: Callable[[], float], peer: str = "?", *,
        identity: bytes | None = None,
    ) -> None:
        now = clock()
        self._clock = clock
        self._server_id = server_id
        self._identity = identity
        self._config = config  # shared by every connection: the timeouts and the lookup rate
        self._decoder = FrameDecoder(config.max_frame)
        self._bucket = TokenBucket(config.rate, config.burst, now)
        self._lookups: TokenBucket | None = None  # made at the first lookup: most sessions never look up
        self._changes: TokenBucket | None = None  # made at the first room frame, likewise
        self._frames: list[bytes | dict[str, Any]] = _NO_FRAMES  # bodies (decoded by next_kind) from _next on
        self._next = 0
        self._now = now  # when the frames being handled were decoded
        self._hello: tuple[str, RSAPublicKey] | None = None
        self._nonce: bytes | None = None
        self._login: Login | None = None  # verified, waiting for accept_login() or fail()
        self._writes: list[bytes] | None = None  # frames queued for the peer (None: nothing queued)
        self.bytes_to_send = 0  # what data_to_send() would return, in bytes (read-only outside)
        self._rate_logged = False  # one log line per connection, not one per dropped frame
        self._phase = Phase.AWAIT_HELLO
        self._row = SERVER_TRANSITIONS[Phase.AWAIT_HELLO]  # the frame types this phase accepts
        self.name: str | None = None
        self.peer = peer  # for the log
        self.reason = "peer closed"  # why the connection ended, for the log
        self.started = now
        self.last_frame = now
        self.handed: Container[tuple[str, str]] = frozenset()

    @property
    def phase(self) -> Phase:
        """Where the connection is (docs/protocol.md section 5)."""
        return self._phase

    @property
    def ended(self) -> bool:
        """FAILED, REFUSED or CLOSED: nothing more is read or answered."""
        return not self._row

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        self._row = SERVER_TRANSITIONS[phase]

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; the frames they complete come out of :meth:`next_event`."""
        if not self._row:
            return
        try:
            bodies: list[bytes | dict[str, Any]] = self._decoder.split(data)  # type: ignore[assignment]
        except ProtocolError as exc:
            if isinstance(exc, FrameTooLarge) and self._phase is Phase.AWAIT_HELLO and self._identity is None:
                exc = tls_at_plaintext(exc)  # a TLS client: say so (docs/protocol.md section 2.1)
            self.fail(exc.code, exc.detail)
            return
        if bodies:
            self._now = self.last_frame = self._clock()
            self._frames, self._next = self._frames[self._next :] + bodies, 0

    def next_kind(self) -> str | None:
        """The type of the next frame, or None if none is waiting (or it is not a frame: it fails when handled)."""
        if self._next >= len(self._frames):
            return None
        item = self._frames[self._next]
        if isinstance(item, bytes):
            if (usual := usual_kind(item)) is not None:  # left as bytes to the fast path
                return usual
            try:
                item = self._frames[self._next] = decode_body(item)
            except BadFrame:
                return None
        return str(item["type"])

    def next_event(self) -> Event | Pull:
        """Handle the next frame: its event, ``HANDLED`` if answered here, or ``NEED_DATA``."""
        row = self._row
        if not row or self._login is not None:  # ended, or paused until the login is answered
            return NEED_DATA
        i = self._next
        if i >= len(self._frames):
            self._exhausted()
            return NEED_DATA
        self._next = i + 1
        item = self._frames[i]
        if type(item) is bytes:
            if row is OPEN_ROW and (fast := self._fast_event(item)) is not None:
                return fast  # the usual send and received, read from bytes (relayframes)
            try:
                item = decode_body(item)
            except BadFrame as exc:
                self.fail(exc.code, exc.detail)
                return HANDLED
        assert isinstance(item, dict)
        frame = item
        kind: str = frame["type"]
        # A `received` confirming a message this connection was handed is free: a client
        # working through a 10,000-message backlog must be able to confirm every one.
        if not (kind == "received" and self._confirms_handed(frame)) and not self._bucket.take(self._now):
            self.error("rate_limited", "too many frames; this one was dropped", request_id(frame))
            return HANDLED
        try:
            if kind not in row:
                raise unexpected(self._phase, kind)
            return _HANDLERS[kind](self, frame) or HANDLED
        except Exception as exc:  # noqa: BLE001 - reported as the peer's error or as `internal`
            self.report(exc, kind, request_id(frame))
            return HANDLED

    def _fast_event(self, body: bytes) -> Event | Pull | None:
        """A ``send`` or ``received`` of the usual shape, handled as the general path would; else None."""
        if (kind := usual_kind(body)) == "send":
            if (fields := read_send(body)) is None:
                return None
            if not self._bucket.take(self._now):
                self.error("rate_limited", "too many frames; this one was dropped", fields.rid)
                return HANDLED
            return self._send_event(fields) or HANDLED
        if kind == "received":
            if (got := read_received(body)) is None:
                return None
            if got[:2] not in self.handed and not self._bucket.take(self._now):
                self.error("rate_limited", "too many frames; this one was dropped", got[2])
                return HANDLED
            return Received(*got)
        return None

    def _exhausted(self) -> None:
        self._frames, self._next = _NO_FRAMES, 0
        try:
            self._decoder.split(b"")  # raises an error found after complete frames
        except ProtocolError as exc:
            self.fail(exc.code, exc.detail)
            return
        if self._phase is not Phase.OPEN and self._decoder.buffered > PREAUTH_BUFFER_LIMIT:
            self.fail("frame_too_large", f"frames before welcome are limited to {PREAUTH_BUFFER_LIMIT} bytes")

    def _confirms_handed(self, frame: dict[str, Any]) -> bool:
        sender, msg_id = frame.get("from"), frame.get("id")
        return isinstance(sender, str) and isinstance(msg_id, str) and (sender, msg_id) in self.handed

    def _on_hello(self, frame: dict[str, Any]) -> None:
        check_hello(frame)
        key = load_public_key_pem(frame["pubkey"])
        self._hello = (frame["name"], key)
        self._nonce = os.urandom(AUTH_NONCE_SIZE)
        challenge = {"type": "challenge", "server_id": b64encode(self._server_id), "nonce": b64encode(self._nonce)}
        self.answer(challenge, request_id(frame))
        self._enter(SERVER_TRANSITIONS[Phase.AWAIT_HELLO]["hello"])

    def _on_auth(self, frame: dict[str, Any]) -> Login | None:
        rid = request_id(frame)
        check_auth(frame)
        nonce = self._nonce
        assert self._hello is not None and nonce is not None
        name, key = self._hello
        self._nonce = self._hello = None  # one signature per challenge; the key object (~1 KiB) goes to Login
        try:
            signature = b64decode(frame["signature"])
        except ValueError:
            self.fail("auth_failed", "signature is not valid base64", rid)
            return None
        if not verify_auth(key, signature, self._server_id, name, nonce, self._identity):
            self.fail("auth_failed", "signature does not verify with the presented key", rid)
            return None
        self._login = Login(name, key, fingerprint(key), rid)
        return self._login

    def _on_lookup(self, frame: dict[str, Any]) -> Lookup | CheckName | ListUsers | None:
        """``lookup``, ``list`` (a page), or ``check_name`` before ``hello``: each spends the lookup bucket."""
        rid, kind = request_id(frame), frame["type"]
        now, rate = self._clock(), self._config.lookup_rate
        self._lookups = self._lookups or TokenBucket(rate, max(1.0, rate), now)  # full, as if made at the start
        if not self._lookups.take(now):
            self.error("rate_limited", f"too many {kind.replace('check_name', 'name check')}s", rid)
            return None
        CLIENT_FRAME_CHECKS[kind](frame)
        if kind == "list":
            return ListUsers(frame.get("after", ""), frame.get("prefix", ""), rid)
        return (Lookup if kind == "lookup" else CheckName)(frame["name"], rid)

    def _on_send(self, frame: dict[str, Any]) -> Send | None:
        check_send(frame)
        return self._send_event(send_fields(frame, request_id(frame)))

    def _send_event(self, fields: SendFields) -> Send | None:
        sender = self.name
        assert sender is not None
        if fields.sender != sender:
            self.error("bad_request", "envelope 'from' is not your name", fields.rid)
            return None
        if fields.to == sender:
            self.error("bad_request", "cannot send a message to yourself", fields.rid)
            return None
        return Send(sender, fields.to, fields.msg_id, fields.envelope_json, fields.rid)

    def _on_received(self, frame: dict[str, Any]) -> Received:
        check_received(frame)
        return Received(frame["from"], frame["id"], request_id(frame))

    def _on_room(self, frame: dict[str, Any]) -> RoomRequest | None:
        kind, rid = frame["type"], request_id(frame)
        now = self._clock()
        self._changes = self._changes or TokenBucket(ROOM_CHANGE_RATE, ROOM_CHANGE_BURST, now)  # full, likewise
        if kind in ("room_create", "room_append") and not self._changes.take(now):
            self.error("rate_limited", "too many room changes", rid)
            return None
        CLIENT_FRAME_CHECKS[kind](frame)
        return RoomRequest(kind, self.name or "", frame, rid)

    def charge(self, tokens: float) -> bool:
        """Spend ``tokens`` more from the frame bucket (a room message to many members); False if it is short."""
        return self._bucket.take(self._clock(), tokens)

    def _on_ping(self, frame: dict[str, Any]) -> None:
        self.answer({"type": "pong"}, request_id(frame))

    def accept_login(self, new: bool) -> None:
        """The name is bound to the key that signed: OPEN, and ``welcome`` goes out (``new``: just registered)."""
        login = self._login
        assert login is not None, "accept_login() without a Login event"
        self._login = None
        self.name = login.name
        self.last_frame = self._clock()  # the idle clock starts at welcome
        self._enter(SERVER_TRANSITIONS[Phase.AWAIT_AUTH]["auth"])
        self.answer({"type": "welcome", "name": login.name, "fingerprint": login.fingerprint, "new": new}, login.rid)

    def answer(self, frame: dict[str, Any], rid: str | None) -> None:
        """Queue ``frame`` for the peer, with the request's ``rid`` if it had one."""
        if rid is not None:
            frame["rid"] = rid
        self.send_data(encode_frame(frame))

    def send_data(self, data: bytes) -> None:
        """Queue encoded frames for the peer; dropped once the connection ended."""
        if self._row:
            self._writes = self._writes or []  # None while nothing is queued: an idle session holds no list
            self._writes.append(data)
            self.bytes_to_send += len(data)

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, in order; the queue is then empty."""
        writes = self._writes
        if not writes:
            return b""
        self._writes = None
        self.bytes_to_send = 0
        return writes[0] if len(writes) == 1 else b"".join(writes)

    def error(self, code: str, message: str, rid: str | None) -> None:
        """A non-fatal error for one request."""
        if code != "rate_limited" or not self._rate_logged:
            self._rate_logged |= code == "rate_limited"
            log.info("error %s to %s%s: %s", code, self.peer, f" ({self.name})" if self.name else "", message)
        self.send_data(encode_frame(error_frame(code, message, fatal=False, rid=rid)))

    def fail(self, code: str, message: str, rid: str | None = None) -> None:
        """A fatal error: queue the ``error`` frame, then discard everything (FAILED)."""
        if not self._row:
            return
        log.info("fatal %s to %s%s: %s", code, self.peer, f" ({self.name})" if self.name else "", message)
        self.reason = f"fatal {code}"
        self.send_data(encode_frame(error_frame(code, message, fatal=True, rid=rid)))
        self._login = None
        self._frames, self._next = _NO_FRAMES, 0
        self._enter(Phase.FAILED)

    def refuse(self) -> None:
        """Over a connection cap: ``server_busy`` before anything is read (REFUSED)."""
        log.info("refused connection from %s: server busy", self.peer)
        self.send_data(encode_frame(error_frame("server_busy", "too many connections", fatal=True)))
        self._enter(Phase.REFUSED)

    def close(self, reason: str | None = None) -> None:
        """The connection is going away (CLOSED); ``reason`` replaces the one the log will give."""
        if reason is not None:
            self.reason = reason
        self._login = None
        self._enter(Phase.CLOSED)

    def report(self, exc: Exception, kind: str, rid: str | None) -> None:
        """Answer a failure while handling a ``kind`` frame: the peer's mistake by its code, ours as ``internal``."""
        self._login = None  # a login whose handling failed is dropped; the session stays in AWAIT_AUTH
        if isinstance(exc, ProtocolError):
            if exc.fatal:
                self.fail(exc.code, exc.detail, rid)
            else:
                self.error(exc.code, exc.detail, rid)
        elif isinstance(exc, BadKey):
            self.fail("bad_key", exc.detail, rid)
        else:
            level = logging.DEBUG if isinstance(exc, ConnectionError) else logging.ERROR  # the store logs an outage once
            log.log(level, "internal error on %r from %s", kind[:40], self.peer, exc_info=exc)
            why = UNREACHABLE if isinstance(exc, ConnectionError) else "internal server error"
            self.send_data(encode_frame(error_frame("internal", why, fatal=False, rid=rid)))

    def overdue(self, now: float) -> str | None:
        """Why the connection has timed out at ``now``, or None (docs/protocol.md section 10)."""
        handshake, idle = self._config.handshake_timeout, self._config.idle_timeout
        if self._phase is Phase.OPEN:
            return f"no frame for {idle:g} seconds" if now - self.last_frame >= idle else None
        if not self._row or now - self.started < handshake:
            return None
        return "the handshake did not finish in time"


_HANDLERS: Final[dict[str, Callable[[ServerConnection, dict[str, Any]], Event | None]]] = {
    "check_name": ServerConnection._on_lookup,
    "hello": ServerConnection._on_hello,
    "auth": ServerConnection._on_auth,
    "lookup": ServerConnection._on_lookup,
    "list": ServerConnection._on_lookup,
    "send": ServerConnection._on_send,
    "received": ServerConnection._on_received,
    "ping": ServerConnection._on_ping,
    **dict.fromkeys(sorted(ROOM_CLIENT_TYPES), ServerConnection._on_room),
}
