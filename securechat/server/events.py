"""What a server connection hands to the rest of the server, and what the handlers hand back.

:meth:`~securechat.server.connection.ServerConnection.next_event` returns one
of the events below (or a :class:`Pull` when it has none); the server's handler
for an event returns ``None`` when it is done, an awaitable when the next event
must wait for it, or a :class:`Deferred` when later sends may go on meanwhile
(:mod:`securechat.server.transport` keeps the answers in order).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


@dataclass(slots=True)
class Login:
    """``auth`` verified: bind ``name`` to ``fingerprint`` (or find it bound to another key) and answer."""

    kind: ClassVar[str] = "auth"
    name: str
    key: RSAPublicKey
    fingerprint: str
    rid: str | None


@dataclass(slots=True)
class Send:
    """A well-formed ``send`` from ``sender`` (the session's name) to someone else.

    ``envelope`` is the envelope's strict JSON text, its structure checked
    (:func:`~securechat.envelope.check_envelope`): what the ``message`` frame
    carries, as is (:func:`~securechat.protocol.message_frame`).
    """

    kind: ClassVar[str] = "send"
    sender: str
    to: str
    msg_id: str
    envelope: bytes
    rid: str | None


@dataclass(slots=True)
class Received:
    """``received``: the session confirms the message ``msg_id`` from ``sender``."""

    kind: ClassVar[str] = "received"
    sender: str
    msg_id: str
    rid: str | None


@dataclass(slots=True)
class Lookup:
    """``lookup`` of a valid name, within the lookup rate."""

    kind: ClassVar[str] = "lookup"
    name: str
    rid: str | None


@dataclass(slots=True)
class CheckName:
    """``check_name`` before ``hello``, within the lookup rate: is the name registered?"""

    kind: ClassVar[str] = "check_name"
    name: str
    rid: str | None


@dataclass(slots=True)
class ListUsers:
    """``list``, within the lookup rate: one page after ``after`` ('' for the first), of names starting with ``prefix``."""

    kind: ClassVar[str] = "list"
    after: str
    prefix: str
    rid: str | None


@dataclass(slots=True)
class RoomRequest:
    """A room frame (docs/protocol.md 11.4) whose fields are checked; :mod:`securechat.server.rooms` acts on it."""

    kind: str  # room_create, room_append, room_log, room_send or rooms
    sender: str
    frame: dict[str, Any]
    rid: str | None


Event = Login | Send | Received | Lookup | ListUsers | RoomRequest | CheckName


class Pull(enum.Enum):
    """What :meth:`ServerConnection.next_event` returns when it has no event."""

    HANDLED = "handled"  # one frame was answered here (pong, an error): ask again
    NEED_DATA = "need_data"  # nothing to do until more bytes come, a login is answered, or ever (ended)


HANDLED: Final = Pull.HANDLED
NEED_DATA: Final = Pull.NEED_DATA


class Deferred:
    """A handler result the pipeline may await later (after handling more sends), keeping order."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[None]) -> None:
        self.awaitable = awaitable


# What a handler returns: None (done), an awaitable (wait for it before the next event),
# or a Deferred (go on with later sends meanwhile).
Handled: TypeAlias = "Deferred | Awaitable[None] | None"
