"""Rooms' routing (:class:`~securechat.server.seam.RoomRouting`) on one node.

:class:`LocalRooms`: a member's copy goes to its session on this node while
its window has room, else to the store behind what waits there
(:meth:`LocalRouting.hand`), exactly like a one-to-one message. Across nodes
over Redis it is :class:`~securechat.server.cluster_rooms.ClusterRooms`, in a
module of its own so that one node never imports the Redis modules (they need
the ``[redis]`` extra).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import QueueFull
from .mailbox import InFlight
from .routing import LocalRouting
from .seam import CatchUp, CopyOutcome
from .store import MessageStore, QueuedMessage

if TYPE_CHECKING:
    from .transport import Peer


def queued_copy(entry: InFlight, member: str) -> QueuedMessage:
    """The stored form of a room message's copy for ``member``."""
    return QueuedMessage(member, entry.sender, entry.msg_id, entry.server_ts, entry.frame or b"", time.time(), room=entry.room)


class LocalRooms:
    """:class:`RoomRouting` on one node."""

    def __init__(self, routing: LocalRouting, store: MessageStore) -> None:
        self._routing = routing
        self._store = store

    def room_seq(self, room: str) -> None:
        return None

    def order(self, sender: Peer) -> None:
        return None

    def told(self, peer: Peer, room: str, seq: int) -> None:
        return None  # one node's pushes are never lost: nothing to catch up on

    def after_gap(self, catch_up: CatchUp) -> None:
        return None

    def push(self, names: Iterable[str], room: str, seq: int, frame: bytes) -> None:
        for name in names:
            target = self._routing.session(name)
            if target is not None and not target.closing:
                target.write(frame)

    def copy(self, sender: Peer, member: str, entry: InFlight) -> CopyOutcome | asyncio.Future[CopyOutcome]:
        target = self._routing.session(member)
        if target is None or target.closing:
            stored = self._store.enqueue(queued_copy(entry, member))
        else:
            later = self._routing.hand(target, entry)
            if later is None:
                return "handed"
            stored = later  # the member's window is full or its backlog is being read: through the store, in order
        out: asyncio.Future[CopyOutcome] = asyncio.get_running_loop().create_future()

        def done(f: asyncio.Future[bool]) -> None:
            if out.cancelled():
                return
            exc = None if f.cancelled() else f.exception()
            if isinstance(exc, QueueFull):
                out.set_result("full")
            elif f.cancelled() or exc is not None:
                out.set_exception(exc or asyncio.CancelledError())
            else:
                out.set_result("queued")

        stored.add_done_callback(done)
        return out
