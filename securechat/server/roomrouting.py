"""Rooms' routing (:class:`~securechat.server.seam.RoomRouting`) on one node and across nodes over Redis.

:class:`LocalRooms`: a member's copy goes to its session on this node while
its window has room, else to the store behind what waits there
(:meth:`LocalRouting.hand`), exactly like a one-to-one message.

:class:`ClusterRooms`: every copy goes into the member's queue in Redis and
is poked to whatever node holds the member (:meth:`RedisStore.route`, the
script one-to-one messages use), so delivery is in order and once per member
and acked per member wherever the sender is connected: the copy carries its
room in its stored rid (:func:`~securechat.server.redisstore.rid_text`), so
the ``queued`` and ``delivered`` acks that the member's node publishes name
the room and the member. A room's change is pushed by a ``P`` message on each
member's channel. Nodes cache room states, so :meth:`ClusterRooms.room_seq`
lets them check a cached state against the room's ``seq`` in Redis before
they use it: a node never routes by a membership another node changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import QueueFull
from .cluster import ClusterRouting, SessionBox
from .futures import then
from .mailbox import InFlight
from .redisstore import ALREADY_CONFIRMED, OVER_CAPS, RedisStore
from .routing import LocalRouting
from .seam import CopyOutcome
from .store import MessageStore, QueuedMessage

if TYPE_CHECKING:
    from .transport import Peer


def _queued(entry: InFlight, member: str) -> QueuedMessage:
    return QueuedMessage(member, entry.sender, entry.msg_id, entry.server_ts, entry.frame or b"", time.time(), room=entry.room)


class LocalRooms:
    """:class:`RoomRouting` on one node."""

    def __init__(self, routing: LocalRouting, store: MessageStore) -> None:
        self._routing = routing
        self._store = store

    def room_seq(self, room: str) -> None:
        return None

    def push(self, names: Iterable[str], frame: bytes) -> None:
        for name in names:
            target = self._routing.session(name)
            if target is not None and not target.closing:
                target.write(frame)

    def copy(self, sender: Peer, member: str, entry: InFlight) -> CopyOutcome | asyncio.Future[CopyOutcome]:
        target = self._routing.session(member)
        if target is None or target.closing:
            stored = self._store.enqueue(_queued(entry, member))
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


class ClusterRooms:
    """:class:`RoomRouting` across nodes that share Redis (the module docstring says how)."""

    def __init__(self, routing: ClusterRouting, store: RedisStore) -> None:
        self._routing = routing
        self._store = store

    def room_seq(self, room: str) -> asyncio.Future[int | None]:
        return self._store.room_seq(room)

    def push(self, names: Iterable[str], frame: bytes) -> None:
        for name in names:
            self._routing.tell(name, b"P" + frame)

    def copy(self, sender: Peer, member: str, entry: InFlight) -> asyncio.Future[CopyOutcome]:
        routed = self._store.route(_queued(entry, member), entry.rid)

        def outcome(got: list[int]) -> CopyOutcome:
            status, _, receivers = got
            if status == OVER_CAPS:
                return "full"
            if status == ALREADY_CONFIRMED:
                return "delivered"
            if not receivers:  # nobody holds the member: stored for later, as on one node
                return "queued"
            box = sender.mailbox
            if isinstance(box, SessionBox):  # the member's node acks it, by pub/sub; a gap is recovered
                box.awaited.add(member, entry.msg_id, entry.rid, entry.room)
            return "handed"

        return then(routed, outcome)
