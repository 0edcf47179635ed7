"""QueueReader: each session's reading of its queue in Redis, on a node of several (:mod:`securechat.server.cluster`).

A session keeps its *position*: the last queue sequence number it handed out.
A message published (``M``) that follows the position directly is written at
once while the window has room; anything else (a gap, a full window, a
subscriber connection that had to reconnect) makes the session read the queue
from its position (the *pump*), paced to its reader. Messages reach a session
in queue order, each once per session; a new session starts from the
beginning of the queue. A queued copy of a message the session holds or
confirmed live (its sender stored it after all: :mod:`securechat.server.livepath`)
is not handed out again: its confirmation, or at once a confirm, deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .confirms import Confirmations
from .delivery import BACKLOG_BATCH, end_batch, make_room
from .mailbox import InFlight
from .pokes import NewMessage
from .rids import rid_about
from .sessionbox import SessionBox
from .store import QueuedMessage

if TYPE_CHECKING:
    from .presence import Presence
    from .redisstore import RedisStore
    from .transport import Peer

log = logging.getLogger("securechat.server")


class QueueReader:
    """Hands each session of this node what its queue holds, in order (see the module docstring)."""

    def __init__(
        self,
        store: RedisStore,
        presence: Presence,
        confirms: Confirmations,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        tell_queued: Callable[[bytes, bytes, str, bytes], None],
    ) -> None:
        self._store = store
        self._presence = presence
        self._confirms = confirms
        self._spawn = spawn
        self._tell_queued = tell_queued

    def pump_soon(self, peer: Peer, box: SessionBox) -> None:
        """Read ``box``'s queue from its position (once more, if a read is under way)."""
        if box.pump is not None:
            box.again = True
        elif not peer.closing:
            box.pump = self._spawn(self._pump(peer, box))

    async def _pump(self, peer: Peer, box: SessionBox) -> None:
        """Read the queue from the session's position until it is empty, paced to the reader, retrying a failed read."""
        try:
            while not peer.closing:
                try:
                    if not box.has_room():  # the window is full: wait for a confirmation
                        box.room.clear()
                        await box.room.wait()
                        continue
                    box.again = False
                    count, size = box.room_left()
                    batch = await self._store.fetch_routed(box.name, box.position, min(count, BACKLOG_BATCH), size)
                    if not batch and not box.again:
                        return
                    for routed in batch:
                        if not box.fits(routed.message.size):  # read again once there is room for it
                            box.next_size = routed.message.size
                            break
                        if not await make_room(peer, routed.message.size):
                            return
                        self.hand_out(peer, box, routed.message, routed.rid, routed.told_queued)
                    await end_batch(peer)
                except (ConnectionError, OSError) as exc:  # Redis or the peer went away: read again in a moment
                    log.debug("reading the queue of %s stopped: %s", box.name, exc)
                    # No poke may come. Still pumping meanwhile: no live message may pass what is left to read.
                    await asyncio.sleep(0.5)
        except Exception:
            log.exception("reading the queue of %s failed", box.name)
            peer.end("queue delivery failed", abort=True)
        finally:
            box.pump = None

    def hand_out(self, peer: Peer, box: SessionBox, m: QueuedMessage, rid: str | None, told: bool) -> None:
        """Write the queued message ``m`` to the session, if it follows its position and is new to it."""
        if m.seq <= box.position:
            return
        box.position = m.seq
        told = told or m.seq in box.told  # its sender heard `queued` above: a drop need not say it again
        box.told.discard(m.seq)
        key = (m.sender, m.msg_id)
        if (held := box.inflight.get(key)) is not None:  # resent meanwhile, or stored after it went live: it has it
            held.stored = True  # its confirmation deletes the queue's copy
            return
        if box.took_live() and box.live_in.done(key):  # confirmed live already: the copy is deleted (its sender hears `delivered` once)
            self._confirms.add(box.name, (m.sender, m.msg_id, True, rid, m.room))
            return
        box.next_size = 0
        box.hand_out(key, InFlight(m.sender, m.msg_id, m.server_ts, None, m.size, m.enqueued_at, True, rid, m.room, told))
        self._presence.watch(peer, m.sender)
        peer.write(m.frame)

    def on_new_message(self, name: str, peer: Peer | None, new: NewMessage) -> None:
        """An ``M`` poke's message for ``name``, whose session on this node (if any) is ``peer``."""
        n, sender, msg_id, server_ts, tagged, frame = new
        box = peer.mailbox if peer is not None else None
        if peer is None or not isinstance(box, SessionBox) or peer.closing:
            # Subscribed, yet no session to hand it to (one is starting or ending): it stays queued.
            self._tell_queued(sender, msg_id, name, tagged)
            return
        if n <= box.position:
            return
        # Written at once while the window has room, as on one node; else read from the queue as it frees.
        if box.pump is None and n == box.position + 1 and box.fits(len(frame)):
            rid, room = rid_about(tagged)
            m = QueuedMessage(name, sender.decode(), msg_id.decode(), int(server_ts), frame, time.time(), n, room)
            self.hand_out(peer, box, m, rid, False)
        else:  # it waits in the queue, as a message stored on one node: its sender hears `queued`, once
            if not (box.took_live() and box.live_in.done((sender.decode(), msg_id.decode()))):  # it heard `delivered` already
                self._tell_queued(sender, msg_id, name, tagged)
            box.told.add(n)
            self.pump_soon(peer, box)
