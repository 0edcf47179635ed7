"""The acks a node waits for on a sender's behalf, so that a pub/sub gap cannot swallow one.

On several nodes a send to an online recipient is acked later, by whichever
node holds the recipient: ``delivered`` from the confirming script, or
``queued`` when that session ends first, both published on the sender's
channel. Pub/sub is only a poke: while the sender's node is not subscribed
(its subscriber connection was killed, Redis restarted) such an ack is lost,
and the sender's client would wait for it as long as it stays connected. So
each session keeps the sends whose ack is still to come; after every gap the
node asks Redis where each one is (:meth:`RedisStore.sent_status`) and writes
the ack the store proves: ``delivered`` if the recipient confirmed it,
``queued`` if it is still queued (a later ``delivered`` may follow, as on one
node).

A ``queued`` does not end the wait: the send stays awaited, marked as told, until
its ``delivered`` is written or the store no longer knows it, so a ``delivered``
swallowed by a later gap is recovered too (before, the first ack of either kind
ended the wait, and a second gap lost the ``delivered`` for good). A send acked
``queued`` at once (nobody held the recipient) is kept the same way, as told:
its ``delivered`` comes by pub/sub whenever the recipient confirms it. A room
message's copies follow the same rule (:meth:`AwaitedAcks.routed`, used by both
paths), each keyed by its member and naming its room.

A send whose ack has not come within :data:`ACK_DEADLINE`, to a name held by a
node whose heartbeat has lapsed as long (:mod:`securechat.server.nodewatch`),
is looked up the same way (:func:`sweep_overdue`, every :data:`SWEEP_INTERVAL`):
when the recipient's node is cut from Redis, Redis still counts that node's
subscriber (it cannot tell it is gone until TCP gives up, minutes later), so
the send went the "handed out, ack to come" way and no ack can come; the sender
is told ``queued`` (the message is in the recipient's queue) within the
deadline and a second instead of never. A recipient merely slow to confirm, on
a node that is heard from, is waited for as before.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

from .delivery import ack_for

if TYPE_CHECKING:
    from .redisstore import RedisStore
    from .sessionbox import SessionBox
    from .transport import Peer

log = logging.getLogger("securechat.server")

# Per session. Past it the oldest is forgotten: its ack can then only be lost to a gap, and the client
# learns the message's fate when it reconnects and resends it (the store answers from its dedupe window).
AWAITED_MAX: Final = 10_000
# Per session: the sends whose `delivered` was written lately, so that a second copy (read from the store after
# a gap while the poke was on its way, or a poke published twice) is not written again.
DELIVERED_KEPT: Final = 256
ACK_DEADLINE: Final = 5.0  # seconds: a send still unacked is looked up in the store
SWEEP_INTERVAL: Final = 1.0

STATUS_GONE: Final = 0  # neither queued nor confirmed within the dedupe window (expired)
STATUS_QUEUED: Final = 1
STATUS_CONFIRMED: Final = 2

Key = tuple[str, str]


class AwaitedAcks:
    """One session's sends whose ack comes from another node, keyed ``(to, msg_id)``: those told nothing
    yet (with their rid, room and when they were sent, oldest first) and those told ``queued``.

    For a room message's copy ``to`` is the member and ``room`` the room; else ``room`` is None.
    """

    __slots__ = ("_delivered", "_delivered_order", "_items", "_told")

    def __init__(self) -> None:
        self._items: dict[Key, tuple[str | None, str | None, float]] = {}
        self._told: dict[Key, tuple[str | None, str | None]] = {}
        # The latest DELIVERED_KEPT written: a set to look in, a deque for their order. (A dict in insertion
        # order dropped its oldest with next(iter()), which walks the slots of the keys deleted before it: a
        # microsecond or more per cross-node message on the sender's node, docs/performance.md round 9.)
        self._delivered: set[Key] = set()
        self._delivered_order: collections.deque[Key] = collections.deque()

    def __len__(self) -> int:
        return len(self._items) + len(self._told)

    def add(self, to: str, msg_id: str, rid: str | None, room: str | None = None, *, told: bool = False) -> None:
        """Await its ack; ``told``: its sender heard `queued` already, only its `delivered` is to come."""
        if len(self) >= AWAITED_MAX:
            oldest = self._told or self._items  # a told one only waits for its `delivered`: forgotten first
            del oldest[next(iter(oldest))]
        self._told.pop((to, msg_id), None)
        self._items.pop((to, msg_id), None)
        if told:
            self._told[(to, msg_id)] = (rid, room)
        else:
            self._items[(to, msg_id)] = (rid, room, time.monotonic())

    def settle(self, to: str, msg_id: str) -> bool:
        """Its ``delivered`` was written, or it is gone: forget it; False if it was not awaited."""
        key = (to, msg_id)
        return self._items.pop(key, None) is not None or self._told.pop(key, None) is not None

    def deliver(self, to: str, msg_id: str) -> bool:
        """Its ``delivered`` is to be written: forget it; False if one was written lately (a second copy)."""
        self.settle(to, msg_id)
        if (key := (to, msg_id)) in self._delivered:
            return False
        self._delivered.add(key)
        (order := self._delivered_order).append(key)
        if len(order) > DELIVERED_KEPT:
            self._delivered.discard(order.popleft())
        return True

    def routed(self, to: str, msg_id: str, rid: str | None, room: str | None, receivers: int) -> None:
        """A send (or a room's copy) stored in ``to``'s queue and heard by ``receivers`` nodes: await its ack.

        The one rule for both: nobody held ``to``, so its sender is told ``queued`` at once and only its
        ``delivered`` is to come (told); else the recipient's node acks it, ``queued`` or ``delivered``.
        """
        self.add(to, msg_id, rid, room, told=not receivers)

    def tell_queued(self, to: str, msg_id: str) -> bool:
        """Mark that its ``queued`` is written: False if it is not awaited or was told already. It stays awaited."""
        item = self._items.pop((to, msg_id), None)
        if item is None:
            return False
        self._told[(to, msg_id)] = item[:2]
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._items or key in self._told

    def by_recipient(self, keys: Iterable[Key] | None = None) -> Iterator[tuple[str, list[str]]]:
        """The awaited message ids (or those of ``keys``), grouped by recipient (a snapshot)."""
        grouped: dict[str, list[str]] = {}
        for to, msg_id in list(keys if keys is not None else (*self._items, *self._told)):
            grouped.setdefault(to, []).append(msg_id)
        yield from grouped.items()

    def overdue(self, sent_before: float) -> list[Key]:
        """The sends told nothing yet that were sent before ``sent_before`` (monotonic time)."""
        found = []
        for key, (_, _, since) in self._items.items():
            if since >= sent_before:
                break  # oldest first: the rest are younger
            found.append(key)
        return found

    def about(self, to: str, msg_id: str) -> tuple[str | None, str | None]:
        """The send's rid and room (both None if it is not awaited)."""
        item = self._items.get((to, msg_id)) or self._told.get((to, msg_id)) or (None, None)
        return item[0], item[1]


def ack_status(status: int) -> str | None:
    """The ack a sender gets for a message the store reports in ``status``, or None (nothing to say)."""
    if status == STATUS_CONFIRMED:
        return "delivered"
    if status == STATUS_QUEUED:
        return "queued"
    return None


async def recover_acks(store: RedisStore, peer: Peer, box: SessionBox, keys: Iterable[Key] | None = None) -> None:
    """Write the acks the store proves for the awaited sends (``keys``, or all) whose ack may never come."""
    try:
        for to, msg_ids in box.awaited.by_recipient(keys):
            statuses = await store.sent_status(to, box.name, msg_ids)
            for msg_id, status in zip(msg_ids, statuses, strict=True):
                ack, (rid, room) = ack_status(status), box.awaited.about(to, msg_id)
                if ack is not None:  # stored: its sender will not send it again (as on an ack by pub/sub)
                    box.order.settled((to, msg_id))
                # `queued` keeps it awaited: its `delivered` may yet be lost to another gap.
                if ack == "delivered":
                    told = (to, msg_id) in box.awaited and box.awaited.deliver(to, msg_id)
                else:
                    told = box.awaited.tell_queued(to, msg_id) if ack == "queued" else box.awaited.settle(to, msg_id)
                if ack is not None and told and not peer.closing:
                    peer.write(ack_for(msg_id, to, ack, rid, room))
    except (ConnectionError, OSError) as exc:  # Redis went away again: the next resync or sweep tries again
        log.debug("recovering the acks of %s stopped: %s", box.name, exc)


async def sweep_overdue(
    store: RedisStore,
    sessions: Callable[[], Iterable[tuple[Peer, SessionBox]]],
    spawn: Callable[..., object],
    lost: Callable[[str], bool],
    beat: Callable[[], None],
) -> None:
    """Forever, each :data:`SWEEP_INTERVAL`: ``beat()`` (this node's heartbeat), then look up in the store every
    send :data:`ACK_DEADLINE` late whose recipient's node is ``lost`` (securechat/server/nodewatch.py)."""
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        beat()
        late = time.monotonic() - ACK_DEADLINE
        for peer, box in sessions():
            if box.awaited and (keys := [key for key in box.awaited.overdue(late) if lost(key[0])]):
                spawn(recover_acks(store, peer, box, keys))
