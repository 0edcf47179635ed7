"""The server's state table (docs/protocol.md section 5): each :class:`Phase` of a connection and the
frame types it accepts, in the style of h11's ``_state.py``. :class:`~securechat.server.connection.ServerConnection`
moves through it."""

from __future__ import annotations

import enum
from typing import Final

from ..errors import BadRequest, ProtocolError
from ..rooms.frames import ROOM_CLIENT_TYPES


class Phase(enum.Enum):
    """Where a connection is, as the server sees it (docs/protocol.md section 5)."""

    AWAIT_HELLO = "await_hello"  # the handshake: nothing read yet
    AWAIT_AUTH = "await_auth"  # the handshake: challenge sent (then, while the login is checked, paused)
    OPEN = "open"  # welcome sent
    FAILED = "failed"  # a fatal error was queued: input is discarded while the peer reads it
    REFUSED = "refused"  # server_busy was queued before anything was read
    CLOSED = "closed"


# Every frame type the server accepts in each phase, and the phase it leads to.
SERVER_TRANSITIONS: Final[dict[Phase, dict[str, Phase]]] = {
    Phase.AWAIT_HELLO: {"check_name": Phase.AWAIT_HELLO, "hello": Phase.AWAIT_AUTH},
    Phase.AWAIT_AUTH: {"auth": Phase.OPEN},
    Phase.OPEN: {
        "lookup": Phase.OPEN,
        "list": Phase.OPEN,
        "send": Phase.OPEN,
        "received": Phase.OPEN,
        "ping": Phase.OPEN,
        **dict.fromkeys(sorted(ROOM_CLIENT_TYPES), Phase.OPEN),
    },
    Phase.FAILED: {},
    Phase.REFUSED: {},
    Phase.CLOSED: {},
}
OPEN_ROW: Final = SERVER_TRANSITIONS[Phase.OPEN]
# The phases that accept nothing: the connection has ended.
ENDED: Final = frozenset(phase for phase, row in SERVER_TRANSITIONS.items() if not row)


def check_transition(phase: Phase, kind: str) -> Phase:
    """The phase after the server accepts a ``kind`` frame in ``phase``.

    Raises the protocol error the server must answer with when the table has
    no such transition; it names the phase and the frame type.
    """
    nxt = SERVER_TRANSITIONS[phase].get(kind)
    if nxt is None:
        raise unexpected(phase, kind)
    return nxt


def unexpected(phase: Phase, kind: str) -> ProtocolError:
    """The error for a ``kind`` frame that ``phase`` does not accept."""
    shown = kind[:40]
    if phase in ENDED:
        return BadRequest("connection is closed", code="bad_request", fatal=True)
    if phase is not Phase.OPEN:
        expected = " or ".join(sorted(SERVER_TRANSITIONS[phase]))
        return BadRequest(
            f"expected {expected} before authentication, got {shown!r}", code="not_authenticated", fatal=True
        )
    if kind in ("hello", "auth"):
        return BadRequest(f"{shown!r} is not allowed: this session is already authenticated")
    return BadRequest(f"unknown frame type {shown!r}", code="unknown_type")
