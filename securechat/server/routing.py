"""Routing: which session holds each name, what it was handed, its backlog, requeue and acks.

Delivery (docs/protocol.md, "Server behaviour details"). A message for a
connected recipient whose window (:mod:`.mailbox`) has room is written at once
and held until ``received``; then its sender, if online, hears ``delivered``.
Else it is stored and acked ``queued`` (one commit per loop iteration): the
recipient is offline, its window is full, its backlog or earlier messages wait
in the store, or the frames held for all sessions reach
``--max-unconfirmed-bytes``; what the session held in memory is stored first
(order). Its *pump* reads the store back as confirmations free room. What was
forwarded live and is unconfirmed when a session ends is requeued.

The seam (:mod:`securechat.server.seam`): :class:`LocalRouting` routes within this process,
:class:`~securechat.server.cluster.ClusterRouting` between nodes that share Redis.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING

from ..clock import now_ms
from ..errors import QueueFull
from ..relayframes import ack_frame
from .delivery import BACKLOG_BATCH, ack_for, deliverable_frame, end_batch, make_room
from .events import Deferred, Handled, Received, Send
from .handouts import tell_set_aside
from .mailbox import TAIL_WAIT, InFlight, Key, Mailbox
from .seam import RoutingCore
from .store import MessageStore, QueuedMessage

if TYPE_CHECKING:
    from .transport import Peer

log = logging.getLogger("securechat.server")


class LocalRouting(RoutingCore[MessageStore]):
    """:class:`Routing` within one server process."""

    def _own_state(self) -> None:
        self._online: dict[str, Peer] = {}
        self._deletes: list[tuple[str, str, str]] = []
        self.held_bytes = 0  # frames held in memory for all sessions (--max-unconfirmed-bytes)

    # --- sessions ------------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, peer: Peer, name: str) -> None:
        return None  # one process: attach() takes the name over at once

    def attach(self, peer: Peer) -> None:
        name = peer.name
        assert name is not None
        old = self._online.get(name)
        box = Mailbox(name, self._config.window, self._config.window_bytes)
        peer.set_mailbox(box)
        self._probation.start(box, peer)
        self._online[name] = peer  # before anything can be routed here
        if old is not None:
            old.fail("replaced", "a new session for this name started elsewhere")
        self._presence.note(name, True)
        self.deliver_backlog(peer)

    def detach(self, peer: Peer) -> None:
        """Synchronous on purpose: the requeue is submitted before anything else can route to the name."""
        box = peer.mailbox
        if box is None:
            return
        peer.set_mailbox(None)
        name = box.name
        own = self._online.get(name) is peer  # not when a newer session replaced it: it never went offline
        if own:
            del self._online[name]
            self._presence.note(name, False)
        waiting, change = box.take_waiting()  # never handed out: requeued behind the unconfirmed ones
        self.held_bytes += change
        unconfirmed = list(box.inflight.values())
        box.inflight.clear()
        self.held_bytes -= box.held_bytes
        box.held_bytes = box.unconfirmed_bytes = 0
        box.room.set()  # the pump, if it waits for room, sees the session has ended
        self._requeue(name, [e for e in (*unconfirmed, *waiting) if not e.stored])
        self._probation.ended(box, unconfirmed, self._tell_set_aside, own=own)  # what it was handed, not its tail

    def _tell_set_aside(self, sender: str) -> None:
        peer = self._online.get(sender)
        if peer is not None:
            self._spawn(tell_set_aside(self._store, peer, sender))

    def _requeue(self, name: str, live: list[InFlight], then: Callable[[bool], None] | None = None) -> None:
        """Store messages that were forwarded live; their senders hear ``queued`` once they are."""
        if not live:
            return
        back = [QueuedMessage(name, e.sender, e.msg_id, e.server_ts, e.frame or b"", e.created, room=e.room) for e in live]
        rids = {(e.sender, e.msg_id): e.rid for e in live}
        try:
            fut = self._store.requeue(back)
        except RuntimeError:  # the store is already closed: nothing more can be kept
            log.error("store closed: %d unconfirmed messages for %s not requeued", len(back), name)
            return

        def done(f: asyncio.Future[int]) -> None:
            ok = self._requeued(f, name, back, rids)
            if then is not None:
                then(ok)

        fut.add_done_callback(done)

    def _requeued(self, fut: asyncio.Future[int], recipient: str, back: list[QueuedMessage], rids: dict[Key, str | None]) -> bool:
        if fut.cancelled() or fut.exception() is not None:
            log.error("could not requeue %d messages for %s", len(back), recipient, exc_info=fut.exception())
            return False
        # The senders learn the message is now safely queued.
        for m in back:
            sender = self._online.get(m.sender)
            if sender is not None:
                sender.write(ack_for(m.msg_id, recipient, "queued", rids.get((m.sender, m.msg_id)), m.room))
        return True

    async def online(self, names: Sequence[str]) -> Container[str]:
        return self._online

    def caught_up(self, name: str) -> bool:
        peer = self._online.get(name)
        return peer is not None and peer.mailbox is not None and not peer.mailbox.stored

    def trouble(self) -> str | None:
        return None  # SQLite is in this process: while it runs, it serves

    # --- messages ------------------------------------------------------------------------

    def send(self, peer: Peer, message: Send) -> Handled:
        server_ts = now_ms()
        body = deliverable_frame(peer, message, server_ts, self._config)
        if body is None:
            return None
        target = self._online.get(message.to)
        if target is not None:
            return self._to_session(peer, target, message, server_ts, body)
        if self._directory.knows(message.to):
            # The common case needs no lookup: store without waiting, so the next frames of
            # this connection are read meanwhile and their enqueues share one commit.
            stored = self._store_for_later(peer, message, server_ts, body)
            return Deferred(self._ack_queued(peer, stored, message))
        return self._send_offline(peer, message, server_ts, body)

    def _to_session(self, peer: Peer, target: Peer, message: Send, server_ts: int, body: bytes) -> Deferred | None:
        """To a connected recipient: at once while its window has room, else through the store."""
        entry = InFlight(message.sender, message.msg_id, server_ts, body, len(body), time.time(), False, message.rid)
        self._presence.watch(peer, message.to)
        stored = self.hand(target, entry)
        if stored is None:
            self._presence.watch(target, message.sender)
            return None
        return Deferred(self._ack_queued(peer, stored, message))

    def hand(self, target: Peer, entry: InFlight) -> asyncio.Future[bool] | None:
        box = target.mailbox
        assert box is not None
        if box.live() and self.held_bytes + entry.size <= self._config.max_unconfirmed_bytes:
            key = (entry.sender, entry.msg_id)
            if not box.tail and box.fits(entry.size):
                self.held_bytes += box.hand_out(key, entry)
                target.write(entry.frame or b"")
                return None
            if entry.room is None and box.tail_fits(entry.size):  # written as the window frees, unacked meanwhile
                self.held_bytes += box.wait(key, entry)
                if box.tail_timer is None:
                    box.tail_timer = asyncio.get_running_loop().call_later(TAIL_WAIT, self._tail_due, target, box)
                return None
        if box.live():  # the first to wait: what the session holds in memory goes to the store first (order)
            self._spill(target, box)
        return self._store_behind(target, box, entry)

    def _store_behind(self, target: Peer, box: Mailbox, entry: InFlight) -> asyncio.Future[bool]:
        """Store ``entry`` for the session, behind what waits for it there; its pump reads it back."""
        m = QueuedMessage(box.name, entry.sender, entry.msg_id, entry.server_ts, entry.frame or b"", entry.created, room=entry.room)
        stored = self._store.enqueue(m)
        if box.stored:
            box.fresh = True  # the pump reading the backlog must look again
        else:
            box.pending += 1  # what was handed out already left; this waits for the pump, in order
            stored.add_done_callback(lambda f: box.not_new(f.cancelled() or f.exception() is not None or not f.result()))
        self._start_pump(target, box)
        return stored

    def session(self, name: str) -> Peer | None:
        """The session routed to for ``name`` on this node, if any."""
        return self._online.get(name)

    def _spill(self, target: Peer, box: Mailbox) -> None:
        """Store the messages ``box`` holds in memory (unconfirmed, then its tail), so that they stay ahead of what follows."""
        live = [e for e in box.inflight.values() if not e.stored]
        for entry in live:
            entry.stored = True  # not requeued when the session ends; skipped when the pump reads it back

        def spilled(ok: bool) -> None:
            for entry in live:
                if box.inflight.get((entry.sender, entry.msg_id)) is entry:  # not confirmed, session not ended
                    if ok:
                        self.held_bytes += box.release(entry)
                    entry.stored = ok  # not stored: requeued again if the session ends

        self._requeue(box.name, live, spilled)
        waiting, change = box.take_waiting()
        self.held_bytes += change
        for entry in waiting:  # never acked: stored like a new send, and its sender hears the outcome
            self._store_behind(target, box, entry).add_done_callback(functools.partial(self._ack_waited, box.name, entry))

    def _ack_waited(self, recipient: str, entry: InFlight, fut: asyncio.Future[bool]) -> None:
        sender = self._online.get(entry.sender)
        if sender is None or fut.cancelled():
            return
        failure = fut.exception()
        if isinstance(failure, QueueFull):
            sender.error("queue_full", str(failure), entry.rid)
        elif failure is None:
            sender.write(ack_frame(entry.msg_id, recipient, "queued", entry.rid))
        else:
            log.error("could not store a message for %s", recipient, exc_info=failure)

    def _tail_due(self, target: Peer, box: Mailbox) -> None:
        """The tail's oldest message has waited ``TAIL_WAIT``: the tail goes to the store (its senders hear ``queued``)."""
        box.tail_timer = None
        if target.mailbox is not box or not box.tail:
            return
        left = next(iter(box.tail.values())).created + TAIL_WAIT - time.time()
        if 0 < left <= TAIL_WAIT:
            box.tail_timer = asyncio.get_running_loop().call_later(left, self._tail_due, target, box)
        elif box.live():
            self._spill(target, box)

    def _store_for_later(self, peer: Peer, message: Send, server_ts: int, body: bytes) -> asyncio.Future[bool]:
        self._presence.watch(peer, message.to)
        return self._store.enqueue(QueuedMessage(message.to, message.sender, message.msg_id, server_ts, body, time.time()))

    async def _ack_queued(self, peer: Peer, stored: asyncio.Future[bool], message: Send) -> None:
        try:
            await stored
        except QueueFull as exc:
            peer.error("queue_full", str(exc), message.rid)
            return
        peer.write(ack_frame(message.msg_id, message.to, "queued", message.rid))

    async def _send_offline(self, peer: Peer, message: Send, server_ts: int, body: bytes) -> None:
        if await self._directory.registration(message.to) is None:
            peer.error("unknown_user", f"no user named '{message.to}'", message.rid)
            return
        if peer.closing:
            return
        # The recipient may have logged in while we looked it up; its backlog fetch
        # is already under way, so storing now would strand the message until its
        # next session.
        target = self._online.get(message.to)
        if target is not None:
            routed = self._to_session(peer, target, message, server_ts, body)
            if routed is not None:
                await routed.awaitable
            return
        await self._ack_queued(peer, self._store_for_later(peer, message, server_ts, body), message)

    def received(self, peer: Peer, confirmation: Received) -> None:
        box = peer.mailbox
        assert box is not None
        sender, msg_id = confirmation.sender, confirmation.msg_id
        entry, change = box.confirm((sender, msg_id))
        self.held_bytes += change
        self._probation.confirmed(box, entry)
        if entry is None or entry.stored:
            # Confirmed from the store (or from an earlier session): batch the deletes.
            if not self._deletes:
                asyncio.get_running_loop().call_soon(self.flush_deletes)
            self._deletes.append((box.name, sender, msg_id))
        while (waiting := box.next_waiting()) is not None:  # the window has room: the tail moves on, in order
            peer.write(waiting.frame or b"")
        if entry is None:
            return
        target = self._online.get(sender)
        if target is not None:
            target.write(ack_for(msg_id, box.name, "delivered", entry.rid, entry.room))

    def flush_deletes(self) -> None:
        if not self._deletes:
            return
        keys, self._deletes = self._deletes, []
        self._store.delete(keys).add_done_callback(_deleted)

    # --- the store, read back as the window allows ---------------------------------------------

    def deliver_backlog(self, peer: Peer) -> None:
        box = peer.mailbox
        assert box is not None
        self._start_pump(peer, box)

    def _start_pump(self, peer: Peer, box: Mailbox) -> None:
        if not box.pumping:
            box.pumping = True
            self._spawn(self._pump(peer, box))

    async def _pump(self, peer: Peer, box: Mailbox) -> None:
        """Hand out what the store holds for the session, oldest first, as its window allows; then go live."""
        try:
            while not peer.closing:
                if not box.has_room():
                    box.room.clear()
                    await box.room.wait()
                    continue
                count, size = box.room_left()
                self.flush_deletes()  # what was confirmed must not come back from this fetch
                box.confirmed.clear()
                box.fresh = False
                batch = await self._store.fetch(box.name, box.after, min(count, BACKLOG_BATCH), size)
                if peer.closing:
                    return
                if not batch:
                    if box.fresh or box.pending:
                        continue  # stored after the fetch was submitted: fetch again
                    box.stored = False  # caught up: messages go straight to the session again
                    return
                if not await self._write_batch(peer, box, batch):
                    return
        except (ConnectionError, OSError):
            return
        except Exception:  # e.g. the store failed: the session cannot keep its order
            log.exception("backlog delivery to %s failed", box.name)
            peer.end("backlog delivery failed", abort=True)
        finally:
            box.pumping = False

    async def _write_batch(self, peer: Peer, box: Mailbox, batch: list[QueuedMessage]) -> bool:
        """Hand out one batch, waiting for the reader instead of tripping the outgoing bound; False once gone."""
        for m in batch:
            key = (m.sender, m.msg_id)
            held = box.inflight.get(key)
            if held is not None or key in box.confirmed:
                resent = held is not None and not held.stored  # forwarded live, then its resend was stored
                if held is not None and resent:
                    held.stored = True
                    self.held_bytes += box.release(held)
                box.after = m.seq
                box.not_new(resent and not box.stored)  # a spilled message was never counted as waiting
                continue  # handed out already (spilled, or a resend), or confirmed while this batch was read
            if not box.fits(m.size):  # read again once confirmations make room for it
                box.next_size = m.size
                break
            box.after, box.next_size = m.seq, 0
            box.not_new(not box.stored)
            entry = InFlight(m.sender, m.msg_id, m.server_ts, None, m.size, m.enqueued_at, True, room=m.room)
            self.held_bytes += box.hand_out(key, entry)
            self._presence.watch(peer, m.sender)
            if not await make_room(peer, m.size):
                return False
            peer.write(m.frame)
            if peer.closing:
                return False
        await end_batch(peer)
        return True


def _deleted(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("could not delete confirmed messages", exc_info=fut.exception())
