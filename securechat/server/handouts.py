"""No single message blocks a queue (issue 13, item 1; docs/protocol.md, "Delivery": *Set aside*).

A message the recipient's client fails on every time (it drops the connection
or refuses the frame) would be handed out first in each session, ahead of
everything behind it. So after a session ends holding unconfirmed messages,
the name's next session on this node is *on probation*: one message at a time
until it confirms one. A probation session that ends holding exactly one
counts a failed hand-out against it, in the store; at the limit the store sets
it aside and its sender is told ``ack`` ``undeliverable`` (:func:`tell_set_aside`).
Both routings use this; what they count must be the session's own doing, so a
session replaced by a newer one, or ended by the server's shutdown, counts nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..relayframes import ack_frame
from .mailbox import InFlight, Mailbox
from .store import MessageStore

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")


class Probation:
    """Which names' sessions are handed one message at a time, and what a session's end counts."""

    def __init__(self, store: MessageStore, limit: int, spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self._store = store
        self._spawn = spawn
        self.limit = limit  # failed hand-outs after which a message is set aside (--max-hand-outs)
        self.stopping = False  # the server shuts down: sessions that end now are not to blame
        self._names: set[str] = set()  # the last session ended holding unconfirmed messages
        self._on: dict[str, tuple[Mailbox, int]] = {}  # the session on probation, and its own window

    def start(self, box: Mailbox, peer: Peer) -> None:
        """``peer``, a session of ``box.name``, starts: told of its messages set aside; one message at a time
        if the last session failed."""
        self._spawn(tell_set_aside(self._store, peer, box.name))
        if box.name in self._names:
            self._on[box.name] = (box, box.window)
            box.window = 1

    def confirmed(self, box: Mailbox, entry: InFlight | None) -> None:
        """The session confirmed ``entry`` (None: nothing it was handed): it takes its whole window again."""
        on = self._on.get(box.name) if entry is not None else None
        if on is not None and on[0] is box:
            box.window = on[1]
            del self._on[box.name]
            self._names.discard(box.name)

    def ended(self, box: Mailbox, unconfirmed: list[InFlight], told: Callable[[str], None], *, own: bool) -> None:
        """``box``'s session ended holding ``unconfirmed`` (all stored by now, or submitted to be).

        ``own``: it ended by itself (not replaced). ``told(sender)`` is called
        when a message of ``sender`` was set aside, for its routing to tell it.
        """
        on = self._on.get(box.name)
        probation = on is not None and on[0] is box
        if probation:
            del self._on[box.name]
        if not own or self.stopping:
            return
        if not unconfirmed:
            self._names.discard(box.name)
            return
        self._names.add(box.name)
        if probation and len(unconfirmed) == 1:
            self._count(box.name, unconfirmed[0], told)

    def _count(self, name: str, entry: InFlight, told: Callable[[str], None]) -> None:
        try:
            fut = self._store.failed_hand_out(name, entry.sender, entry.msg_id, self.limit)
        except RuntimeError:  # the store is closed: nothing to count any more
            return

        def counted(f: asyncio.Future[bool]) -> None:
            if f.cancelled() or f.exception() is not None:
                log.error("could not count a failed hand-out to %s", name, exc_info=f.exception())
            elif f.result():
                log.info("set aside message %s from %s to %s after %d failed hand-outs", entry.msg_id, entry.sender, name, self.limit)
                told(entry.sender)

        fut.add_done_callback(counted)


async def tell_set_aside(store: MessageStore, peer: Peer, name: str) -> None:
    """Write ``ack`` ``undeliverable`` to ``peer`` (``name``'s session) for each of its messages set aside."""
    if peer.closing:
        return  # the next session asks
    try:
        notices = await store.take_set_aside(name)
    except (ConnectionError, OSError, RuntimeError) as exc:  # the next login asks again
        log.info("could not read the set-aside notices of %s: %s", name, exc)
        return
    for n in notices:
        if n.room is None:
            peer.write(ack_frame(n.msg_id, n.recipient, "undeliverable", n.rid))
        else:
            peer.write(ack_frame(n.msg_id, n.room, "undeliverable", n.rid, member=n.recipient))
