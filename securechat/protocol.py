"""securechat wire protocol v1, sans-I/O.

Framing (``uint32_be(N) || N bytes of UTF-8 JSON object``), an incremental
:class:`FrameDecoder` and schema validation of every frame type. Nothing here
touches a socket or an event loop, and nothing here keeps a session's state:
the server's state table is :mod:`securechat.server.phases`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import jsoncodec
from .crypto import MAX_PEM_LENGTH  # the bound on the handshake's PEM and signature strings
from .envelope import is_message_id, is_timestamp, validate_envelope
from .errors import BadFrame, BadRequest, FrameTooLarge, MalformedEnvelope, ProtocolError
from .listing import check_list, check_users
from .names import NAME_PATTERN, is_valid_name, shown
from .rooms import frames as rooms  # the room frames (section 11.6)

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME: Final = 1 << 20
HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size
MAX_RID_LENGTH: Final = 64

# --- error codes (docs/protocol.md section 9) -------------------------------------------------

FATAL_CODES: Final = frozenset({"bad_frame", "frame_too_large", "version_unsupported", "not_authenticated"}) | {
    "auth_failed", "name_taken", "invalid_name", "bad_key", "timeout", "replaced"}
NONFATAL_CODES: Final = frozenset(
    {"unknown_type", "bad_request", "unknown_user", "rate_limited", "queue_full", "internal", "message_too_large"}
    | rooms.ROOM_ERROR_CODES
)
# Ours (docs/protocol.md 2.1 and 9): a connection over a cap, one speaking the other transport (before
# any hello), a login a node of several cannot complete without the state they share: clients reconnect.
# A new name over a registration bound: the client stops and says so.
WRONG_TRANSPORT_CODES: Final = frozenset({"tls_required", "tls_unsupported"})  # the other end speaks the other
EXTRA_FATAL_CODES: Final = frozenset({"server_busy", "unavailable", "registration_limited"}) | WRONG_TRANSPORT_CODES

CLIENT_TYPES: Final = rooms.ROOM_CLIENT_TYPES | {"check_name", "hello", "auth", "lookup", "list", "send", "received", "ping"}
SERVER_TYPES: Final = rooms.ROOM_SERVER_TYPES | {"name_status", "challenge", "welcome", "key", "users", "presence"} | {
    "message", "ack", "error", "pong"}


# --- framing -------------------------------------------------------------------


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse one frame body; raise :class:`BadFrame` for anything but a typed JSON object."""
    try:
        obj = jsoncodec.loads(body)
    except jsoncodec.JSONRejected as exc:
        raise BadFrame(f"body is {exc}") from None
    if not isinstance(obj, dict):
        raise BadFrame("top level of a frame must be a JSON object")
    if not isinstance(obj.get("type"), str):
        raise BadFrame("frame has no string field 'type'")
    return obj


def encode_body(obj: Mapping[str, Any]) -> bytes:
    """Serialise a frame body as compact UTF-8 JSON."""
    return jsoncodec.dumps(obj)


def frame_bytes(body: bytes) -> bytes:
    """Prefix an already-serialised body with its length."""
    return HEADER.pack(len(body)) + body


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    """Serialise ``obj`` and prefix it with its length: one complete frame."""
    return frame_bytes(encode_body(obj))


class FrameDecoder:
    """Incremental frame decoder: feed bytes, get complete frames.

    The declared length is checked against ``max_frame`` as soon as the four header bytes are in, before
    any of the body is buffered. After the first error the decoder stays failed: framing errors are fatal.
    """

    __slots__ = ("_buffer", "_error", "_need", "max_frame")  # one per server connection
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # body length of the frame being read
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame has arrived and the rest has not."""
        return bool(self._buffer) or self._need is not None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add ``data`` and return every frame it completes, in order.

        Frames completed before an error in the same call are lost to the
        caller only if it discards them: the error is raised on the *next*
        call when at least one frame was decoded first.
        """
        frames: list[dict[str, Any]] = []
        for body in self.split(data):
            try:
                frames.append(decode_body(body))
            except ProtocolError as exc:
                self.fail(exc)
                if frames:
                    return frames
                raise
        return frames

    def split(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, but the bodies are not decoded: the caller runs :func:`decode_body` (and :meth:`fail`)."""
        if self._error is not None:
            raise self._error
        buf = self._buffer
        buf += data
        bodies: list[bytes] = []
        pos, end = 0, len(buf)
        while True:
            if self._need is None:
                if end - pos < HEADER_SIZE:
                    break
                (size,) = HEADER.unpack_from(buf, pos)
                if size == 0 or size > self.max_frame:
                    error = FrameTooLarge(size, self.max_frame)
                    self.fail(error)
                    if bodies:
                        return bodies
                    raise error
                pos += HEADER_SIZE
                self._need = size
            size = self._need
            if end - pos < size:
                break
            bodies.append(bytes(buf[pos : pos + size]))
            pos += size
            self._need = None
        del buf[:pos]
        return bodies

    def fail(self, error: ProtocolError) -> None:
        """Fail for good with ``error`` (every later call raises it), dropping what is buffered."""
        self._error, self._buffer, self._need = error, bytearray(), None


# --- validation helpers ------------------------------------------------------------


def _field(frame: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = frame.get(key)
    # bool is an int subclass; a JSON true is never a valid number field here.
    if type(value) is not kind:
        raise BadRequest(f"'{key}' must be {what}")
    return value


def _name_field(frame: Mapping[str, Any], key: str, *, code: str = "bad_request", fatal: bool = False) -> str:
    value = frame.get(key)
    if not is_valid_name(value):
        what = shown(value) if isinstance(value, str) else type(value).__name__
        raise BadRequest(
            f"'{key}' is not a valid name ({what}); names match {NAME_PATTERN.pattern}",
            code=code,
            fatal=fatal,
        )
    assert isinstance(value, str)
    return value


def request_id(frame: Mapping[str, Any]) -> str | None:
    """The frame's ``rid`` if it is a string of at most 64 characters, else None."""
    rid = frame.get("rid")
    if isinstance(rid, str) and len(rid) <= MAX_RID_LENGTH:
        return rid
    return None


def validate_envelope_shape(envelope: object) -> dict[str, Any]:
    """The envelope's structure as the server checks it before routing (:func:`envelope.validate_envelope`)."""
    try:
        validate_envelope(envelope)
    except MalformedEnvelope as exc:
        raise BadRequest(exc.detail) from None
    assert isinstance(envelope, dict)
    return envelope


# --- client -> server frames ---------------------------------------------------------


def _frame_type(frame: Mapping[str, Any]) -> str:
    # decode_body guarantees a string type, but frames built in code (tests, a
    # future transport) must not turn into KeyError/TypeError here.
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadFrame("frame has no string field 'type'")
    return kind


def check_hello(frame: Mapping[str, Any]) -> None:
    """A ``hello``'s fields; every mistake is fatal, with the code of the step."""
    version = frame.get("version")
    if type(version) is not int:
        raise BadRequest("'version' must be an integer", code="version_unsupported", fatal=True)
    if version != PROTOCOL_VERSION:
        raise BadRequest(
            f"protocol version {version} is not supported (this server speaks 1)",
            code="version_unsupported",
            fatal=True,
        )
    _name_field(frame, "name", code="invalid_name", fatal=True)
    pubkey = frame.get("pubkey")
    if not isinstance(pubkey, str) or len(pubkey) > MAX_PEM_LENGTH:
        raise BadRequest("'pubkey' must be a PEM string", code="bad_key", fatal=True)


def check_auth(frame: Mapping[str, Any]) -> None:
    """An ``auth``'s fields."""
    sig = frame.get("signature")
    if not isinstance(sig, str) or len(sig) > MAX_PEM_LENGTH:
        raise BadRequest("'signature' must be a base64 string", code="auth_failed", fatal=True)


def check_lookup(frame: Mapping[str, Any]) -> None:
    """A ``lookup``'s fields."""
    # The spec lists invalid_name among the fatal codes: a conforming client
    # validates names before sending, so one that does not is broken.
    _name_field(frame, "name", code="invalid_name", fatal=True)


def check_send(frame: Mapping[str, Any]) -> None:
    """A ``send``'s fields, its envelope's structure included."""
    to = _name_field(frame, "to", code="invalid_name", fatal=True)
    envelope = validate_envelope_shape(frame.get("envelope"))
    if envelope["to"] != to:
        raise BadRequest("'to' does not match envelope 'to'")


def check_received(frame: Mapping[str, Any]) -> None:
    """A ``received``'s fields."""
    if not is_message_id(frame.get("id")):
        raise BadRequest("'id' must be 32 lowercase hex digits")
    _name_field(frame, "from")


def _no_fields(frame: Mapping[str, Any]) -> None:
    pass


# The field checks of each client frame type (docs/protocol.md section 4).
CLIENT_FRAME_CHECKS: Final[dict[str, Callable[[Mapping[str, Any]], None]]] = {
    "check_name": check_lookup,  # the same one field, the same rule
    "hello": check_hello,
    "auth": check_auth,
    "lookup": check_lookup,
    "send": check_send,
    "received": check_received,
    "list": check_list,
    "ping": _no_fields,
    **rooms.ROOM_CLIENT_CHECKS,
}


def validate_client_frame(frame: Mapping[str, Any]) -> None:
    """Check a client frame's fields for its (known) type; raise :class:`ProtocolError`."""
    kind = _frame_type(frame)
    check = CLIENT_FRAME_CHECKS.get(kind)
    if check is None:
        raise BadRequest(f"unknown frame type {kind[:40]!r}", code="unknown_type")
    check(frame)


# --- frame builders (server -> client, client -> server) ---------------------------


def message_frame(sender: str, server_ts: int, envelope: bytes | Mapping[str, Any], room: str | None = None) -> bytes:
    """The ``message`` frame that carries ``envelope`` from ``sender`` to its recipient (sections 4 and 11.4).

    ``envelope``: its strict JSON text, as checked ("Forwarding" in docs/protocol.md), or the envelope
    itself. Built from bytes: a valid name or room and an integer ``server_ts`` need no escaping.
    """
    text = envelope if isinstance(envelope, bytes) else encode_body(envelope)
    about = b"" if room is None else b',"room":"%s"' % room.encode()  # every member gets the same bytes
    body = b'{"type":"message","from":"%s"%s,"server_ts":%d,"envelope":%s}' % (sender.encode(), about, server_ts, text)
    return HEADER.pack(len(body)) + body


def error_frame(code: str, message: str, *, fatal: bool, rid: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if rid is not None:
        frame["rid"] = rid
    return frame


def error_from_exception(exc: ProtocolError, rid: str | None = None) -> dict[str, Any]:
    return error_frame(exc.code, exc.detail, fatal=exc.fatal, rid=rid)


# --- server -> client frames, as a client validates them ------------------------------


def _check_challenge(frame: Mapping[str, Any]) -> None:
    for key in ("server_id", "nonce"):
        if not isinstance(frame.get(key), str):
            raise BadRequest(f"challenge '{key}' must be a base64 string")


def _check_welcome(frame: Mapping[str, Any]) -> None:
    _name_field(frame, "name")
    if not isinstance(frame.get("fingerprint"), str):
        raise BadRequest("welcome 'fingerprint' must be a string")


def _check_key(frame: Mapping[str, Any]) -> None:
    _name_field(frame, "name")
    pubkey = frame.get("pubkey")
    if not isinstance(pubkey, str) or len(pubkey) > MAX_PEM_LENGTH:
        raise BadRequest("key 'pubkey' must be a PEM string")


def _check_presence(frame: Mapping[str, Any]) -> None:
    _name_field(frame, "name")
    if type(frame.get("online")) is not bool:
        raise BadRequest("presence 'online' must be a boolean")


def _check_message(frame: Mapping[str, Any]) -> None:
    _name_field(frame, "from")
    if not rooms.check_message_room(frame):  # a room message's envelope is a room envelope
        validate_envelope_shape(frame.get("envelope"))
    if "server_ts" in frame and not is_timestamp(frame["server_ts"]):
        raise BadRequest("message 'server_ts' must be an integer from 0 to 2**53 - 1")


def _check_ack(frame: Mapping[str, Any]) -> None:
    if not is_message_id(frame.get("id")):
        raise BadRequest("ack 'id' must be 32 lowercase hex digits")
    rooms.check_ack_target(frame)
    if frame.get("status") not in ("queued", "delivered", "undeliverable"):  # the last: our extension
        raise BadRequest("ack 'status' must be 'queued', 'delivered' or 'undeliverable'")


def _check_name_status(frame: Mapping[str, Any]) -> None:
    _name_field(frame, "name")
    if type(frame.get("registered")) is not bool:
        raise BadRequest("name_status 'registered' must be a boolean")


def _check_error(frame: Mapping[str, Any]) -> None:
    if not isinstance(frame.get("code"), str) or not isinstance(frame.get("message"), str):
        raise BadRequest("error needs string 'code' and 'message'")
    if "fatal" in frame and type(frame["fatal"]) is not bool:
        raise BadRequest("error 'fatal' must be a boolean")


# The fields a client relies on, per server frame type (docs/protocol.md section 4).
SERVER_FRAME_CHECKS: Final[dict[str, Callable[[Mapping[str, Any]], None]]] = {
    "name_status": _check_name_status,
    "challenge": _check_challenge,
    "welcome": _check_welcome,
    "key": _check_key,
    "users": check_users,
    "presence": _check_presence,
    "message": _check_message,
    "ack": _check_ack,
    "error": _check_error,
    "pong": _no_fields,
    **rooms.ROOM_SERVER_CHECKS,
}


def validate_server_frame(frame: Mapping[str, Any]) -> None:
    """Check the fields a client relies on in a server frame; raise :class:`BadRequest`.

    Unknown types are the caller's business (ignored for forward compatibility).
    """
    check = SERVER_FRAME_CHECKS.get(_frame_type(frame))
    if check is not None:
        check(frame)
