"""Rooms' routing (:class:`~securechat.server.seam.RoomRouting`) across nodes that share Redis.

:class:`ClusterRooms`: every copy goes into the member's queue in Redis and
is poked to whatever node holds the member (:meth:`RedisStore.route`, the
script one-to-one messages use), so delivery is in order and once per member
and acked per member wherever the sender is connected: the copy carries its
room in its stored rid (:func:`~securechat.server.rids.rid_text`), so
the ``queued`` and ``delivered`` acks that the member's node publishes name
the room and the member. A room's change is pushed by a ``P`` message on each
member's channel, with the room and the entry's seq, which the member's
node notes per session: after a gap of its pokes it sends each session the
entries that followed (:meth:`RoomService.catch_up`). Nodes cache room states, so :meth:`ClusterRooms.room_seq`
lets them check a cached state against the room's ``seq`` in Redis before
they use it: a node never routes by a membership another node changed.
One node uses :class:`~securechat.server.roomrouting.LocalRooms`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .cluster import ClusterRouting
from .futures import then
from .mailbox import InFlight
from .redisstore import ALREADY_CONFIRMED, OVER_CAPS, RedisStore
from .roomrouting import queued_copy
from .seam import CatchUp, CopyOutcome
from .sendorder import SendOrder
from .sessionbox import SessionBox, push_body

if TYPE_CHECKING:
    from .transport import Peer


class ClusterRooms:
    """:class:`RoomRouting` across nodes that share Redis (the module docstring says how)."""

    def __init__(self, routing: ClusterRouting, store: RedisStore) -> None:
        self._routing = routing
        self._store = store

    def room_seq(self, room: str) -> asyncio.Future[int | None]:
        return self._store.room_seq(room)

    def order(self, sender: Peer) -> SendOrder | None:
        box = sender.mailbox
        return box.order if isinstance(box, SessionBox) else None

    def push(self, names: Iterable[str], room: str, seq: int, frame: bytes) -> None:
        body = push_body(room, seq, frame)
        for name in names:
            self._routing.tell(name, body)

    def told(self, peer: Peer, room: str, seq: int) -> None:
        if isinstance(box := peer.mailbox, SessionBox):
            box.told_room(room, seq)

    def after_gap(self, catch_up: CatchUp) -> None:
        self._routing.after_gap = lambda peer, box: catch_up(peer, box.name, box.rooms_told)

    def copy(self, sender: Peer, member: str, entry: InFlight) -> asyncio.Future[CopyOutcome]:
        self._routing.store_path(sender, member)  # a one-to-one message sent live before it stays before it
        routed = self._store.route(queued_copy(entry, member), entry.rid)

        def outcome(got: list[int]) -> CopyOutcome:
            status, _, receivers = got
            if status == OVER_CAPS:
                return "full"
            if status == ALREADY_CONFIRMED:
                return "delivered"
            box = sender.mailbox
            if isinstance(box, SessionBox):  # its ack(s) to come by pub/sub; a gap is recovered (awaited.py)
                box.awaited.routed(member, entry.msg_id, entry.rid, entry.room, receivers)
            # Nobody holds the member: stored for later, as on one node; its `delivered` is still awaited.
            return "handed" if receivers else "queued"

        return then(routed, outcome)
