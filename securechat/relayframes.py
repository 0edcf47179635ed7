"""The relay's hot path in bytes (docs/protocol.md, "Server behaviour details": Forwarding).

The server forwards an envelope it cannot read, so it need not rebuild it: a
``send`` of the usual shape (the one every client of this package writes:
compact, the envelope's fields in their order, names, hex, digits and base64
in its strings) is read by one regular expression. A text it matches is strict
JSON with no duplicate key and an envelope that passes
:func:`~securechat.envelope.validate_envelope`, so the match proves what
decoding and checking would, and its groups are the values: ``to``, the
envelope's ``from`` and ``id``, its bytes, the ``rid``. Those bytes are what
the ``message`` frame carries (:func:`~securechat.protocol.message_frame`):
built from bytes, never re-encoded, and no JSON parser runs.

Anything else (other key orders, whitespace, escapes, extra fields, a bad
value, an envelope addressed to someone else) gives ``None`` and the general
path (:func:`~securechat.protocol.decode_body` and the field checks) decides,
errors included: the fast path never accepts what the general one refuses, nor
reads a value differently (``tests/test_relayframes.py`` checks both on the
same inputs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import jsoncodec
from .envelope import MAX_B64_FIELD, MAX_TS, MESSAGE_ID_PATTERN
from .names import NAME_PATTERN
from .protocol import HEADER, MAX_RID_LENGTH

_NAME: Final = NAME_PATTERN.pattern.encode()
_ID: Final = MESSAGE_ID_PATTERN.pattern.encode()
# A string that needs no escaping: printable ASCII but '"' and '\'. A rid like this reads the
# same as text and as JSON; request_id() takes it when it is at most 64 characters.
_PLAIN_RID: Final = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]{0,%d})"' % MAX_RID_LENGTH

SEND_PREFIX: Final = b'{"type":"send",'
RECEIVED_PREFIX: Final = b'{"type":"received",'
# Standard base64 needs no escaping in JSON; validate_envelope bounds a field at MAX_B64_FIELD.
_B64: Final = rb'"[A-Za-z0-9+/=]{0,%d}"' % MAX_B64_FIELD
# The usual send, whole: `to` (1), the envelope (2) with its `from` (3), `id` (4) and `ts` (5),
# then the optional plain rid (6). The envelope's `to` must be the frame's (the backreference);
# `v` is any integer validate_envelope takes, spelt without a sign or leading zero.
_SEND: Final = re.compile(
    rb'\{"type":"send","to":"(' + _NAME + rb')","envelope":(\{"v":(?:0|[1-9][0-9]{0,8}),'
    rb'"from":"(' + _NAME + rb')","to":"\1","id":"(' + _ID + rb')","ts":(0|[1-9][0-9]{0,15}),'
    rb'"key":' + _B64 + rb',"nonce":' + _B64 + rb',"ct":' + _B64 + rb',"sig":' + _B64 + rb"\})"
    rb'(?:,"rid":' + _PLAIN_RID + rb")?\}"
)
_RECEIVED: Final = re.compile(
    rb'\{"type":"received","id":"(' + _ID + rb')","from":"(' + _NAME + rb')"(?:,"rid":' + _PLAIN_RID + rb")?\}"
)


@dataclass(slots=True)
class SendFields:
    """A ``send`` whose fields passed :func:`~securechat.protocol.check_send`."""

    to: str
    sender: str  # the envelope's `from`
    msg_id: str  # the envelope's `id`
    envelope_json: bytes  # strict JSON text of the envelope, its structure checked, as forwarded
    rid: str | None


def read_send(body: bytes) -> SendFields | None:
    """A ``send`` body of the usual shape, checked; None sends it down the general path."""
    match = _SEND.fullmatch(body)
    if match is None:
        return None
    to, envelope_json, sender, msg_id, ts, rid = match.groups()
    if int(ts) >= MAX_TS:  # 16 digits can pass 2**53 - 1
        return None
    return SendFields(
        to.decode("ascii"),
        sender.decode("ascii"),
        msg_id.decode("ascii"),
        envelope_json,
        None if rid is None else rid.decode("ascii"),
    )


def send_fields(frame: Mapping[str, Any], rid: str | None) -> SendFields:
    """The fields of a decoded ``send`` that passed :func:`~securechat.protocol.check_send`."""
    envelope: dict[str, Any] = frame["envelope"]
    return SendFields(frame["to"], envelope["from"], envelope["id"], jsoncodec.dumps(envelope), rid)


def usual_kind(body: bytes) -> str | None:
    """``send`` or ``received`` if ``body`` starts as the usual one does, else None (decode it to know).

    A body with that start and another type is malformed (the codec refuses duplicate keys): it fails
    when it is handled, so naming its type from the start is safe for ordering decisions.
    """
    if body.startswith(SEND_PREFIX):
        return "send"
    return "received" if body.startswith(RECEIVED_PREFIX) else None


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
