"""The relay's hot path in bytes (docs/protocol.md, "Server behaviour details": Forwarding).

The server forwards an envelope it cannot read, so it need not rebuild it: a
``send`` of the usual shape (the one every client of this package writes) is
read in place. Its fixed head gives ``to`` and where the envelope starts, its
tail (``}`` or a plain ``"rid"``) where it ends, and the envelope's bytes are
parsed alone by the strict codec and checked by :func:`~securechat.envelope.validate_envelope`
exactly as in a decoded frame. Those bytes, proven strict JSON, are what the
``message`` frame carries (:func:`~securechat.protocol.message_frame`): it is built from
bytes, never re-encoded.

Anything else (other key orders, whitespace, escapes, extra fields, a bad
value) gives ``None`` and the general path (:func:`~securechat.protocol.decode_body`
and the field checks) decides, errors included: the fast path never accepts
what the general one refuses, nor reads a value differently
(``tests/test_relayframes.py`` checks both on the same inputs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import jsoncodec
from .envelope import MESSAGE_ID_PATTERN, validate_envelope
from .errors import MalformedEnvelope
from .names import NAME_PATTERN
from .protocol import HEADER, MAX_RID_LENGTH

_NAME: Final = NAME_PATTERN.pattern.encode()
_ID: Final = MESSAGE_ID_PATTERN.pattern.encode()
# A string that needs no escaping: printable ASCII but '"' and '\'. A rid like this reads the
# same as text and as JSON; request_id() takes it when it is at most 64 characters.
_PLAIN_RID: Final = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]{0,%d})"' % MAX_RID_LENGTH

SEND_PREFIX: Final = b'{"type":"send",'
RECEIVED_PREFIX: Final = b'{"type":"received",'
_SEND_HEAD: Final = re.compile(rb'\{"type":"send","to":"(' + _NAME + rb')","envelope":\{')
_RID_TAIL: Final = re.compile(rb',"rid":' + _PLAIN_RID + rb"\}")
_RECEIVED: Final = re.compile(
    rb'\{"type":"received","id":"(' + _ID + rb')","from":"(' + _NAME + rb')"(?:,"rid":' + _PLAIN_RID + rb")?\}"
)


@dataclass(slots=True)
class SendFields:
    """A ``send`` whose fields passed :func:`~securechat.protocol.check_send`."""

    to: str
    envelope: dict[str, Any]  # its structure checked
    envelope_json: bytes  # strict JSON text of ``envelope``, as forwarded
    rid: str | None


def read_send(body: bytes) -> SendFields | None:
    """A ``send`` body of the usual shape, checked; None sends it down the general path."""
    head = _SEND_HEAD.match(body)
    if head is None:
        return None
    start = head.end() - 1
    rid = None
    if body.endswith(b"}}"):
        end = len(body) - 1
    else:
        end = body.rfind(b',"rid":"', start)
        tail = _RID_TAIL.fullmatch(body, end) if end > start else None
        if tail is None:
            return None
        rid = tail.group(1).decode("ascii")
    envelope_json = body[start:end]
    try:
        envelope = jsoncodec.loads(envelope_json)
        validate_envelope(envelope)
    except (jsoncodec.JSONRejected, MalformedEnvelope):
        return None
    to = head.group(1).decode("ascii")
    if envelope["to"] != to:
        return None
    return SendFields(to, envelope, envelope_json, rid)


def send_fields(frame: Mapping[str, Any], rid: str | None) -> SendFields:
    """The fields of a decoded ``send`` that passed :func:`~securechat.protocol.check_send`."""
    envelope: dict[str, Any] = frame["envelope"]
    return SendFields(frame["to"], envelope, jsoncodec.dumps(envelope), rid)


def read_received(body: bytes) -> tuple[str, str, str | None] | None:
    """(from, id, rid) of a ``received`` body of the usual shape; None sends it down the general path."""
    match = _RECEIVED.fullmatch(body)
    if match is None:
        return None
    msg_id, sender, rid = match.groups()
    return sender.decode("ascii"), msg_id.decode("ascii"), None if rid is None else rid.decode("ascii")


def _rid_json(rid: str) -> bytes:
    if rid.isascii() and rid.isalnum():  # the usual rid (an envelope id, a counter) needs no escaping
        return b'"%s"' % rid.encode()
    return jsoncodec.dumps({"r": rid})[5:-1]


def ack_frame(msg_id: str, to: str, status: str, rid: str | None, member: str | None = None) -> bytes:
    """The ``ack`` frame, built from bytes: one per message (and member, for a room's: section 11.4).

    ``msg_id`` (32 hex digits), ``to`` (a valid name or room), ``member`` (a valid
    name) and ``status`` need no escaping; ``rid`` may hold anything, so it is
    escaped unless it is plain.
    """
    tail = b"}" if rid is None else b',"rid":%s}' % _rid_json(rid)
    about = b"" if member is None else b',"member":"%s"' % member.encode()
    body = b'{"type":"ack","id":"%s","to":"%s"%s,"status":"%s"%s' % (
        msg_id.encode(), to.encode(), about, status.encode(), tail
    )
    return HEADER.pack(len(body)) + body
