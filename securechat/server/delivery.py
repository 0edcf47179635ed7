"""What both routings (:mod:`.routing`, :mod:`.cluster`) write: only ``message`` frames the peer may
accept, acks, and a stored backlog paced to its reader (batches of the store, waits for its socket)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..protocol import HEADER_SIZE, message_frame
from ..relayframes import ack_frame
from .config import ServerConfig
from .events import Send

if TYPE_CHECKING:
    from .transport import Peer

BACKLOG_BATCH: Final = 500
BACKLOG_DRAIN_ABOVE: Final = 64 * 1024  # after a backlog batch, wait for the reader while more is unsent


async def make_room(peer: Peer, size: int) -> bool:
    """Before writing ``size`` more bytes of a backlog: wait for the reader rather than trip its bound.

    False once the connection is gone.
    """
    buffered = peer.buffered()
    if buffered and buffered + size > peer.max_out:
        peer.flush()
        await peer.drain()
    return not peer.closing


async def end_batch(peer: Peer) -> None:
    """After a backlog batch: send it, and wait for the reader while much of it is unsent."""
    peer.flush()
    if peer.buffered() > BACKLOG_DRAIN_ABOVE:
        await peer.drain()


def deliverable_frame(peer: Peer, message: Send, server_ts: int, config: ServerConfig) -> bytes | None:
    """The ``message`` frame for ``message``, or None after refusing the sender with ``message_too_large``.

    The server never makes a frame its recipient would have to refuse (docs/protocol.md, "Delivery"),
    on one node or several.
    """
    body = message_frame(message.sender, server_ts, message.envelope)
    size, limit = len(body) - HEADER_SIZE, config.deliverable_frame
    if size > limit:
        peer.error("message_too_large", f"as a 'message' frame this would be {size} bytes; the limit is {limit}", message.rid)
        return None
    return body


def ack_for(msg_id: str, recipient: str, status: str, rid: str | None, room: str | None) -> bytes:
    """The ack for ``recipient``'s copy: a room's names the room and the member."""
    if room is None:
        return ack_frame(msg_id, recipient, status, rid)
    return ack_frame(msg_id, room, status, rid, member=recipient)
