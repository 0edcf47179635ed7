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
ended the wait, and a second gap lost the ``delivered`` for good). Sends acked
``queued`` at once (nobody held the recipient) are not kept: a ``delivered`` for
one of them that a gap swallows is not recovered (docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

# Per session. Past it the oldest is forgotten: its ack can then only be lost to a gap, and the client
# learns the message's fate when it reconnects and resends it (the store answers from its dedupe window).
AWAITED_MAX: Final = 10_000

STATUS_GONE: Final = 0  # neither queued nor confirmed within the dedupe window (expired)
STATUS_QUEUED: Final = 1
STATUS_CONFIRMED: Final = 2


class AwaitedAcks:
    """One session's sends whose ack comes from another node: ``(to, msg_id) -> (rid, room, told queued)``.

    For a room message's copy ``to`` is the member and ``room`` the room; else ``room`` is None.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], tuple[str | None, str | None, bool]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, to: str, msg_id: str, rid: str | None, room: str | None = None) -> None:
        if len(self._items) >= AWAITED_MAX:
            del self._items[next(iter(self._items))]
        self._items[(to, msg_id)] = (rid, room, False)

    def settle(self, to: str, msg_id: str) -> bool:
        """Its ``delivered`` was written, or it is gone: forget it; False if it was not awaited."""
        return self._items.pop((to, msg_id), None) is not None

    def tell_queued(self, to: str, msg_id: str) -> bool:
        """Mark that its ``queued`` is written: False if it is not awaited or was told already. It stays awaited."""
        item = self._items.get((to, msg_id))
        if item is None or item[2]:
            return False
        self._items[(to, msg_id)] = (item[0], item[1], True)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_recipient(self) -> Iterator[tuple[str, list[str]]]:
        """The awaited message ids, grouped by recipient (a snapshot)."""
        grouped: dict[str, list[str]] = {}
        for to, msg_id in self._items:
            grouped.setdefault(to, []).append(msg_id)
        yield from grouped.items()

    def about(self, to: str, msg_id: str) -> tuple[str | None, str | None]:
        """The send's rid and room (both None if it is not awaited)."""
        rid, room, _ = self._items.get((to, msg_id), (None, None, False))
        return rid, room


def ack_status(status: int) -> str | None:
    """The ack a sender gets for a message the store reports in ``status``, or None (nothing to say)."""
    if status == STATUS_CONFIRMED:
        return "delivered"
    if status == STATUS_QUEUED:
        return "queued"
    return None
